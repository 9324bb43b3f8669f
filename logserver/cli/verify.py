"""Verify a receipt for an envelope, offline or against the log; or re-check split-view evidence.

Exit status 0 only when every check holds. Each check is explained (docs/client.md);
with --state, the latest checkpoint and fleet sequences are remembered across runs,
and a split view leaves its evidence in DIR. Online, --log is the log's API and
--tiles its tlog-tiles tree (default: --log; or a static copy: nginx, an S3 bucket).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..client import (
    CheckLog,
    ClientState,
    EvidenceError,
    LogClient,
    LogClientError,
    SplitViewError,
    SplitViewEvidence,
    StateError,
    TrustPolicy,
    TrustPolicyError,
    VerificationFailure,
    VerifiedReceipt,
    open_state,
    verify_evidence,
    verify_receipt,
    verify_receipt_online,
)
from ..client.files import atomic_write
from ..client.online import DEFAULT_WAIT_S
from ..client.verify import log_signature_lines
from ..formats import FormatError, parse_checkpoint, parse_note
from ._args import log_url, seconds, timestamp
from .errors import CliError, UsageError

HELP = "verify a receipt (offline, or online with --log / --tiles) or re-check split-view evidence"
EXAMPLES = """\
  logserver verify --receipt receipt.json --envelope bundle.json --policy trust.toml
  logserver verify --receipt receipt.json --envelope bundle.json --policy trust.toml \
                   --state client-state --log http://127.0.0.1:8080
  logserver verify --receipt receipt.json --envelope bundle.json --policy trust.toml \
                   --log http://127.0.0.1:8080 --tiles http://127.0.0.1:9000/bucket/log
  logserver verify --receipt receipt.json --envelope bundle.json --policy trust.toml \
                   --tiles http://127.0.0.1:9000/bucket/log --wait 60
  logserver verify --evidence client-state/split-view-20260101T000000Z.json --policy trust.toml --json
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--receipt", type=Path, help="receipt JSON from the log (logserver submit --receipt)")
    p.add_argument("--envelope", type=Path, help="the signed envelope JSON the receipt is for")
    p.add_argument("--policy", type=Path, help="trust policy TOML: [[authorities]] and tlog_policy (docs/client.md)")
    p.add_argument("--state", type=Path, metavar="DIR",
                   help="client state directory (rollback and split-view detection)")
    p.add_argument("--log", type=log_url, metavar="URL",
                   help="also check online against the log at URL (its JSON API; its tiles too, unless --tiles)")
    p.add_argument("--tiles", type=log_url, metavar="URL",
                   help="read the checkpoint and tiles from URL: the log's tlog-tiles tree or a static copy of it "
                        "(nginx, an S3 bucket's public URL with its prefix); default --log. Without --log, "
                        "checks what the tiles prove (not the fleet's latest bundle)")
    p.add_argument("--wait", type=seconds, metavar="S",
                   help="when the tiles serve a checkpoint older than the receipt's and the log's API cannot give "
                        f"a newer one, wait up to S seconds for the tiles to catch up (default {DEFAULT_WAIT_S:g})")
    p.add_argument("--json", action="store_true", help="print a JSON account instead of text")
    p.add_argument("--now", type=timestamp, metavar="TIME",
                   help="verification time, RFC 3339 UTC, e.g. 2026-01-01T00:00:00Z (default: the current time)")
    p.add_argument("--evidence", type=Path, metavar="FILE", help="re-check a split-view evidence file instead")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CliError(f"{what} {path}: {exc.strerror or exc}") from None


def _now(value: datetime | None) -> datetime:
    return datetime.now(UTC) if value is None else value


