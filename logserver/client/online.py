"""Online receipt verification: the offline checks plus what only the log can answer.

`verify_receipt_online` adds (docs/client.md, "Online checks"):

* `latest_checkpoint`: the log's current checkpoint verifies under the policy;
* `consistency_with_latest`: the receipt's checkpoint is a prefix of the latest (and,
  with a state, the stored checkpoint is proved consistent with both; the proofs are
  fetched from the log);
* `fleet_latest`: `/v1/fleets/<id>` names this bundle as the fleet's latest. A newer,
  already valid bundle means this one was superseded: `FleetRollbackError`. The newer bundle
  the log shows is itself verified (signatures and inclusion) before it counts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn

from ..bundle import format_timestamp
from ..formats import parse_checkpoint, parse_note
from ..merkle import MerkleError, verify_consistency
from .checkpoints import VerifiedCheckpoint, verify_checkpoint
from .consistency import ConsistencyProof, check_consistent
from .errors import FleetRollbackError, LogMisbehaviourError, MalformedError, VerificationFailure
from .log_client import LogClient, LogClientError
from .policy import TrustPolicy
from .state import ClientState
from .verify import CheckLog, VerifiedReceipt, _verify, load_envelope, load_receipt


async def fetch_consistency_proof(
    client: LogClient, first: VerifiedCheckpoint, second: VerifiedCheckpoint
) -> ConsistencyProof:
    """A consistency proof between two checkpoints (smaller size first), from the JSON
    API; if that one does not verify, the tile-computed one is tried too, so a garbled
    JSON answer alone is not mistaken for a split view. The returned proof is the one
    that verifies, or else the JSON API's (which then serves as evidence)."""
    a, b = (first, second) if first.size <= second.size else (second, first)
    url = f"{client.base_url}/v1/proof/consistency?first={a.size}&second={b.size}"
    served = ConsistencyProof(a.size, b.size, tuple(await client.consistency_proof(a.size, b.size)), f"GET {url}")
    if a.size == b.size or _verifies(a, b, served):
        return served
    try:
        computed = await client.tile_consistency_proof(a.size, b.size)
    except LogClientError:
        return served
    from_tiles = ConsistencyProof(a.size, b.size, tuple(computed), f"tiles of {client.base_url} at size {b.size}")
    return from_tiles if _verifies(a, b, from_tiles) else served


def _verifies(a: VerifiedCheckpoint, b: VerifiedCheckpoint, proof: ConsistencyProof) -> bool:
    try:
        verify_consistency(a.size, b.size, a.root, b.root, list(proof.hashes))
    except MerkleError:
        return False
    return True


async def verify_receipt_online(
    client: LogClient,
    envelope: Any,
    receipt: Mapping[str, Any] | bytes | str,
    policy: TrustPolicy,
    *,
    now: datetime | None = None,
    state: ClientState | None = None,
    checks: CheckLog | None = None,
) -> VerifiedReceipt:
    """`verify_receipt` plus the online checks against the log behind `client`.
    Raises a `VerificationFailure` subclass, or `LogClientError` when the log cannot
    be reached or answers garbage."""
    log = checks if checks is not None else CheckLog()
    now = now or datetime.now(UTC)
    # Learn the sizes first: the proofs between the stored, receipt and latest
    # checkpoints are fetched before the offline checks run.
    try:
        parsed = load_receipt(receipt)
    except VerificationFailure as exc:
        log.add("receipt_format", False, str(exc))
        exc.check = "receipt_format"
        raise
    latest_note = await client.checkpoint()
    latest = log.run("latest_checkpoint", lambda: (
        verify_checkpoint(latest_note, policy), f"the log at {client.base_url} serves a valid checkpoint"))
    proofs: dict[tuple[int, int], ConsistencyProof] = {}

    async def prove(x: VerifiedCheckpoint, y: VerifiedCheckpoint) -> None:
        key = (min(x.size, y.size), max(x.size, y.size))
        if key[0] != key[1] and key not in proofs:
            proofs[key] = await fetch_consistency_proof(client, x, y)

    receipt_cp = _unverified(parsed)
    if latest.origin == receipt_cp.origin:
        await prove(receipt_cp, latest)
    stored_note = state.checkpoint_note(latest.origin) if state is not None else None
    if stored_note is not None:
        stored = _unverified_note(stored_note)
        await prove(stored, receipt_cp)
        await prove(stored, latest)

    result = _verify(envelope, receipt, policy, now=now, state=state, proofs=proofs.values(), checks=log)

    if latest.origin != result.checkpoint.origin:
        err = LogMisbehaviourError(
            f"the log at {client.base_url} serves checkpoints of {latest.origin!r}, "
            f"the receipt is from {result.checkpoint.origin!r}")
        log.add("consistency_with_latest", False, str(err))
        raise err
    pair = (min(result.checkpoint.size, latest.size), max(result.checkpoint.size, latest.size))
    log.run("consistency_with_latest", lambda: (
        None, check_consistent(policy, result.checkpoint, latest, proofs.get(pair))))
    if state is not None:
        log.run("latest_vs_stored", lambda: (None, state.advance(latest, policy, proofs)))

    entry = await client.fleet(result.fleet_id)
    await _check_fleet_latest(client, entry, result, policy, now, log)
    return result


