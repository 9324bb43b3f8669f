"""Properties of fleet heads (docs/fleet-heads.md), over generated logs:

* for any sequence of submissions (fleets interleaved, duplicates, rollbacks and
  submissions after a retirement refused, retirements), folding the log gives the
  sequencer's table, every fleet's proof verifies and names its newest bundle (a
  retired one as a retirement), and fleets without a bundle get a verified absence;
* the incremental `HeadsTable` root is the from-scratch RFC 6962 MTH of the sorted
  rows after every operation, however updates and reads interleave;
* the same through the real `Sequencer` on the in-memory store: what it admits, that
  every checkpoint ends with a HEADS leaf, and that the fold of its stored leaves
  checks every HEADS leaf and yields a verifying proof for every fleet;
* any single mutation of a valid proof (a bit of any hash, any integer, a dropped
  field, swapped or substituted rows) fails with a typed `VerificationFailure`:
  never another exception, never a verified outcome.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import functools
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleet_head_vectors import NOW, MemoryLog, VectorKeys, bundle, canonical, fleet_head_proof
from logserver.bundle import Admitted, admit, is_heads_leaf
from logserver.bundle import Envelope, HeadsRow, HeadsTable, HeadsUpdateError, bundle_row, encode_leaf, fold
from logserver.client import (
    FleetAbsentError,
    FleetRetiredError,
    VerificationFailure,
    VerifiedFleetHead,
    verify_fleet_head,
)
from logserver.keys.log_key import LogKey
from logserver.merkle import EMPTY_ROOT, CompactRange, leaf_hash, verify_inclusion
from logserver.write.outcomes import Appended, Duplicate, SequencerError
from logserver.write.sequencer import Sequencer
from memory_store import MemoryStore
from merkle_reference import mth
from sequencer_support import running

KEYS = VectorKeys()
POLICY = KEYS.policy()
AT = datetime.fromtimestamp(NOW, UTC)
FLEETS = ("fleet-b", "fleet-d", "fleet-f", "fleet-h", "fleet-j")
# Fleets that never submit: before the first, between two, after the last.
ABSENT = ("fleet-a", "fleet-c", "fleet-g", "fleet-z")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@functools.cache
def _envelope(fleet: str, sequence: int, retired: bool) -> Envelope:
    return bundle(fleet, sequence, status="retired" if retired else None)


# A submission: (fleet, sequence, retire?); a batch: one or more submissions.
# One submission in six retires its fleet.
submissions = st.lists(
    st.lists(st.tuples(st.sampled_from(FLEETS), st.integers(0, 6), st.sampled_from([False] * 5 + [True])),
             min_size=1, max_size=5),
    min_size=1, max_size=5,
)


def _sequence(batches: list[list[tuple[str, int, bool]]]) -> tuple[MemoryLog, dict[str, tuple[int, bool, int]]]:
    """Run the submissions through the log as the sequencer will: a bundle is appended
    only if its sequence is above its fleet's head and the fleet is not retired; each
    batch that appended something ends with a HEADS leaf. Returns the log and the
    model: fleet -> (newest sequence, retired, leaf index)."""
    log = MemoryLog()
    model: dict[str, tuple[int, bool, int]] = {}
    for batch in batches:
        appended = False
        for fleet, sequence, retire in batch:
            head = model.get(fleet)
            admitted = head is None or (sequence > head[0] and not head[1])
            leaf = encode_leaf(_envelope(fleet, sequence, retire))
            row = bundle_row(log.size, leaf)
            try:
                log.table.apply(row)
            except HeadsUpdateError:
                # A duplicate, a rollback or a bundle of a retired fleet: refused.
                assert not admitted
                continue
            assert admitted
            model[fleet] = (sequence, retire, log.append(leaf))
            appended = True
        if appended:
            log.add_heads()
    return log, model


@SETTINGS
@given(submissions)
def test_every_fleet_gets_its_newest_bundle_or_a_verified_absence(batches: list[list[tuple[str, int, bool]]]) -> None:
    log, model = _sequence(batches)
    folded = fold(log.leaves)
    assert folded.rows == log.table.rows and folded.root() == log.table.root()
    note = log.checkpoint(KEYS)
    for fleet, (sequence, retired, index) in model.items():
        proof = fleet_head_proof(log, fleet, note)
        if retired:
            with pytest.raises(FleetRetiredError) as info:
                verify_fleet_head(proof, POLICY, AT, fleet_id=fleet)
            head = info.value.head
        else:
            head = verify_fleet_head(proof, POLICY, AT, fleet_id=fleet)
        assert (head.fleet_id, head.sequence, head.leaf_index, head.retired) == (fleet, sequence, index, retired)
        assert encode_leaf(head.envelope) == log.leaves[index]
    for fleet in ABSENT + tuple(f for f in FLEETS if f not in model):
        with pytest.raises(FleetAbsentError) as absent:
            verify_fleet_head(fleet_head_proof(log, fleet, note), POLICY, AT, fleet_id=fleet)
        assert absent.value.absence.heads.count == len(model)


# --- the incremental tree ------------------------------------------------------------------


operations = st.lists(
    st.tuples(st.text("abcdefgh", min_size=1, max_size=3), st.booleans(), st.booleans()),
    min_size=1, max_size=60,
)


def _reference_root(rows: list[HeadsRow]) -> bytes:
    ordered = sorted(rows, key=lambda r: r.key)
    compact = CompactRange()
    compact.extend(r.tree_hash() for r in ordered)
    return compact.root()


@SETTINGS
@given(operations)
def test_the_incremental_root_is_the_mth_of_the_sorted_rows(ops: list[tuple[str, bool, bool]]) -> None:
    table = HeadsTable()
    rows: dict[str, HeadsRow] = {}
    for step, (fleet, retire, read_now) in enumerate(ops):
        head = rows.get(fleet)
        new = HeadsRow(fleet, 0 if head is None else head.sequence + 1, step, bytes([step]) * 32,
                       "retired" if retire else "active")
        if head is not None and head.retired:
            with pytest.raises(HeadsUpdateError):
                table.apply(new)
        else:
            table.apply(new)
            rows[fleet] = new
        # Reads after some operations only: the hashes catch up over several updates.
        if read_now or step == len(ops) - 1:
            ordered = sorted(rows.values(), key=lambda r: r.key)
            assert table.rows == tuple(ordered)
            assert table.root() == _reference_root(ordered) == mth([r.encode() for r in ordered])
            position = step % len(ordered)
            verify_inclusion(position, len(ordered), ordered[position].tree_hash(), table.row_proof(position),
                             table.root())


@SETTINGS
@given(operations)
def test_the_root_after_every_operation(ops: list[tuple[str, bool, bool]]) -> None:
    table = HeadsTable()
    rows: dict[str, HeadsRow] = {}
    for step, (fleet, _, _) in enumerate(ops):
        head = rows.get(fleet)
        rows[fleet] = HeadsRow(fleet, 0 if head is None else head.sequence + 1, step, bytes([step]) * 32)
        table.apply(rows[fleet])
        assert table.root() == _reference_root(list(rows.values()))


# --- single mutations ------------------------------------------------------------------------


Mutation = Callable[[dict[str, Any]], None]


def _at(obj: dict[str, Any], path: tuple[Any, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def _set(path: tuple[Any, ...], value: Any) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        _at(obj, path[:-1])[path[-1]] = value
    return mutate


def _flip_bit(text: str, bit: int, *, hex_text: bool = False) -> str:
    raw = bytearray(bytes.fromhex(text) if hex_text else base64.b64decode(text))
    raw[bit // 8 % len(raw)] ^= 1 << (bit % 8)
    return raw.hex() if hex_text else base64.b64encode(bytes(raw)).decode()


# Values of every JSON type (a fraction decodes to strict.NonInteger), none of them a
# value any field of a valid proof holds.
_OTHER_TYPES: tuple[object, ...] = (1.5, None, True, [], {}, "x", 2**63, -1, [1.0])


def _mutations(obj: dict[str, Any], path: tuple[Any, ...] = ()) -> list[tuple[str, Callable[[int], Mutation]]]:
    """Every single mutation of the proof's JSON object, each a function of a drawn
    integer (which bit, which new value): every value retyped, every object key
    dropped, every hash's bits, every integer, every status and fleet id."""
    out: list[tuple[str, Callable[[int], Mutation]]] = []
    node = _at(obj, path)
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        here = (*path, key)
        name = "/".join(map(str, here))
        out.append((f"retype {name}", lambda n, here=here: _set(here, _OTHER_TYPES[n % len(_OTHER_TYPES)])))
        if isinstance(node, dict):
            out.append((f"drop {name}", lambda _n, here=here: lambda o: _at(o, here[:-1]).pop(here[-1])))
        if isinstance(value, (dict, list)):
            out += _mutations(obj, here)
        elif key in ("proof", "inclusion_proof", "leaf") and value:
            out.append((f"flip a bit of {name}",
                        lambda n, here=here, value=value: _set(here, _flip_bit(value, n))))
        elif key == "leaf_hash":
            out.append((f"flip a bit of {name}",
                        lambda n, here=here, value=value: _set(here, _flip_bit(value, n, hex_text=True))))
        elif type(value) is int:
            out.append((f"change {name}",
                        lambda n, here=here, value=value: _set(here, value + 1 + n % 3 if n % 2 else
                                                               max(0, value - 1 - n % 3) if value else value + 1)))
            out.append((f"change {name} to any", lambda n, here=here, value=value: _set(
                here, (value + 1 + n * 7919) % (2**63))))
        elif key == "status":
            out.append((f"toggle {name}", lambda _n, here=here, value=value: _set(
                here, "active" if value == "retired" else "retired")))
        elif key == "fleet_id":
            out.append((f"change {name}", lambda _n, here=here, value=value: _set(here, value + "x")))
    return out


