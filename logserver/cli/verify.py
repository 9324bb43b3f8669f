"""Verify a receipt for an envelope, offline or against the log; verify a fleet's head
(--head FLEET: the fleet-head proof of docs/fleet-heads.md); or re-check split-view evidence.

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

from ..bundle import is_fleet_id
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
    VerifiedFleetAbsence,
    VerifiedFleetHead,
    VerifiedReceipt,
    open_fleet_head,
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

HELP = ("verify a receipt (offline, or online with --log / --tiles), a fleet's head (--head), "
        "or re-check split-view evidence")
EXAMPLES = """\
  logserver verify --receipt receipt.json --envelope bundle.json --policy trust.toml
  logserver verify --receipt receipt.json --envelope bundle.json --policy trust.toml \
                   --state client-state --log http://127.0.0.1:8080
  logserver verify --receipt receipt.json --envelope bundle.json --policy trust.toml \
                   --log http://127.0.0.1:8080 --tiles http://127.0.0.1:9000/bucket/log
  logserver verify --receipt receipt.json --envelope bundle.json --policy trust.toml \
                   --tiles http://127.0.0.1:9000/bucket/log --wait 60
  logserver verify --evidence client-state/split-view-20260101T000000Z.json --policy trust.toml --json
  logserver verify --head demo-fleet --policy trust.toml --log http://127.0.0.1:8080 --state client-state
  logserver verify --head demo-fleet --policy trust.toml --tiles http://127.0.0.1:8081 --max-age 600
  logserver verify --head demo-fleet --policy trust.toml --head-proof head.json