def _policy(path: Path | None) -> TrustPolicy | None:
    if path is None:
        return None
    try:
        return TrustPolicy.load(path)
    except TrustPolicyError as exc:
        raise CliError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    if args.wait is not None and not (args.log or args.tiles):
        raise UsageError("--wait is how long to wait for the tiles: give --log URL or --tiles URL too")
    if args.evidence is not None:
        if args.receipt or args.envelope or args.state or args.wait is not None:
            raise UsageError("--evidence re-checks evidence alone: drop --receipt, --envelope, --state and --wait")
        return _run_evidence(args)
    missing = [flag for flag, value in (("--receipt", args.receipt), ("--envelope", args.envelope),
                                        ("--policy", args.policy)) if value is None]
    if missing:
        raise UsageError(f"missing {', '.join(missing)} (or give --evidence FILE)")
    receipt = _read(args.receipt, "receipt")
    envelope = _read(args.envelope, "envelope")
    policy = _policy(args.policy)
    assert policy is not None
    now = _now(args.now)
    if args.state is None:
        return _verify_and_print(args, envelope, receipt, policy, now, None)
    try:
        with open_state(args.state) as state:
            return _verify_and_print(args, envelope, receipt, policy, now, state)
    except StateError as exc:
        raise CliError(f"state {args.state}: {exc}") from None


def _verify_and_print(args: argparse.Namespace, envelope: bytes, receipt: bytes, policy: TrustPolicy,
                      now: datetime, state: ClientState | None) -> int:
    checks = CheckLog()
    result: VerifiedReceipt | None = None
    failure: VerificationFailure | None = None
    evidence_path: Path | None = None
    try:
        if args.log or args.tiles:
            result = asyncio.run(_online(args, envelope, receipt, policy, now, state, checks))
        else:
            result = verify_receipt(envelope, receipt, policy, now=now, state=state, checks=checks)
    except VerificationFailure as exc:
        failure = exc
    except LogClientError as exc:
        raise CliError(f"{_where(args)}: {exc}") from None
    if isinstance(failure, SplitViewError) and args.state is not None:
        evidence_path = _save_evidence(args.state, failure.evidence)
    if failure is None and state is not None:
        state.save()
    if args.json:
        print(json.dumps(_json_account(checks, result, failure, evidence_path), indent=2))
    else:
        print(_text_account(args, checks, result, failure, evidence_path, state is not None, policy))
    return 0 if failure is None else 1


def _where(args: argparse.Namespace) -> str:
    if args.tiles and args.log and args.tiles != args.log:
        return f"log {args.log} (tiles {args.tiles})"
    return f"log {args.log}" if args.log else f"tiles {args.tiles}"


async def _online(args: argparse.Namespace, envelope: bytes, receipt: bytes, policy: TrustPolicy, now: datetime,
                  state: ClientState | None, checks: CheckLog) -> VerifiedReceipt:
    wait = DEFAULT_WAIT_S if args.wait is None else args.wait
    async with LogClient(args.log, tiles_url=args.tiles) as client:
        return await verify_receipt_online(client, envelope, receipt, policy, now=now, state=state, checks=checks,
                                           check_fleet=bool(args.log), wait_s=wait)


def _save_evidence(directory: Path, evidence: SplitViewEvidence) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"split-view-{stamp}.json"
    atomic_write(path, evidence.to_json().encode())
    return path


def _json_account(checks: CheckLog, result: VerifiedReceipt | None, failure: VerificationFailure | None,
                  evidence_path: Path | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ok": failure is None,
        "checks": [c.to_dict() for c in checks.results],
        "bundle": None if result is None else result.to_dict(),
        "error": None,
    }
    if failure is not None:
        out["error"] = {"type": type(failure).__name__, "check": failure.check, "message": str(failure)}
    if isinstance(failure, SplitViewError):
        out["evidence"] = failure.evidence.to_dict()
        out["evidence_file"] = None if evidence_path is None else str(evidence_path)
    return out