def _checkpoint_mutation(n: int) -> Mutation:
    """Flip a bit of the checkpoint's root hash (inside the signed note)."""
    def mutate(obj: dict[str, Any]) -> None:
        origin, size, root, rest = obj["checkpoint"].split("\n", 3)
        obj["checkpoint"] = "\n".join((origin, size, _flip_bit(root, n), rest))
    return mutate


def _swaps(obj: dict[str, Any], log: MemoryLog) -> list[tuple[str, Callable[[int], Mutation]]]:
    out: list[tuple[str, Callable[[int], Mutation]]] = []
    rows = obj.get("neighbours")
    if rows is not None and len(rows) == 2:
        out.append(("swap the neighbours", lambda _n: _set(("neighbours",), [rows[1], rows[0]])))
    if rows:
        for i in range(len(rows)):
            def other(n: int, i: int = i) -> Mutation:
                # Another row of the table (with its valid proof) in place of this neighbour.
                positions = [p for p in range(log.table.count) if p != rows[i]["position"]]
                if not positions:
                    return _set(("neighbours", i, "position"), rows[i]["position"] + 1)
                return _set(("neighbours", i), log.table.proved_row(positions[n % len(positions)]).to_dict())
            out.append((f"substitute neighbours/{i}", other))
    if "row" in obj and log.table.count > 1:
        def other_row(n: int) -> Mutation:
            positions = [p for p in range(log.table.count) if p != obj["row"]["position"]]
            return _set(("row",), log.table.proved_row(positions[n % len(positions)]).to_dict())
        out.append(("substitute the row", other_row))
    return out