"""

# verify --head exit statuses besides 0 (the fleet's current, active head verified) and 1
# (a check failed): the proof verified and shows the fleet retired, or never logged.
EXIT_RETIRED = 7
EXIT_ABSENT = 8


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
    p.add_argument("--head", metavar="FLEET",
                   help="verify the fleet's head instead: its fleet-head proof, from --tiles (the static "
                        "fleet-head/FLEET object) or --log (GET /v1/fleets/FLEET/head), or --head-proof FILE; "
                        f"exit 0 for its current bundle, {EXIT_RETIRED} if it is retired, {EXIT_ABSENT} if the "
                        "log has none")
    p.add_argument("--head-proof", type=Path, metavar="FILE", help="with --head: verify this saved proof, offline")
    p.add_argument("--max-age", type=seconds, metavar="S",
                   help="with --head, or a receipt carrying a fleet-head proof (submit --with-head): the proof's "
                        "checkpoint must be cosigned within S seconds of now (default: the policy's max_age_s)")


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
    if args.head is not None:
        return _run_head(args)
    if args.head_proof is not None:
        raise UsageError("--head-proof goes with --head FLEET")
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
    max_age = None if args.max_age is None else max(1, int(args.max_age))
    try:
        if args.log or args.tiles:
            result = asyncio.run(_online(args, envelope, receipt, policy, now, state, checks, max_age))
        else:
            result = verify_receipt(envelope, receipt, policy, now=now, state=state, checks=checks, max_age=max_age)
    except VerificationFailure as exc:
        failure = exc
    except ValueError as exc:  # a receipt with a fleet-head proof, and no freshness bound given
        if "max_age" not in str(exc):
            raise
        raise UsageError("the receipt carries a fleet-head proof: give --max-age S, or max_age_s in the trust "
                         "policy") from None
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
                  state: ClientState | None, checks: CheckLog, max_age: int | None) -> VerifiedReceipt:
    wait = DEFAULT_WAIT_S if args.wait is None else args.wait
    async with LogClient(args.log, tiles_url=args.tiles) as client:
        return await verify_receipt_online(client, envelope, receipt, policy, now=now, state=state, checks=checks,
                                           check_fleet=bool(args.log), wait_s=wait, max_age=max_age)


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
        head = result.fleet_head
        if head is not None:
            lines.append(f"CURRENT: the receipt's fleet-head proof shows it is the fleet's newest bundle at tree size "
                         f"{head.checkpoint.size}, fresh within {head.freshness.max_age_s} s")
            if head.freshness.rests_on_log_alone:
                lines.append("  (no witness quorum in the trust policy: freshness rests on the log's own clock alone)")
    else:
        assert failure is not None
        lines.append(f"FAILED: {type(failure).__name__} in check {failure.check!r}: {failure}")
        if isinstance(failure, SplitViewError):
            lines.append("")
            lines.append(failure.evidence.report().rstrip("\n"))
            if evidence_path is not None:
                lines.append(f"evidence saved to {evidence_path}")
    return "\n".join(lines)


# --- a fleet's head --------------------------------------------------------------------


def _run_head(args: argparse.Namespace) -> int:
    extra = [flag for flag, value in (("--receipt", args.receipt), ("--envelope", args.envelope),
                                      ("--evidence", args.evidence), ("--wait", args.wait)) if value is not None]
    if extra:
        raise UsageError(f"--head verifies a fleet-head proof alone: drop {', '.join(extra)}")
    if args.policy is None:
        raise UsageError("--head needs --policy (the trust policy the proof is verified under)")
    if args.head_proof is None and not (args.log or args.tiles):
        raise UsageError("--head needs where the proof comes from: --log URL, --tiles URL or --head-proof FILE")
    if args.head_proof is not None and (args.log or args.tiles):
        raise UsageError("--head-proof verifies a saved proof offline: drop --log and --tiles")
    if not is_fleet_id(args.head):
        raise UsageError(f"--head: got {args.head[:140]!r}, want a fleet id (1-128 of [A-Za-z0-9._:-], "
                         "not '.' or '..')")
    policy = _policy(args.policy)
    assert policy is not None
    max_age = None if args.max_age is None else max(1, int(args.max_age))
    if max_age is None and policy.max_age_s is None:
        raise UsageError("--head needs a freshness bound: --max-age S, or max_age_s in the trust policy")
    if args.head_proof is not None:
        data, source = _read(args.head_proof, "fleet-head proof"), str(args.head_proof)
    else:
        data, source = asyncio.run(_fetch_head(args))
    now = _now(args.now)
    if args.state is None:
        return _verify_head(args, data, source, policy, now, max_age, None)
    try:
        with open_state(args.state) as state:
            return _verify_head(args, data, source, policy, now, max_age, state)
    except StateError as exc:
        raise CliError(f"state {args.state}: {exc}") from None


async def _fetch_head(args: argparse.Namespace) -> tuple[bytes, str]:
    fleet = args.head
    try:
        async with LogClient(args.log, tiles_url=args.tiles) as client:
            if args.tiles:
                data = await client.fleet_head(fleet, static=True)
                if data is not None:
                    return data, client.tiles_url_of(f"fleet-head/{fleet}")
                if not args.log:
                    raise CliError(f"tiles {args.tiles}: no fleet-head/{fleet} object: the static tree holds the "
                                   "proofs of logged fleets only; give --log URL for an absence proof")
            data = await client.fleet_head(fleet, static=False)
            assert data is not None
            return data, client.api_url_of(f"v1/fleets/{fleet}/head")
    except LogClientError as exc:
        raise CliError(f"{_where(args)}: {exc}") from None


def _verify_head(args: argparse.Namespace, data: bytes, source: str, policy: TrustPolicy, now: datetime,
                 max_age: int | None, state: ClientState | None) -> int:
    checks = CheckLog()
    outcome: VerifiedFleetHead | VerifiedFleetAbsence | None = None
    failure: VerificationFailure | None = None
    try:
        outcome = open_fleet_head(data, policy, now, fleet_id=args.head, max_age=max_age, state=state, checks=checks)
    except VerificationFailure as exc:
        failure = exc
    if failure is None and state is not None:
        state.save()
    if failure is not None:
        status = 1
    elif isinstance(outcome, VerifiedFleetAbsence):
        status = EXIT_ABSENT
    else:
        status = EXIT_RETIRED if outcome is not None and outcome.retired else 0
    if args.json:
        account: dict[str, Any] = {
            "ok": status == 0, "source": source, "checks": [c.to_dict() for c in checks.results],
            "head": None if outcome is None else outcome.to_dict(), "error": None,
        }
        if failure is not None:
            account["error"] = {"type": type(failure).__name__, "check": failure.check, "message": str(failure)}
        print(json.dumps(account, indent=2))
        return status
    lines = [f"Verifying the head of fleet {args.head!r} from {source}:"]
    width = max((len(c.name) for c in checks.results), default=0)
    for c in checks.results:
        lines.append(f"  [{'ok' if c.ok else 'FAIL':>4}] {c.name:<{width}}  {c.detail}")
    if outcome is not None:
        # A line per kind of the log's own signature on the proof's checkpoint (docs/client.md).
        lines.extend(f"  {line}" for line in log_signature_lines(outcome.checkpoint, policy))
    if state is None:
        lines.append("  (no --state: the rollback check needs the heads seen by earlier runs)")
    if failure is not None:
        lines.append(f"FAILED: {type(failure).__name__} in check {failure.check!r}: {failure}")
    elif isinstance(outcome, VerifiedFleetAbsence):
        cp = outcome.checkpoint
        # The one covering row's chain link is the proof (docs/fleet-heads.md, "Absence").
        how = ("the table is empty" if outcome.covering is None else
               f"row {outcome.position}'s link {outcome.covering.fleet_id!r} -> {outcome.next_fleet_id!r} passes "
               "over it")
        lines.append(f"ABSENT: fleet {outcome.fleet_id!r} has no bundle in log {cp.origin!r} at tree size {cp.size} "
                     f"(verified absent from the heads table of {outcome.heads.count} rows: {how})")
    elif outcome is not None:
        cp = outcome.checkpoint
        what = (f"fleet {outcome.fleet_id!r}: sequence {outcome.sequence}, entry {outcome.leaf_index} of log "
                f"{cp.origin!r}, the newest at tree size {cp.size}")
        if outcome.retired:
            lines.append(f"RETIRED: {what} retired the fleet; refuse every bundle of it")
        else:
            keys = ", ".join(f"{k.key_id} ({k.algorithm})" for k in outcome.keys)
            lines.append(f"CURRENT: {what}; keys {keys}")
        if outcome.freshness.rests_on_log_alone:
            lines.append("  (no witness quorum in the trust policy: freshness rests on the log's own clock alone)")
    print("\n".join(lines))
    return status


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
