"""Verifying a fleet-head proof (docs/fleet-heads.md, "A verifier checks"):
`verify_fleet_head(proof, policy, now)` returns the fleet's verified newest bundle, or
raises.

Checks, in this order, each failure its own `VerificationFailure` subclass (the check
ids of docs/client.md):

1. `fleet_head_format`     the proof parses strictly (formats/fleet_head.py), and so
                           does the envelope in it;
2. `fleet_head_fleet`      it is about the fleet asked for (`fleet_id`);
3. `checkpoint_signature`, `witness_quorum`: the checkpoint verifies under the trust
                           policy (client/checkpoints.py);
4. `fleet_head_freshness`  a quorum of the pinned witnesses cosigned it within `max_age`
                           of `now` (cosignature/v1 timestamps); with no witness quorum
                           in the policy, the log's own cosignature/v1 time, and the
                           result says that freshness rests on the log alone;
5. `heads_leaf`            the HEADS leaf is leaf N - 1 of the checkpoint's tree of size
                           N: it decodes, and its RFC 6962 §2.1.1 inclusion proof leads
                           to the checkpoint's root;
6. present: `heads_row`    the row's entry (the row and its next fleet id) has an
                           inclusion proof at `position` in a tree of `count` entries
                           that leads to the HEADS leaf's root (and the row names the
                           fleet: `fleet_head_fleet`);
            `head_bundle`  the envelope's leaf hash is the row's, its inclusion proof at
                           `row.leaf_index < N - 1` leads to the checkpoint's root, and
                           its payload names the row's fleet, sequence and status;
            `envelope_signatures` it carries a pinned signer's and a pinned
                           countersigner's valid signatures;
   absent:  `heads_row`    the covering row's entry proof verifies (none for an empty
                           table);
            `fleet_absence` its chain link (its fleet id to its next fleet id, in byte
                           order, circular) passes over the fleet id asked for;
7. `fleet_head_rollback`   (with a `ClientState`) no newer head of the fleet was seen
                           (through a head or a receipt), no other bundle with this
                           sequence, and no head of it in this log for an absence;
8. the outcome: a retired row raises `FleetRetiredError` (carrying the verified
   retirement), an absence `FleetAbsentError` (carrying the verified absence);
   `open_fleet_head` returns either outcome instead of raising for it.

The bundle's validity window is not checked: a head names the fleet's newest bundle
whatever its window. Check it with the result's `bundle` (or verify its receipt).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from ..bundle import (
    BundleError,
    Envelope,
    FleetBundle,
    FleetKey,
    MalformedPayloadError,
    ValidityError,
    VerifiedBundle,
    encode_leaf,
    parse_envelope,
    verify_envelope,
)
from ..bundle.errors import SignaturePolicyError
from ..bundle.heads import HEADS_LEAF_TYPE, HeadsError, HeadsLeaf, HeadsRow, covers, decode_heads_leaf
from ..bundle.payload import is_fleet_id
from ..formats.errors import FleetHeadFormatError, QuorumNotMetError
from ..formats.fleet_head import FleetHeadProof, ProvedRow, parse_fleet_head_proof
from ..formats.strict import json_type
from ..merkle import MerkleError, leaf_hash, verify_inclusion
from .checkpoints import VerifiedCheckpoint
from .errors import (
    AbsenceProofError,
    FleetAbsentError,
    FleetHeadBundleError,
    FleetHeadRootError,
    FleetMismatchError,
    FleetRetiredError,
    HeadsLeafError,
    MalformedFleetHeadError,
    NotCurrentHeadError,
    SignatureError,
    StaleFleetHeadError,
)
from .policy import TrustPolicy
from .state import ClientState
from .verify import CheckLog, check_checkpoint_note

# verify_envelope's own expiry check is disabled with the earliest time there is (see
# the module docstring: a head's window is the caller's to check).
_BEGINNING = datetime(1, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Freshness:
    """How fresh the checkpoint was found to be at `now` (POSIX seconds).

    `basis` "witnesses": `witness_times` holds the pinned witnesses whose cosignature
    timestamps lie within `max_age_s` of `now`, and they meet the policy's quorum.
    `basis` "log": the policy has no witness quorum, and freshness rests on the log's
    own signed time `log_time` alone (a log that lies about time can serve an old head
    as fresh; docs/fleet-heads.md, "Soundness").
    """

    basis: Literal["witnesses", "log"]
    now: int
    max_age_s: int
    log_time: int | None
    witness_times: Mapping[str, int] = field(default_factory=dict)

    @property
    def rests_on_log_alone(self) -> bool:
        return self.basis == "log"

    def to_dict(self) -> dict[str, Any]:
        return {"basis": self.basis, "now": self.now, "max_age_s": self.max_age_s, "log_time": self.log_time,
                "witness_times": dict(sorted(self.witness_times.items()))}


@dataclass(frozen=True)
class VerifiedFleetHead:
    """The fleet's newest bundle in the tree `checkpoint` commits to: the row at
    `position` of the heads table that the HEADS leaf at `heads_index` commits to, and
    the bundle it names, logged at `leaf_index` and dual-signed."""

    fleet_id: str
    sequence: int
    status: str
    leaf_index: int
    leaf_hash: bytes
    envelope: Envelope
    bundle: FleetBundle
    payload_digest: bytes
    signer_keyid: str
    countersigner_keyid: str
    position: int
    heads: HeadsLeaf
    heads_index: int
    checkpoint: VerifiedCheckpoint
    freshness: Freshness

    @property
    def retired(self) -> bool:
        return self.status == "retired"

    @property
    def keys(self) -> tuple[FleetKey, ...]:
        return self.bundle.keys

    def to_dict(self) -> dict[str, Any]:
        return {
            "fleet_id": self.fleet_id,
            "outcome": "retired" if self.retired else "present",
            "sequence": self.sequence,
            "status": self.status,
            "leaf_index": self.leaf_index,
            "leaf_hash": self.leaf_hash.hex(),
            "payload_digest": self.payload_digest.hex(),
            "position": self.position,
            "heads": _heads_dict(self.heads, self.heads_index),
            "checkpoint": _checkpoint_dict(self.checkpoint),
            "freshness": self.freshness.to_dict(),
        }


@dataclass(frozen=True)
class VerifiedFleetAbsence:
    """The fleet has no bundle among the first `checkpoint.size` leaves: the heads
    table the HEADS leaf commits to has no row for it. `covering` is the row at
    `position` whose chain link (to `next_fleet_id`) passes over it; all three are None
    for an empty table."""

    fleet_id: str
    covering: HeadsRow | None
    next_fleet_id: str | None
    position: int | None
    heads: HeadsLeaf
    heads_index: int
    checkpoint: VerifiedCheckpoint
    freshness: Freshness

    def to_dict(self) -> dict[str, Any]:
        return {
            "fleet_id": self.fleet_id,
            "outcome": "absent",
            "covering": None if self.covering is None else {
                "position": self.position, "fleet_id": self.covering.fleet_id, "next_fleet_id": self.next_fleet_id},
            "heads": _heads_dict(self.heads, self.heads_index),
            "checkpoint": _checkpoint_dict(self.checkpoint),
            "freshness": self.freshness.to_dict(),
        }


def _heads_dict(heads: HeadsLeaf, index: int) -> dict[str, Any]:
    return {"index": index, "previous": heads.previous, "count": heads.count, "root": heads.root.hex()}


def _checkpoint_dict(cp: VerifiedCheckpoint) -> dict[str, Any]:
    return {"origin": cp.origin, "size": cp.size, "root": cp.root.hex(), "signed_at": cp.signed_at,
            "witnesses": sorted(cp.witnesses), "log_signatures": list(cp.log_signatures)}


def verify_fleet_head(
    proof: FleetHeadProof | bytes | str,
    policy: TrustPolicy,
    now: datetime,
    *,
    fleet_id: str | None = None,
    max_age: timedelta | int | None = None,
    state: ClientState | None = None,
    checks: CheckLog | None = None,
) -> VerifiedFleetHead:
    """Verify a fleet-head proof and return the fleet's active head (module docstring).

    `now` is timezone-aware; `fleet_id`, when given, is the fleet asked for (default:
    the proof's own); `max_age` (a timedelta or seconds) defaults to the policy's
    `max_age_s`, and one of them is required. `state`, when given, adds the rollback
    check and records the head in memory on success (and a retirement before raising
    for it); the caller saves it. Raises a `VerificationFailure` subclass: among them
    `FleetRetiredError` and `FleetAbsentError`, which carry what was verified.
    """
    outcome = open_fleet_head(
        proof, policy, now, fleet_id=fleet_id, max_age=max_age, state=state, checks=checks
    )
    if isinstance(outcome, VerifiedFleetAbsence):
        cp = outcome.checkpoint
        raise FleetAbsentError(
            f"fleet {outcome.fleet_id!r} has no bundle in {cp.origin!r} at size {cp.size} "
            f"(verified absent from the heads table of {outcome.heads.count} rows)",
            outcome,
        )
    if outcome.retired:
        raise FleetRetiredError(
            f"fleet {outcome.fleet_id!r} is retired: its newest bundle (sequence {outcome.sequence}, leaf "
            f"{outcome.leaf_index} of {outcome.checkpoint.origin!r}) says status 'retired'; refuse every bundle "
            "of this fleet",
            outcome,
        )
    return outcome


def open_fleet_head(
    proof: FleetHeadProof | bytes | str,
    policy: TrustPolicy,
    now: datetime,
    *,
    fleet_id: str | None = None,
    max_age: timedelta | int | None = None,
    state: ClientState | None = None,
    checks: CheckLog | None = None,
) -> VerifiedFleetHead | VerifiedFleetAbsence:
    """Every check of `verify_fleet_head`, returning whichever verified outcome the
    proof shows (a head, active or retired, or an absence) instead of raising for the
    last two. For monitors and tools; a client that wants a usable head calls
    `verify_fleet_head`."""
    if now.tzinfo is None:
        raise TypeError("verify_fleet_head: now must be timezone-aware")
    max_age_s = _max_age_seconds(max_age, policy)
    log = checks if checks is not None else CheckLog()

    if fleet_id is not None and not is_fleet_id(fleet_id):
        raise ValueError(f"verify_fleet_head: fleet_id: got {fleet_id[:40]!r}, want a fleet id")
    parsed = log.run("fleet_head_format", lambda: _parse(proof))
    asked = parsed.fleet_id if fleet_id is None else fleet_id
    log.run("fleet_head_fleet", lambda: _check_fleet(parsed.fleet_id, asked, "the proof"))

    cp = check_checkpoint_note(parsed.checkpoint_note, parsed.checkpoint.origin, policy, log)
    freshness = log.run("fleet_head_freshness", lambda: _check_freshness(cp, policy, now, max_age_s))
    heads = log.run("heads_leaf", lambda: _check_heads_leaf(parsed, cp))
    index = parsed.heads_leaf.index

    if parsed.row is None or parsed.bundle is None:
        covering = parsed.covering
        row = log.run("heads_row", lambda: _check_covering_proof(covering, heads, index))
        log.run("fleet_absence", lambda: _check_absence(asked, covering, heads))
        absence = VerifiedFleetAbsence(asked, row, None if covering is None else covering.next_fleet_id,
                                       None if covering is None else covering.position, heads, index, cp, freshness)
        if state is not None:
            log.run("fleet_head_rollback", lambda: (None, state.check_absent(asked, cp.origin)))
        return absence

    proved = parsed.row
    log.run("fleet_head_fleet", lambda: _check_fleet(proved.fleet_id, asked, "the row"))
    row = log.run("heads_row", lambda: _check_row(proved, heads))
    envelope = log.run("head_bundle", lambda: _check_bundle(parsed, row, cp))
    verified = log.run("envelope_signatures", lambda: _check_signatures(envelope, policy, row))
    head = VerifiedFleetHead(
        fleet_id=row.fleet_id,
        sequence=row.sequence,
        status=row.status,
        leaf_index=row.leaf_index,
        leaf_hash=row.leaf_hash,
        envelope=envelope,
        bundle=verified.bundle,
        payload_digest=verified.payload_digest,
        signer_keyid=verified.signer_keyid,
        countersigner_keyid=verified.countersigner_keyid,
        position=proved.position,
        heads=heads,
        heads_index=index,
        checkpoint=cp,
        freshness=freshness,
    )
    if state is not None:
        log.run("fleet_head_rollback", lambda: (None, state.check_head(head.fleet_id, head.sequence,
                                                                        head.payload_digest)))
        state.record_head(head.fleet_id, head.sequence, head.payload_digest, head.status, cp.origin, head.leaf_index)
    return head


def check_receipt_head(
    proof: FleetHeadProof,
    receipt_index: int,
    receipt_leaf_hash: bytes,
    fleet_id: str,
    policy: TrustPolicy,
    now: datetime,
    *,
    max_age: timedelta | int | None,
    state: ClientState | None,
    checks: CheckLog,
) -> VerifiedFleetHead:
    """The fleet-head proof a receipt carries (docs/formats.md, "Receipts"): every check
    of `verify_fleet_head` for the receipt's fleet, then `fleet_head_current`: the head
    is this very bundle (its leaf index and leaf hash). A retired head or an absence
    raises as in `verify_fleet_head`; another bundle raises `NotCurrentHeadError`."""
    outcome = open_fleet_head(proof, policy, now, fleet_id=fleet_id, max_age=max_age, state=state, checks=checks)
    if isinstance(outcome, VerifiedFleetAbsence):
        checks.add("fleet_head_current", False, "the proof shows the fleet absent")
        raise FleetAbsentError(f"fleet {fleet_id!r}: the receipt's fleet-head proof shows the fleet absent at size "
                               f"{outcome.checkpoint.size}", outcome, check="fleet_head_current")

    def current() -> tuple[None, str]:
        if (outcome.leaf_index, outcome.leaf_hash) != (receipt_index, receipt_leaf_hash):
            raise NotCurrentHeadError(
                f"fleet head: got entry {outcome.leaf_index} (sequence {outcome.sequence}, leaf hash "
                f"{outcome.leaf_hash.hex()}) at tree size {outcome.checkpoint.size}, want the receipt's entry "
                f"{receipt_index} (leaf hash {receipt_leaf_hash.hex()}): a newer bundle superseded it")
        if outcome.retired:
            raise FleetRetiredError(
                f"fleet {fleet_id!r} is retired by this very bundle (sequence {outcome.sequence}): refuse every "
                "bundle of this fleet", outcome)
        return None, (f"the fleet's head at tree size {outcome.checkpoint.size} is this bundle (entry "
                      f"{receipt_index}, sequence {outcome.sequence})")

    checks.run("fleet_head_current", current)
    return outcome


def _max_age_seconds(max_age: timedelta | int | None, policy: TrustPolicy) -> int:
    if max_age is None:
        if policy.max_age_s is None:
            raise ValueError("verify_fleet_head: no max_age given and the trust policy has no max_age_s")
        return policy.max_age_s
    seconds = max_age.total_seconds() if isinstance(max_age, timedelta) else max_age
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
        raise ValueError(f"verify_fleet_head: max_age: got {max_age!r}, want a positive duration")
    return int(seconds)


def _parse(proof: FleetHeadProof | bytes | str) -> tuple[FleetHeadProof, str]:
    if isinstance(proof, FleetHeadProof):
        parsed = proof
    else:
        try:
            parsed = parse_fleet_head_proof(proof)
        except FleetHeadFormatError as exc:
            message = str(exc)
            if not message.startswith("fleet-head proof"):
                message = f"fleet-head proof: {message}"
            raise MalformedFleetHeadError(message) from None
    kind = "present" if parsed.present else "absent"
    return parsed, f"fleet-head proof v{parsed.version} for fleet {parsed.fleet_id!r} ({kind})"


def _check_fleet(got: str, asked: str, what: str) -> tuple[None, str]:
    if got != asked:
        raise FleetMismatchError(f"fleet id of {what}: got {got!r}, want {asked!r}, the fleet asked for")
    return None, f"{what} is about fleet {asked!r}"


def _check_freshness(
    cp: VerifiedCheckpoint, policy: TrustPolicy, now: datetime, max_age_s: int
) -> tuple[Freshness, str]:
    now_s = now.timestamp()
    now_int = int(now_s)

    # A timestamp counts when it lies within max_age of now on either side: one far
    # ahead (a clock running fast) would otherwise keep a proof fresh for longer.
    def fresh(t: int) -> bool:
        return abs(now_s - t) <= max_age_s

    if policy.tlog.quorum != "none":
        times = {name: t for name, t in cp.witness_times.items() if fresh(t)}
        try:
            policy.tlog.check_quorum(frozenset(times))
        except QuorumNotMetError:
            seen = ", ".join(f"{n} at {t}" for n, t in sorted(cp.witness_times.items())) or "none"
            raise StaleFleetHeadError(
                f"freshness: got {len(times)} witness(es) cosigning within {max_age_s} s of now {now_int} "
                f"(cosignatures: {seen}), want the policy's quorum {policy.tlog.quorum!r} of them"
            ) from None
        return Freshness("witnesses", now_int, max_age_s, cp.signed_at, times), (
            f"witnesses {sorted(times)} cosigned within {max_age_s} s of {now_int}"
        )
    if cp.signed_at is None:
        raise StaleFleetHeadError(
            "freshness: got no witness quorum in the policy and no signed time of the log, want one of them"
        )
    if not fresh(cp.signed_at):
        raise StaleFleetHeadError(
            f"freshness: got the log's signed time {cp.signed_at}, want within {max_age_s} s of now {now_int} "
            "(no witness quorum in the policy: freshness rests on the log alone)"
        )
    return Freshness("log", now_int, max_age_s, cp.signed_at), (
        f"the log signed at {cp.signed_at}, within {max_age_s} s of {now_int} (freshness rests on the log alone)"
    )


def _check_heads_leaf(parsed: FleetHeadProof, cp: VerifiedCheckpoint) -> tuple[HeadsLeaf, str]:
    claimed = parsed.heads_leaf
    if cp.size == 0 or claimed.index != cp.size - 1:
        raise HeadsLeafError(
            f"heads_leaf.index: got {claimed.index}, want {cp.size - 1} (the last leaf of the checkpoint of size "
            f"{cp.size})"
        )
    try:
        heads = decode_heads_leaf(claimed.leaf)
    except HeadsError as exc:
        raise HeadsLeafError(f"heads_leaf.leaf: {exc}") from None
    if heads.legacy:
        raise HeadsLeafError(
            f"heads_leaf.leaf: got type {heads.layout} (release 0.2.0's sorted layout), want {HEADS_LEAF_TYPE}: "
            "no fleet-head proof is made at such a leaf; ask again after the log's next batch"
        )
    # `previous` names an earlier HEADS leaf, or is 0 for none (index 0 holds a bundle).
    if heads.previous >= max(claimed.index, 1):
        raise HeadsLeafError(
            f"HEADS leaf previous: got {heads.previous}, want an earlier HEADS leaf's index (< {claimed.index}) "
            "or 0"
        )
    try:
        verify_inclusion(claimed.index, cp.size, leaf_hash(claimed.leaf), list(claimed.inclusion_proof), cp.root)
    except MerkleError as exc:
        raise HeadsLeafError(f"HEADS leaf inclusion proof of index {claimed.index} in size {cp.size}: {exc}") from None
    return heads, (f"leaf {claimed.index} is a HEADS leaf: {heads.count} rows, root {heads.root.hex()}, "
                   f"previous {heads.previous}")


def _row_of(proved: ProvedRow, what: str) -> HeadsRow:
    try:
        return HeadsRow(proved.fleet_id, proved.sequence, proved.leaf_index, proved.leaf_hash, proved.status)
    except HeadsError as exc:  # parse_fleet_head_proof checks the same fields
        raise MalformedFleetHeadError(f"{what}: {exc}", check="fleet_head_format") from None


def _verify_row(proved: ProvedRow, heads: HeadsLeaf, what: str) -> HeadsRow:
    row = _row_of(proved, what)
    try:
        verify_inclusion(proved.position, heads.count, row.entry_hash(proved.next_fleet_id), list(proved.proof),
                         heads.root)
    except MerkleError as exc:
        raise FleetHeadRootError(
            f"{what} {row.fleet_id!r} at position {proved.position} of {heads.count} rows: {exc}"
        ) from None
    return row


def _check_row(proved: ProvedRow, heads: HeadsLeaf) -> tuple[HeadsRow, str]:
    row = _verify_row(proved, heads, "row")
    return row, (f"row {proved.position} of {heads.count}: fleet {row.fleet_id!r} sequence {row.sequence} at leaf "
                 f"{row.leaf_index}, {row.status}")


def _check_bundle(parsed: FleetHeadProof, row: HeadsRow, cp: VerifiedCheckpoint) -> tuple[Envelope, str]:
    assert parsed.bundle is not None
    try:
        # The proof's JSON was parsed strictly already (no duplicate keys); parse_envelope
        # applies the envelope's own profile to the same object, re-serialised.
        envelope = parse_envelope(json.dumps(parsed.bundle.envelope, default=_no_json).encode("utf-8"))
        leaf = encode_leaf(envelope)
    except (BundleError, _NotJSON) as exc:
        raise MalformedFleetHeadError(f"bundle.envelope: {exc}", check="fleet_head_format") from None
    except RecursionError:
        # Nesting that strict_json just accepted, written back. Not reached on CPython
        # (the JSON reader and writer count nesting alike, from the same stack depth:
        # tests/test_fleet_heads.py tries); kept so no interpreter turns it untyped.
        raise MalformedFleetHeadError("bundle.envelope: JSON nested too deeply", check="fleet_head_format") from None
    got = leaf_hash(leaf)
    if got != row.leaf_hash:
        raise FleetHeadBundleError(f"bundle leaf hash: got {got.hex()} from the envelope, want the row's "
                                   f"{row.leaf_hash.hex()}")
    if row.leaf_index >= cp.size - 1:
        raise FleetHeadBundleError(f"row leaf_index: got {row.leaf_index}, want below the HEADS leaf's {cp.size - 1}")
    try:
        verify_inclusion(row.leaf_index, cp.size, got, list(parsed.bundle.inclusion_proof), cp.root)
    except MerkleError as exc:
        raise FleetHeadBundleError(f"bundle inclusion proof of index {row.leaf_index} in size {cp.size}: {exc}") \
            from None
    return envelope, f"the envelope is leaf {row.leaf_index} of the checkpoint's tree, with the row's leaf hash"


class _NotJSON(Exception):
    """A value json.dumps cannot write back (see `_no_json`)."""


def _no_json(value: object) -> object:
    # strict_json decodes a number with a fraction or exponent to NonInteger, which no
    # field of the envelope accepts; writing its literal back as a string would give a
    # second spelling of a string field (a keyid 1.5 read as "1.5").
    raise _NotJSON(f"got {json_type(value)}, which no envelope field accepts")


def _check_signatures(envelope: Envelope, policy: TrustPolicy, row: HeadsRow) -> tuple[VerifiedBundle, str]:
    try:
        verified = verify_envelope(envelope, policy.authorities, _BEGINNING)
    except SignaturePolicyError as exc:
        raise SignatureError(f"{exc} [{exc.code}]") from None
    except (MalformedPayloadError, ValidityError) as exc:
        # A logged bundle always has a valid payload (the log checked it at admission).
        raise FleetHeadBundleError(f"the logged bundle's payload: {exc}") from None
    except BundleError as exc:
        raise MalformedFleetHeadError(f"bundle.envelope: {exc}", check="fleet_head_format") from None
    b = verified.bundle
    for name, got, want in (("fleet_id", b.fleet_id, row.fleet_id), ("sequence", b.sequence, row.sequence),
                            ("status", b.status, row.status)):
        if got != want:
            raise FleetHeadBundleError(f"bundle payload {name}: got {got!r}, want the row's {want!r}",
                                       check="head_bundle")
    return verified, (f"signed by {verified.signer_keyid[:16]}... and {verified.countersigner_keyid[:16]}...; "
                      f"payload names fleet {b.fleet_id!r}, sequence {b.sequence}, status {b.status!r}")


def _check_covering_proof(covering: ProvedRow | None, heads: HeadsLeaf,
                          heads_index: int) -> tuple[HeadsRow | None, str]:
    if covering is None:
        return None, "no covering row (an empty table claimed)"
    row = _verify_row(covering, heads, "covering")
    # Every row names a bundle logged before the HEADS leaf that commits to it (a
    # present row's bundle is proved in the tree; the covering row's is only named).
    if row.leaf_index >= heads_index:
        raise FleetHeadRootError(
            f"covering row {row.fleet_id!r}: got leaf_index {row.leaf_index}, want a leaf before the HEADS leaf "
            f"{heads_index}"
        )
    return row, f"covering row {covering.position} of {heads.count} ({row.fleet_id!r}) is in the heads table"


def _check_absence(asked: str, covering: ProvedRow | None, heads: HeadsLeaf) -> tuple[None, str]:
    count = heads.count
    if covering is None:
        if count != 0:
            raise AbsenceProofError(f"covering: got none, want the row whose link passes over {asked!r} in a table "
                                    f"of {count} rows")
        return None, "the heads table is empty"
    a, b = covering.fleet_id, covering.next_fleet_id
    # A lone row links to itself; in a larger table no row does (docs/fleet-heads.md,
    # "The heads tree"): a cheap check of the one link the client sees.
    if (count == 1) != (a == b):
        raise AbsenceProofError(
            f"covering row {a!r}: got next fleet id {b!r} in a table of {count} rows, want "
            + ("itself (a lone row)" if count == 1 else "another fleet")
        )
    if not covers(a, b, asked):
        raise AbsenceProofError(
            f"fleet id {asked!r}: got the link {a!r} -> {b!r}, want one that passes over {asked!r} "
            "(strictly between them in byte order, or beyond either end of the wrapping link)"
        )
    if count == 1:
        return None, f"the only row is {a!r}, not {asked!r}"
    if a < b:
        return None, f"{asked!r} falls between {a!r} and the next fleet id {b!r} (row {covering.position})"
    return None, f"{asked!r} sorts outside the table's range, last {a!r} .. first {b!r} (row {covering.position})"


__all__ = [
    "Freshness",
    "VerifiedFleetAbsence",
    "VerifiedFleetHead",
    "check_receipt_head",
    "open_fleet_head",
    "verify_fleet_head",
]