@functools.cache
def _fixture() -> tuple[MemoryLog, str]:
    log = MemoryLog()
    log.batch([_envelope("fleet-b", 1, False), _envelope("fleet-d", 1, False), _envelope("fleet-f", 1, False)])
    log.batch([_envelope("fleet-b", 2, False), _envelope("fleet-h", 1, True), _envelope("fleet-d", 4, False)])
    log.batch([_envelope("fleet-j", 0, False)])
    return log, log.checkpoint(KEYS)


@SETTINGS
@given(st.sampled_from(("fleet-b", "fleet-d", "fleet-h", "fleet-j", "fleet-a", "fleet-c", "fleet-z")), st.data())
def test_any_single_mutation_fails_with_a_typed_error(fleet: str, data: st.DataObject) -> None:
    log, note = _fixture()
    valid = fleet_head_proof(log, fleet, note)
    obj = json.loads(valid)
    candidates = _mutations(obj) + _swaps(obj, log) + [("flip a bit of the checkpoint root", _checkpoint_mutation)]
    name, make = data.draw(st.sampled_from(candidates), label="mutation")
    mutated = copy.deepcopy(obj)
    make(data.draw(st.integers(0, 2**16), label="n"))(mutated)
    proof = canonical(mutated)
    assert proof != valid, f"{name}: no change"
    try:
        outcome = verify_fleet_head(proof, POLICY, AT, fleet_id=fleet)
    except (FleetAbsentError, FleetRetiredError) as exc:
        pytest.fail(f"{name}: still verified ({type(exc).__name__}: {exc})")
    except VerificationFailure:
        return
    assert not isinstance(outcome, VerifiedFleetHead), f"{name}: the mutated proof verified"
    pytest.fail(f"{name}: returned {outcome!r}")


def test_the_mutation_catalogue_covers_every_field() -> None:
    # The property above draws from this catalogue: it must reach every field.
    log, note = _fixture()
    present = json.loads(fleet_head_proof(log, "fleet-d", note))
    absent = json.loads(fleet_head_proof(log, "fleet-c", note))
    names = {n for n, _ in _mutations(present) + _swaps(present, log) + _mutations(absent) + _swaps(absent, log)}
    for want in ("drop version", "drop fleet_id", "drop checkpoint", "drop heads_leaf/index", "drop row/proof",
                 "drop bundle", "drop bundle/envelope", "drop bundle/inclusion_proof", "drop neighbours",
                 "flip a bit of heads_leaf/leaf", "flip a bit of heads_leaf/inclusion_proof",
                 "flip a bit of row/proof", "flip a bit of row/leaf_hash", "flip a bit of bundle/inclusion_proof",
                 "flip a bit of neighbours/0/proof", "flip a bit of neighbours/1/leaf_hash",
                 "change version", "change heads_leaf/index", "change row/position", "change row/sequence",
                 "change row/leaf_index", "change neighbours/1/position", "toggle row/status", "change fleet_id",
                 "change row/fleet_id", "swap the neighbours", "substitute the row", "substitute neighbours/0",
                 "retype bundle/envelope/payload", "retype bundle/envelope/signatures/0/keyid", "retype checkpoint",
                 "retype neighbours/0", "drop bundle/envelope/signatures/0/sig"):
        assert want in names, want