def _text_account(args: argparse.Namespace, checks: CheckLog, result: VerifiedReceipt | None,
                  failure: VerificationFailure | None, evidence_path: Path | None, with_state: bool,
                  policy: TrustPolicy) -> str:
    mode = f"online against {_where(args)}" if args.log or args.tiles else "offline"
    lines = [f"Verifying receipt {args.receipt} for envelope {args.envelope} ({mode}):"]
    width = max((len(c.name) for c in checks.results), default=0)
    for c in checks.results:
        lines.append(f"  [{'ok' if c.ok else 'FAIL':>4}] {c.name:<{width}}  {c.detail}")
    if result is not None:
        # A line per kind of the log's own signature: which verified (docs/client.md).
        lines.extend(f"  {line}" for line in log_signature_lines(result.checkpoint, policy))
    if not with_state:
        lines.append("  (no --state: rollback and split-view checks need the state of earlier runs)")
    if not args.log and args.tiles:
        lines.append("  (tiles only: add --log URL to check that the bundle is its fleet's latest)")
    elif not args.log:
        lines.append(
            "  (offline: add --log URL to check against the log's latest checkpoint and the fleet's latest bundle)"
        )
    if failure is None and result is not None:
        keys = ", ".join(f"{k.key_id} ({k.algorithm})" for k in result.keys)
        lines.append(
            f"VERIFIED: fleet {result.fleet_id!r} sequence {result.sequence}, keys {keys}; entry {result.index} "
            f"of log {result.checkpoint.origin!r} (tree size {result.checkpoint.size})"
        )
    else:
        assert failure is not None
        lines.append(f"FAILED: {type(failure).__name__} in check {failure.check!r}: {failure}")
        if isinstance(failure, SplitViewError):
            lines.append("")
            lines.append(failure.evidence.report().rstrip("\n"))
            if evidence_path is not None:
                lines.append(f"evidence saved to {evidence_path}")
    return "\n".join(lines)


# --- evidence mode ---------------------------------------------------------------------


def _run_evidence(args: argparse.Namespace) -> int:
    policy = _policy(args.policy)
    try:
        evidence = SplitViewEvidence.from_json(_read(args.evidence, "evidence"))
    except EvidenceError as exc:
        raise CliError(str(exc)) from None
    fresh: list[tuple[str, list[bytes]]] = []
    if args.log or args.tiles:
        fresh = asyncio.run(_fresh_proofs(args.log, args.tiles, evidence))
    try:
        verdict = verify_evidence(evidence, policy)
        for source, proof in fresh:
            try:
                verify_evidence(evidence, policy, fresh_proof=proof)
            except EvidenceError as exc:
                raise EvidenceError(f"{exc} (fresh proof from {source})") from None
    except EvidenceError as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc)}, indent=2))
        else:
            print(f"evidence {args.evidence} does NOT show a split view: {exc}")
        return 1
    if args.json:
        print(json.dumps({"ok": True, "conclusive": verdict.conclusive, "finding": verdict.finding,
                          "fresh_proofs_checked": [s for s, _ in fresh]}, indent=2))
    else:
        print(evidence.report().rstrip("\n"))
        for source, _ in fresh:
            print(f"fresh proof from {source}: does not verify either")
        holds = "conclusive" if verdict.conclusive else "stands unless refuted by a valid proof"
        print(f"\nRESULT: the evidence holds ({holds})")
    return 0


async def _fresh_proofs(
    url: str | None, tiles: str | None, evidence: SplitViewEvidence
) -> list[tuple[str, list[bytes]]]:
    try:
        verdict = verify_evidence(evidence)
    except EvidenceError:
        return []  # reported by the caller's own check
    a, b = verdict.checkpoints
    if a.size == b.size:
        return []
    out = []
    async with LogClient(url, tiles_url=tiles) as client:
        if client.has_api:
            try:
                out.append((f"the JSON API of {client.api_url}", await client.consistency_proof(a.size, b.size)))
            except LogClientError as exc:
                print(f"note: no fresh proof from the JSON API of {client.api_url}: {exc}", file=sys.stderr)
        # The proof is checked against the evidence's two signed roots, so the tiles are
        # not trusted: those of the tiles' own checkpoint are read when it is larger (a
        # static copy holds the partial tiles of the sizes it published only).
        try:
            served = parse_checkpoint(parse_note(await client.checkpoint()).text).size
            at = max(b.size, served)
            out.append((f"the tiles of {client.tiles_url} at size {at}",
                        await client.tile_consistency_proof(a.size, b.size, tree_size=at)))
        except (LogClientError, FormatError) as exc:
            print(f"note: no fresh proof from the tiles of {client.tiles_url}: {exc}", file=sys.stderr)
    return out
