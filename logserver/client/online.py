"""Online receipt verification: the offline checks plus what only the log can answer.

`verify_receipt_online` adds (docs/client.md, "Online checks"):

* `latest_checkpoint`: the checkpoint the tiles URL serves (the server's own, or a
  static copy's) verifies under the policy;
* `newer_checkpoint`: only when that checkpoint is older than the receipt's (or the
  stored one): a cache or copy behind the log. The log's API is asked for its
  checkpoint when it answers; otherwise the tiles URL is polled until it serves one
  that covers the receipt, for at most `wait_s` (then `TilesBehindError`, which is not
  a verification failure). The older checkpoint is still checked against the receipt's
  (`tiles_checkpoint_consistency`);
* `consistency_with_latest`: the receipt's checkpoint is a prefix of the latest (and,
  with a state, the stored checkpoint is proved consistent with both). Proofs come from
  the JSON API, or are computed from the tiles of the latest checkpoint, every tile
  checked against its signed root first (`tile_proofs`);
* `fleet_latest` (needs the JSON API): `/v1/fleets/<id>` names this bundle as the
  fleet's latest. A newer, already valid bundle means this one was superseded:
  `FleetRollbackError`. The newer bundle the log shows is itself verified (signatures
  and inclusion) before it counts.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from ..bundle import format_timestamp
from ..formats import parse_checkpoint, parse_note
from ..merkle import MerkleError, verify_consistency
from .checkpoints import VerifiedCheckpoint, verify_checkpoint
from .consistency import ConsistencyProof, check_consistent
from .errors import FleetRollbackError, LogMisbehaviourError, MalformedError, VerificationFailure
from .log_client import LogClient, LogClientError, TilesBehindError
from .policy import TrustPolicy
from .state import ClientState
from .tile_proofs import verified_consistency_proof
from .verify import CheckLog, VerifiedReceipt, _verify, load_envelope, load_receipt

DEFAULT_WAIT_S = 30.0
"""How long `verify_receipt_online` waits for the tiles to catch up with a receipt."""
POLL_S = 1.0


async def fetch_consistency_proof(
    client: LogClient, first: VerifiedCheckpoint, second: VerifiedCheckpoint, *,
    anchor: VerifiedCheckpoint | None = None,
) -> ConsistencyProof:
    """A consistency proof between two checkpoints of one log (either order).

    From the JSON API when the client has one and it answers. When it has none, does not
    answer, or its proof does not verify, the proof is computed from the tiles of
    `anchor`: a verified checkpoint at least as large as both (default: the larger of
    the two, which must then be verified), every tile checked against its signed root
    first. So a garbled JSON answer alone is not mistaken for a split view, and a
    corrupted tile is named (`TileMismatchError`) rather than taken for one.

    Returns the proof that verifies, or else the JSON API's (which then serves as
    evidence), or else the tiles'. Raises `LogClientError` when neither gives a proof.
    """
    a, b = (first, second) if first.size <= second.size else (second, first)
    if a.size == b.size:
        return ConsistencyProof(a.size, b.size, (), "none needed: equal sizes")
    anchor = anchor or b
    served: ConsistencyProof | None = None
    errors: list[str] = []
    if client.has_api:
        url = client.api_url_of(f"v1/proof/consistency?first={a.size}&second={b.size}")
        try:
            served = ConsistencyProof(a.size, b.size, tuple(await client.consistency_proof(a.size, b.size)),
                                      f"GET {url}")
        except LogClientError as exc:
            errors.append(str(exc))
        else:
            if _verifies(a, b, served):
                return served
    if anchor.size < b.size:
        errors.append(f"the tiles' checkpoint of size {anchor.size} does not cover size {b.size}")
    else:
        try:
            computed = await verified_consistency_proof(client, a.size, b.size, size=anchor.size, root=anchor.root)
        except LogClientError as exc:
            errors.append(str(exc))
        else:
            from_tiles = ConsistencyProof(a.size, b.size, tuple(computed),
                                          f"tiles of {client.tiles_url} at size {anchor.size}")
            if served is None or _verifies(a, b, from_tiles):
                return from_tiles
    if served is not None:
        return served
    raise LogClientError(f"no consistency proof from {a.size} to {b.size}: {'; '.join(errors)}")


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
    check_fleet: bool | None = None,
    wait_s: float = DEFAULT_WAIT_S,
    poll_s: float = POLL_S,
    max_age: timedelta | int | None = None,
) -> VerifiedReceipt:
    """`verify_receipt` plus the online checks against the log behind `client`.

    `check_fleet` (default: when the client has the log's API) runs `fleet_latest`,
    which needs the JSON API. `wait_s` bounds the wait for the tiles to serve a
    checkpoint that covers the receipt (and the stored one) when the API cannot give
    one; the tiles' checkpoint is fetched again every `poll_s`.

    Raises a `VerificationFailure` subclass; `LogClientError` when the log cannot be
    reached or answers garbage (`TilesBehindError`: the tiles did not catch up in
    time; `NoApiError`: `check_fleet` without an API).
    """
    if not 0 <= wait_s < float("inf") or not 0 < poll_s < float("inf"):
        raise ValueError(f"wait_s: got {wait_s!r}, want >= 0; poll_s: got {poll_s!r}, want > 0")
    check_fleet = client.has_api if check_fleet is None else check_fleet
    if check_fleet:
        client.api_url_of("v1/fleets")  # NoApiError now, not after the other checks
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
    receipt_cp = _unverified(parsed)
    stored_note = state.checkpoint_note(receipt_cp.origin) if state is not None else None
    stored = None if stored_note is None else _unverified_note(stored_note)
    need = max(receipt_cp.size, 0 if stored is None else stored.size)

    tiles_cp = _checked(log, "latest_checkpoint", await client.checkpoint(), policy)
    log.add("latest_checkpoint", True,
            f"the tiles at {client.tiles_url} serve a valid checkpoint of size {tiles_cp.size}")
    latest, stale = tiles_cp, None
    if tiles_cp.origin == receipt_cp.origin and tiles_cp.size < need:
        stale = tiles_cp
        what = "the receipt's" if need == receipt_cp.size else "the stored checkpoint"
        latest = await _newer_checkpoint(client, policy, stale, need, what, log, wait_s, poll_s)
    proofs: dict[tuple[int, int], ConsistencyProof] = {}

    async def prove(x: VerifiedCheckpoint, y: VerifiedCheckpoint) -> None:
        key = (min(x.size, y.size), max(x.size, y.size))
        if key[0] != key[1] and key not in proofs:
            proofs[key] = await fetch_consistency_proof(client, x, y, anchor=latest)

    if latest.origin == receipt_cp.origin:
        await prove(receipt_cp, latest)
        if stale is not None:
            await prove(stale, receipt_cp)
        if stored is not None:
            await prove(stored, receipt_cp)
            await prove(stored, latest)

    result = _verify(envelope, receipt, policy, now=now, state=state, proofs=proofs.values(), checks=log,
                     max_age=max_age)

    if latest.origin != result.checkpoint.origin:
        err = LogMisbehaviourError(
            f"the log at {client.tiles_url} serves checkpoints of {latest.origin!r}, "
            f"the receipt is from {result.checkpoint.origin!r}")
        log.add("consistency_with_latest", False, str(err))
        raise err
    pair = (min(result.checkpoint.size, latest.size), max(result.checkpoint.size, latest.size))
    log.run("consistency_with_latest", lambda: (
        None, check_consistent(policy, result.checkpoint, latest, proofs.get(pair))))
    if stale is not None:
        behind = stale
        pair = (min(result.checkpoint.size, behind.size), max(result.checkpoint.size, behind.size))
        log.run("tiles_checkpoint_consistency", lambda: (
            None, "the older checkpoint the tiles served: "
            + check_consistent(policy, behind, result.checkpoint, proofs.get(pair))))
    if state is not None:
        log.run("latest_vs_stored", lambda: (None, state.advance(latest, policy, proofs)))

    if check_fleet:
        try:
            entry = await client.fleet(result.fleet_id)
        except LogClientError as exc:
            raise LogClientError(f"{exc} (the check fleet_latest needs the log's API; verify with a tiles URL "
                                 "alone to skip it)") from exc
        await _check_fleet_latest(client, entry, result, policy, now, log)
    return result


async def _newer_checkpoint(
    client: LogClient, policy: TrustPolicy, stale: VerifiedCheckpoint, need: int, what: str, log: CheckLog,
    wait_s: float, poll_s: float,
) -> VerifiedCheckpoint:
    """A verified checkpoint of at least `need` entries, when the tiles serve `stale`
    (smaller): the API's, when the client has one that answers, else the tiles' after
    waiting for them (a copy or cache lags the log; a publisher writes the checkpoint
    last, so one that covers `need` comes with its tiles)."""
    behind = (f"the tiles at {client.tiles_url} serve a checkpoint of size {stale.size}, older than {what} "
              f"(size {need})")
    api_error = "no API URL was given"
    if client.has_api:
        try:
            note = await client.api_checkpoint()
        except LogClientError as exc:
            api_error = f"the log's API does not answer: {exc}"
        else:
            cp = _checked(log, "newer_checkpoint", note, policy)
            log.add("newer_checkpoint", True, f"{behind}: the log's API at {client.api_url} serves a valid "
                                              f"checkpoint of size {cp.size}")
            return cp
    start = time.monotonic()
    latest, error = stale, ""
    while latest.size < need:
        waited = time.monotonic() - start
        if waited >= wait_s:
            behind_error = TilesBehindError(
                f"{behind}, and no newer one came within {wait_s:g} s ({api_error}"
                f"{'; last error: ' + error if error else ''}): the static tree has not caught up with the log. "
                "This is not a verification failure: retry later, or give the log's API URL",
                tiles_url=client.tiles_url, tiles_size=latest.size, want_size=need, waited_s=waited)
            log.add("newer_checkpoint", False, str(behind_error))
            raise behind_error
        await asyncio.sleep(min(poll_s, wait_s - waited))
        try:
            note = await client.checkpoint()
        except LogClientError as exc:  # a copy being updated may fail a read: keep waiting
            error = str(exc)
            continue
        latest = _checked(log, "newer_checkpoint", note, policy)
    log.add("newer_checkpoint", True, (
        f"{behind} ({api_error}): after {time.monotonic() - start:.1f} s they serve a valid checkpoint "
        f"of size {latest.size}"))
    return latest


def _checked(log: CheckLog, name: str, note: str, policy: TrustPolicy) -> VerifiedCheckpoint:
    """`note` verified under `policy`; a failure is recorded as check `name`."""
    try:
        return verify_checkpoint(note, policy)
    except VerificationFailure as exc:
        exc.check = name
        log.add(name, False, str(exc))
        raise


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