# --- the real sequencer --------------------------------------------------------------------

# The sequencer's admission time: inside the bundles' default validity window.
ADMITTED_AT = datetime(2025, 6, 1, tzinfo=UTC)
SEQUENCER_KEY = LogKey("example.com/heads-properties", Ed25519PrivateKey.from_private_bytes(b"\x5a" * 32))


@functools.cache
def _admitted(fleet: str, sequence: int, retired: bool) -> Admitted:
    return admit(_envelope(fleet, sequence, retired).to_json(), KEYS.authorities.authority_set, ADMITTED_AT)


async def _through_the_sequencer(batches: list[list[tuple[str, int, bool]]]) -> tuple[MemoryStore, list[list]]:
    """Each batch submitted at once (one batch of the real Sequencer, on the in-memory
    store); returns the store and each batch's outcomes."""
    store = MemoryStore()
    store.initialize(SEQUENCER_KEY.sign_checkpoint(0, EMPTY_ROOT, 1000), 1000)
    seq = Sequencer(store, SEQUENCER_KEY.sign_checkpoint, max_batch_delay_ms=0, checkpoint_interval_s=3600)
    outcomes = []
    async with running(seq):
        for batch in batches:
            futures = []
            for fleet, sequence, retire in batch:  # no await in between: one batch
                a = _admitted(fleet, sequence, retire)
                futures.append(seq.submit(a.leaf, leaf_hash(a.leaf), a.fleet_id, a.sequence, a.payload_digest,
                                          retired=a.retired))
            outcomes.append(await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 30))
    return store, outcomes


@SETTINGS
@given(submissions)
def test_the_real_sequencers_log_folds_to_proofs_of_every_fleets_newest_bundle(
        batches: list[list[tuple[str, int, bool]]]) -> None:
    """The same submissions through the real `Sequencer` (write/sequencer.py, its HEADS
    leaf step included) on tests/memory_store.py: the sequencer admits exactly what the
    model admits; every checkpoint ends with a HEADS leaf; the fold of the stored leaves
    checks every HEADS leaf; and a proof built from the stored log for every fleet
    verifies and names its newest bundle (a retirement as such), or its absence."""
    store, outcomes = asyncio.run(_through_the_sequencer(batches))
    assert store.violations == []
    model: dict[str, tuple[int, bool, int]] = {}
    for batch, results in zip(batches, outcomes, strict=True):
        for (fleet, sequence, retire), result in zip(batch, results, strict=True):
            head = model.get(fleet)
            if head is None or (sequence > head[0] and not head[1]):
                assert isinstance(result, Appended), (fleet, sequence, retire, result)
                model[fleet] = (sequence, retire, result.index)
            else:  # a duplicate (of a logged bundle), a rollback, an equivocation, a retired fleet
                assert not isinstance(result, Appended) or result.index == model[fleet][2], result
                assert isinstance(result, (Duplicate, SequencerError)), result
    leaves = [row.leaf for row in store.leaves]
    for cp in store.checkpoint_rows[1:]:
        assert is_heads_leaf(leaves[cp.tree_size - 1]), f"checkpoint of size {cp.tree_size} ends with a bundle"
    table = fold(leaves)  # raises HeadsMismatchError for a HEADS leaf that does not commit to it
    log = MemoryLog()
    for leaf in leaves:
        log.append(leaf)
    assert store.latest is not None and log.root() == store.latest.root
    log.table = table
    note = log.checkpoint(KEYS)  # the stored tree, signed with the vectors' (witnessed) keys
    for fleet, (sequence, retired, index) in model.items():
        proof = fleet_head_proof(log, fleet, note)
        if retired:
            with pytest.raises(FleetRetiredError) as info:
                verify_fleet_head(proof, POLICY, AT, fleet_id=fleet)
            head = info.value.head
        else:
            head = verify_fleet_head(proof, POLICY, AT, fleet_id=fleet)
        assert (head.fleet_id, head.sequence, head.leaf_index, head.retired) == (fleet, sequence, index, retired)
    for fleet in ABSENT + tuple(f for f in FLEETS if f not in model):
        with pytest.raises(FleetAbsentError):
            verify_fleet_head(fleet_head_proof(log, fleet, note), POLICY, AT, fleet_id=fleet)