def _unverified(parsed: Any) -> VerifiedCheckpoint:
    """The receipt's checkpoint as a comparable value (it is verified by the offline
    checks before any conclusion is drawn from it)."""
    return VerifiedCheckpoint(parsed.checkpoint, parsed.checkpoint_note, frozenset(), None)


def _unverified_note(note: str) -> VerifiedCheckpoint:
    return VerifiedCheckpoint(parse_checkpoint(parse_note(note).text), note, frozenset(), None)


async def _check_fleet_latest(
    client: LogClient, entry: dict[str, Any] | None, ours: VerifiedReceipt, policy: TrustPolicy,
    now: datetime, log: CheckLog,
) -> None:
    name = "fleet_latest"
    fleet = ours.fleet_id

    def fail(exc: VerificationFailure) -> NoReturn:
        log.add(name, False, str(exc))
        exc.check = name
        raise exc

    if entry is None:
        fail(LogMisbehaviourError(
            f"the log says fleet {fleet!r} has no bundle, "
            f"but the receipt proves sequence {ours.sequence} at index {ours.index}"))
    if entry.get("leaf_hash") == ours.leaf_hash.hex():
        log.add(name, True, f"the log names this bundle (index {ours.index}) as the latest of fleet {fleet!r}")
        return
    # Any JSON value, or None when absent: load_receipt refuses whatever is not a receipt.
    receipt: Any = entry.get("receipt")
    try:
        theirs = _verify(
            load_envelope(_envelope_bytes(entry.get("envelope"))), receipt, policy,
            now=now, state=None, proofs=(), checks=None, check_window=False,
        )
    except VerificationFailure as exc:
        fail(LogMisbehaviourError(f"the log's latest bundle for fleet {fleet!r} does not verify: {exc}"))
    if theirs.fleet_id != fleet:
        fail(LogMisbehaviourError(f"asked for fleet {fleet!r}, the log answered with fleet {theirs.fleet_id!r}"))
    if theirs.payload_digest == ours.payload_digest:
        log.add(name, True,
                f"the log's latest bundle of fleet {fleet!r} is this payload (logged at index {theirs.index})")
        return
    if theirs.sequence <= ours.sequence:
        fail(LogMisbehaviourError(
            f"the log names sequence {theirs.sequence} (index {theirs.index}) as the latest of fleet {fleet!r}, "
            f"but has logged sequence {ours.sequence} at index {ours.index}"))
    if now < theirs.bundle.not_before:
        log.add(name, True, (
            f"a newer bundle of fleet {fleet!r} (sequence {theirs.sequence}, index {theirs.index}) is logged but "
            f"only valid from {format_timestamp(theirs.bundle.not_before)}: this one is still current"))
        return
    fail(FleetRollbackError(
        f"fleet {fleet!r}: this bundle (sequence {ours.sequence}) is superseded by sequence {theirs.sequence} "
        f"logged at index {theirs.index}, valid since {format_timestamp(theirs.bundle.not_before)}"))


def _envelope_bytes(obj: Any) -> bytes:
    """The envelope the log answered, as JSON again for `load_envelope` (which refuses
    b"" and anything else that is not an envelope)."""
    if obj is None:
        return b""
    try:
        return json.dumps(obj).encode()
    except TypeError:  # a number with a fraction (formats.strict.NonInteger): no envelope field is one
        raise MalformedError("envelope: got a non-integer number, want a DSSE envelope object") from None
