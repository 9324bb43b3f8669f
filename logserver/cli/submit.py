"""Submit an envelope to a log and save the receipt.

Retries on 503 (honouring Retry-After) up to --retries times; submissions are
idempotent, so a retry after a lost answer is safe. One 503 is not retried:
`witness_quorum_unavailable`. The log has then stored the bundle and waited
`witnessing.max_wait_s` for its witnesses; another attempt now would wait again for
the same outcome. The error says so; submitting again later gets the receipt (a
duplicate).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import aiohttp

from ..bundle import BundleError, parse_envelope, parse_payload
from ..client import LogClient, LogClientError
from ._args import int_range, log_url
from .errors import CliError

HELP = "POST an envelope to a log and save the receipt"
EXAMPLES = """\
  logserver submit --log http://127.0.0.1:8080 --envelope bundle.json --receipt receipt.json
  logserver submit --log https://log.example --envelope bundle.json > receipt.json
  logserver submit --log http://127.0.0.1:8080 --envelope bundle.json --receipt receipt.json --with-head
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log", required=True, type=log_url, metavar="URL", help="log base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--envelope", required=True, type=Path, help="signed envelope JSON")
    p.add_argument("--receipt", type=Path, help="where to save the receipt (default: print it)")
    p.add_argument("--retries", type=int_range(0, 100), default=5, help="retries on 503 (default 5)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per attempt (default 60)")
    p.add_argument("--with-head", action="store_true",
                   help="also fetch the fleet's fleet-head proof after the submission and store it in the receipt "
                        "(field fleet_head): `verify` then checks offline that the bundle is its fleet's current, "
                        "fresh and witnessed head (docs/fleet-heads.md)")


async def submit(log_url: str, body: bytes, retries: int, timeout: float) -> tuple[int, dict]:
    url = log_url.rstrip("/") + "/v1/bundles"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        for attempt in range(retries + 1):
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                try:
                    payload = await resp.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    payload = {"error": {"code": "bad_response", "message": (await resp.text())[:200]}}
                code = payload.get("error", {}).get("code") if isinstance(payload, dict) else None
                if resp.status != 503 or attempt == retries or code == "witness_quorum_unavailable":
                    return resp.status, payload
                wait = float(resp.headers.get("Retry-After", "1"))
                print(f"log unavailable (503 {code}), retrying in {wait:g}s ({attempt + 1}/{retries})",
                      file=sys.stderr)
                await asyncio.sleep(min(wait, 30))
    raise AssertionError("unreachable")


async def _fleet_head(args: argparse.Namespace, body: bytes, receipt: dict) -> dict:
    """The fleet's head proof at the log's published checkpoint (not verified here:
    `verify` does that), as a JSON object for the receipt's `fleet_head` field."""
    try:
        fleet_id = parse_payload(parse_envelope(body).payload).fleet_id
    except BundleError as e:  # the log accepted it, so this does not happen
        raise CliError(f"the envelope's payload: {e}") from None
    try:
        async with LogClient(args.log) as client:
            data = await client.fleet_head(fleet_id)
    except LogClientError as e:
        raise CliError(f"the bundle was logged, but its fleet-head proof could not be fetched: {e}; no receipt was "
                       "saved: submit again (answered as a duplicate, with its receipt)") from None
    assert data is not None
    proof = json.loads(data)
    row = proof.get("row") or {}
    if row.get("leaf_index") != receipt.get("index"):
        print(f"warning: the fleet's head is entry {row.get('leaf_index')}, not this bundle's {receipt.get('index')}: "
              "a newer bundle of the fleet was logged (`verify` will refuse this receipt as not current)",
              file=sys.stderr)
    size = proof["heads_leaf"]["index"] + 1
    print(f"with the fleet-head proof of fleet {fleet_id!r} at tree size {size}", file=sys.stderr)
    return proof


def run(args: argparse.Namespace) -> int:
    try:
        body = args.envelope.read_bytes()
    except OSError as e:
        raise CliError(str(e)) from None
    try:
        status, payload = asyncio.run(submit(args.log, body, args.retries, args.timeout))
    except aiohttp.ClientError as e:
        raise CliError(f"cannot reach the log at {args.log}: {e}") from None
    if status not in (200, 201):
        err = payload.get("error", {})
        if err.get("code") == "witness_quorum_unavailable":
            raise CliError(
                "witness_quorum_unavailable: the log stored the bundle, but its witnesses have not cosigned a "
                f"checkpoint that covers it ({err.get('message')}); submit again later to get the receipt "
                "(it is answered as a duplicate)")
        raise CliError(f"the log refused the bundle: HTTP {status} {err.get('code')}: {err.get('message')}")
    if args.with_head:
        payload["fleet_head"] = asyncio.run(_fleet_head(args, body, payload))
    text = json.dumps(payload, indent=2) + "\n"
    kind = "already logged (duplicate)" if payload.get("duplicate") else "logged"
    print(f"{kind} at index {payload['index']}, tree size {payload['tree_size']}", file=sys.stderr)
    if args.receipt:
        args.receipt.write_text(text)
        print(f"wrote receipt to {args.receipt}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
