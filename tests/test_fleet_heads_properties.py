"""Properties of fleet heads (docs/fleet-heads.md), over generated logs:

* for any sequence of submissions (fleets interleaved, duplicates, rollbacks and
  submissions after a retirement refused, retirements), folding the log gives the
  sequencer's table, its rows in the order the fleets first appeared, every fleet's
  proof verifies and names its newest bundle (a retired one as a retirement), and
  any fleet id without a bundle gets a verified absence whose covering row is the one
  link of the chain that passes over it;
* the incremental `HeadsTable` root is the from-scratch RFC 6962 MTH of the entries
  (each row with the next fleet id in byte order, circular, computed here from the
  definition) in first-appearance order, and equals `from_rows` of its rows, however
  updates and reads interleave; a new fleet changes exactly two entries (its own and
  its predecessor's), a known fleet's newer row one;
* the same through the real `Sequencer` on the in-memory store, restarted between
  batches (so it rebuilds the table from the store's snapshot): what it admits, that
  every checkpoint ends with a HEADS leaf, that the fold of its stored leaves checks
  every HEADS leaf and yields a verifying proof for every fleet, and that the store
  keeps the rows in first-appearance order;
* any single mutation of a valid proof (a bit of any hash, any integer, a next fleet
  id, a dropped field, a substituted or nulled covering row) fails with a typed
  `VerificationFailure`: never another exception, never a verified outcome.
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
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet_head_vectors import NOW, MemoryLog, VectorKeys, bundle, canonical, fleet_head_proof
from logserver.bundle import (
    Admitted,
    Envelope,
    HeadsRow,
    HeadsTable,
    HeadsUpdateError,
    admit,
    bundle_row,
    covers,
    encode_leaf,
    fold,
    is_fleet_id,
    is_heads_leaf,
)
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
    model: fleet -> (newest sequence, retired, leaf index), in the order the fleets
    first appeared (a dict keeps its keys' first insertion order)."""
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


# Fleet ids that may or may not sort next to the submitting fleets: before, between,
# after them, sharing their prefixes; any other id a payload may carry.
_ID_CHARS = "-.0:AZ_abcfjz"
absent_ids = st.lists(
    st.one_of(st.sampled_from(("fleet-", "fleet-a", "fleet-bb", "fleet-c", "fleet-j0", "fleet-k", "Fleet-c",
                               "fleet", "fleet-b.", "a", "zz")),
              st.text(_ID_CHARS, min_size=1, max_size=9).filter(is_fleet_id),
              st.builds(lambda f, t: f + t, st.sampled_from(FLEETS), st.text(_ID_CHARS, min_size=1, max_size=3))),
    max_size=6,
)


def _check_absence(log: MemoryLog, note: str, fleet: str) -> None:
    with pytest.raises(FleetAbsentError) as info:
        verify_fleet_head(fleet_head_proof(log, fleet, note), POLICY, AT, fleet_id=fleet)
    absence = info.value.absence
    assert absence.heads.count == log.table.count
    if log.table.count == 0:
        assert absence.covering is None
        return
    assert absence.covering is not None and absence.next_fleet_id is not None
    # The one link of the chain that passes over the fleet id is the proof's.
    links = [(p, r.fleet_id, log.table.next_fleet_id(p)) for p, r in enumerate(log.table.rows)]
    assert [p for p, a, b in links if covers(a, b, fleet)] == [absence.position]
    assert (absence.covering.fleet_id, absence.next_fleet_id) == links[absence.position][1:]


@SETTINGS
@given(submissions, absent_ids)
def test_every_fleet_gets_its_newest_bundle_or_a_verified_absence(
        batches: list[list[tuple[str, int, bool]]], others: list[str]) -> None:
    log, model = _sequence(batches)
    folded = fold(log.leaves)
    assert folded.rows == log.table.rows and folded.root() == log.table.root()
    assert [r.fleet_id for r in folded.rows] == list(model)  # the order the fleets first appeared
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
        assert head.position == list(model).index(fleet)
        assert encode_leaf(head.envelope) == log.leaves[index]
    for fleet in ABSENT + tuple(f for f in FLEETS if f not in model) + tuple(o for o in others if o not in model):
        _check_absence(log, note, fleet)


# --- the incremental tree ------------------------------------------------------------------


operations = st.lists(
    st.tuples(st.text("abcdefgh", min_size=1, max_size=3), st.booleans(), st.booleans()),
    min_size=1, max_size=60,
)


def _entries(rows: list[HeadsRow]) -> list[bytes]:
    """The heads tree's leaves from the definition: each row's bytes, then its next
    fleet id in byte order (circular) with a one-byte length, in the rows' order."""
    ordered = sorted(r.fleet_id.encode("ascii") for r in rows)
    following = {k: ordered[(i + 1) % len(ordered)] for i, k in enumerate(ordered)}
    return [r.encode() + bytes((len(following[r.key]),)) + following[r.key] for r in rows]


def _reference_root(rows: list[HeadsRow]) -> bytes:
    compact = CompactRange()
    compact.extend(leaf_hash(e) for e in _entries(rows))
    return compact.root()


@SETTINGS
@given(operations)
def test_the_incremental_root_is_the_mth_of_the_entries_in_first_appearance_order(
        ops: list[tuple[str, bool, bool]]) -> None:
    table = HeadsTable()
    rows: dict[str, HeadsRow] = {}  # first appearance order: a replaced key keeps its place
    copies: list[tuple[HeadsTable, list[HeadsRow]]] = []
    for step, (fleet, retire, read_now) in enumerate(ops):
        head = rows.get(fleet)
        new = HeadsRow(fleet, 0 if head is None else head.sequence + 1, step, bytes([step]) * 32,
                       "retired" if retire else "active")
        if head is not None and head.retired:
            with pytest.raises(HeadsUpdateError):
                table.apply(new)
        else:
            assert table.apply(new) == (list(rows).index(fleet) if fleet in rows else len(rows))
            rows[fleet] = new
        # Reads after some operations only: the hashes catch up over several updates.
        if read_now or step == len(ops) - 1:
            ordered = list(rows.values())
            entries = _entries(ordered)
            assert table.rows == tuple(ordered)
            assert table.root() == _reference_root(ordered) == mth(entries)
            assert HeadsTable.from_rows(ordered).root() == table.root()
            position = step % len(ordered)
            verify_inclusion(position, len(ordered), leaf_hash(entries[position]), table.row_proof(position),
                             table.root())
            copies.append((table.copy(), ordered))
    # Every copy kept the table as it was when taken, whatever was applied since.
    for copied, ordered in copies:
        assert copied.rows == tuple(ordered) and copied.root() == _reference_root(ordered)


@SETTINGS
@given(operations)
def test_the_root_after_every_operation_and_the_entries_each_one_changes(ops: list[tuple[str, bool, bool]]) -> None:
    table = HeadsTable()
    rows: dict[str, HeadsRow] = {}
    before: list[bytes] = []
    for step, (fleet, _, _) in enumerate(ops):
        head = rows.get(fleet)
        rows[fleet] = HeadsRow(fleet, 0 if head is None else head.sequence + 1, step, bytes([step]) * 32)
        table.apply(rows[fleet])
        ordered = list(rows.values())
        after = [leaf_hash(e) for e in _entries(ordered)]
        assert table.root() == _reference_root(ordered)
        # The entries are the table's: each one's proof leads to its root.
        for p, h in enumerate(after):
            verify_inclusion(p, len(after), h, table.row_proof(p), table.root())
        changed = {p for p, h in enumerate(before) if after[p] != h}
        p = list(rows).index(fleet)
        if head is not None:  # a newer row of a known fleet: its own entry only
            assert changed == {p} and len(after) == len(before)
        elif before:  # a new fleet: appended, and its predecessor now links to it
            keys = sorted(r.key for r in ordered)
            predecessor = keys[keys.index(fleet.encode()) - 1].decode()
            assert p == len(before) and changed == {list(rows).index(predecessor)}
            assert table.next_fleet_id(list(rows).index(predecessor)) == fleet
        before = after


@SETTINGS
@given(st.lists(st.text("abcz.-", min_size=1, max_size=3).filter(is_fleet_id), min_size=1, max_size=12, unique=True),
       st.lists(st.text("abcz.-", min_size=1, max_size=4).filter(is_fleet_id), min_size=1, max_size=8))
def test_exactly_one_link_covers_each_absent_id(present: list[str], asked: list[str]) -> None:
    # `present` in the drawn order: the first-appearance order, not the byte order.
    table = HeadsTable.from_rows(HeadsRow(f, 0, i, bytes(32)) for i, f in enumerate(present))
    links = [(r.fleet_id, table.next_fleet_id(p)) for p, r in enumerate(table.rows)]
    for x in asked:
        covering = [p for p, (a, b) in enumerate(links) if covers(a, b, x)]
        if x in present:
            assert covering == []  # no link passes over a fleet that has a row
            with pytest.raises(KeyError):
                table.covering(x)
        else:
            assert covering == [table.covering(x)]


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
        elif key in ("fleet_id", "next_fleet_id"):
            out.append((f"change {name}", lambda _n, here=here, value=value: _set(here, value + "x")))
    return out


def _checkpoint_mutation(n: int) -> Mutation:
    """Flip a bit of the checkpoint's root hash (inside the signed note)."""
    def mutate(obj: dict[str, Any]) -> None:
        origin, size, root, rest = obj["checkpoint"].split("\n", 3)
        obj["checkpoint"] = "\n".join((origin, size, _flip_bit(root, n), rest))
    return mutate


def _swaps(obj: dict[str, Any], log: MemoryLog) -> list[tuple[str, Callable[[int], Mutation]]]:
    """Mutations that need the table: other rows (each with its valid proof) in place
    of the proof's, other chain links, an absence claimed for a present fleet."""
    out: list[tuple[str, Callable[[int], Mutation]]] = []
    table = log.table
    fleets = [r.fleet_id for r in table.rows]

    def others(position: int) -> list[int]:
        return [p for p in range(table.count) if p != position]

    def relink(where: str) -> Callable[[int], Mutation]:
        # Another fleet of the table (or the one asked for) as the row's next fleet id.
        def make(n: int) -> Mutation:
            choices = [f for f in [*fleets, obj["fleet_id"]] if f != obj[where]["next_fleet_id"]]
            return _set((where, "next_fleet_id"), choices[n % len(choices)])
        return make

    covering = obj.get("covering")
    if covering is not None:
        def other(n: int) -> Mutation:
            positions = others(covering["position"])
            if not positions:
                return _set(("covering", "position"), covering["position"] + 1)
            return _set(("covering",), table.proved_row(positions[n % len(positions)]).to_dict())
        out.append(("substitute the covering row", other))
        out.append(("null the covering row", lambda _n: _set(("covering",), None)))
        out.append(("relink the covering row", relink("covering")))
    if "row" in obj:
        out.append(("relink the row", relink("row")))
        if table.count > 1:
            def other_row(n: int) -> Mutation:
                positions = others(obj["row"]["position"])
                return _set(("row",), table.proved_row(positions[n % len(positions)]).to_dict())
            out.append(("substitute the row", other_row))

        def claim_absence(n: int) -> Mutation:
            # The row whose link ends at the fleet (its predecessor), or any other row,
            # each with its valid proof: no link passes over a fleet that has a row.
            fleet = obj["row"]["fleet_id"]
            predecessor = next(p for p in range(table.count) if table.next_fleet_id(p) == fleet)
            position = [predecessor, *range(table.count)][n % (table.count + 1)]

            def mutate(o: dict[str, Any]) -> None:
                del o["row"], o["bundle"]
                o["covering"] = table.proved_row(position).to_dict()
            return mutate
        out.append(("claim absence with a valid row", claim_absence))
    return out


@functools.cache
def _fixture() -> tuple[MemoryLog, str]:
    # The fleets first appear out of byte order: positions f 0, b 1, j 2, h 3, d 4.
    log = MemoryLog()
    log.batch([_envelope("fleet-f", 1, False), _envelope("fleet-b", 1, False), _envelope("fleet-j", 1, False)])
    log.batch([_envelope("fleet-b", 2, False), _envelope("fleet-h", 1, True), _envelope("fleet-f", 4, False)])
    log.batch([_envelope("fleet-d", 0, False)])
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


@pytest.mark.parametrize("fleet", ["fleet-b", "fleet-d", "fleet-h", "fleet-a", "fleet-c", "fleet-z"])
def test_every_mutation_in_the_catalogue_fails_with_a_typed_error(fleet: str) -> None:
    # The property above samples the catalogue; this walks all of it, a few draws each.
    log, note = _fixture()
    valid = fleet_head_proof(log, fleet, note)
    obj = json.loads(valid)
    candidates = _mutations(obj) + _swaps(obj, log) + [("flip a bit of the checkpoint root", _checkpoint_mutation)]
    for name, make in candidates:
        for n in (0, 1, 5, 258):
            mutated = copy.deepcopy(obj)
            make(n)(mutated)
            proof = canonical(mutated)
            if proof == valid:
                continue  # a draw that changes nothing (a retype to the value it had)
            with pytest.raises(VerificationFailure) as info:
                verify_fleet_head(proof, POLICY, AT, fleet_id=fleet)
            assert not isinstance(info.value, (FleetAbsentError, FleetRetiredError)), (name, n, info.value)


def test_the_mutation_catalogue_covers_every_field() -> None:
    # The property above draws from this catalogue: it must reach every field.
    log, note = _fixture()
    present = json.loads(fleet_head_proof(log, "fleet-d", note))
    absent = json.loads(fleet_head_proof(log, "fleet-c", note))
    names = {n for n, _ in _mutations(present) + _swaps(present, log) + _mutations(absent) + _swaps(absent, log)}
    for want in ("drop version", "drop fleet_id", "drop checkpoint", "drop heads_leaf/index", "drop row/proof",
                 "drop row/next_fleet_id", "drop bundle", "drop bundle/envelope", "drop bundle/inclusion_proof",
                 "drop covering", "drop covering/next_fleet_id",
                 "flip a bit of heads_leaf/leaf", "flip a bit of heads_leaf/inclusion_proof",
                 "flip a bit of row/proof", "flip a bit of row/leaf_hash", "flip a bit of bundle/inclusion_proof",
                 "flip a bit of covering/proof", "flip a bit of covering/leaf_hash",
                 "change version", "change heads_leaf/index", "change row/position", "change row/sequence",
                 "change row/leaf_index", "change row/next_fleet_id", "change covering/position",
                 "change covering/sequence", "change covering/fleet_id", "change covering/next_fleet_id",
                 "toggle row/status", "toggle covering/status", "change fleet_id", "change row/fleet_id",
                 "substitute the row", "substitute the covering row", "null the covering row",
                 "relink the row", "relink the covering row", "claim absence with a valid row",
                 "retype bundle/envelope/payload", "retype bundle/envelope/signatures/0/keyid", "retype checkpoint",
                 "retype covering", "retype covering/next_fleet_id", "retype row/next_fleet_id",
                 "drop bundle/envelope/signatures/0/sig"):
        assert want in names, want
    assert not any("neighbours" in n for n in names)


def test_each_table_mutation_fails_at_the_check_it_targets() -> None:
    # The typed failure of the property above, pinned for the mutations of the chained
    # layout: a changed link breaks the entry's proof; another valid row, or none, is
    # not a link over the fleet; a present fleet's predecessor does not cover it.
    log, note = _fixture()
    absent = json.loads(fleet_head_proof(log, "fleet-c", note))  # covered by fleet-b -> fleet-d
    present = json.loads(fleet_head_proof(log, "fleet-d", note))
    assert (absent["covering"]["fleet_id"], absent["covering"]["next_fleet_id"]) == ("fleet-b", "fleet-d")
    swaps = dict(_swaps(absent, log) + _swaps(present, log))
    cases = [
        (absent, "relink the covering row", "FleetHeadRootError", "fleet-c"),
        (absent, "substitute the covering row", "AbsenceProofError", "fleet-c"),
        (absent, "null the covering row", "AbsenceProofError", "fleet-c"),
        (present, "relink the row", "FleetHeadRootError", "fleet-d"),
        (present, "claim absence with a valid row", "AbsenceProofError", "fleet-d"),
    ]
    for obj, name, error, fleet in cases:
        for n in range(6):
            mutated = copy.deepcopy(obj)
            swaps[name](n)(mutated)
            with pytest.raises(VerificationFailure) as info:
                verify_fleet_head(canonical(mutated), POLICY, AT, fleet_id=fleet)
            assert type(info.value).__name__ == error, (name, n, info.value)


# --- the real sequencer --------------------------------------------------------------------

# The sequencer's admission time: inside the bundles' default validity window.
ADMITTED_AT = datetime(2025, 6, 1, tzinfo=UTC)
SEQUENCER_KEY = LogKey("example.com/heads-properties", Ed25519PrivateKey.from_private_bytes(b"\x5a" * 32))


@functools.cache
def _admitted(fleet: str, sequence: int, retired: bool) -> Admitted:
    return admit(_envelope(fleet, sequence, retired).to_json(), KEYS.authorities.authority_set, ADMITTED_AT)


async def _through_the_sequencer(batches: list[list[tuple[str, int, bool]]],
                                 restarts: list[bool]) -> tuple[MemoryStore, list[list]]:
    """Each batch submitted at once (one batch of the real Sequencer, on the in-memory
    store), by a new Sequencer where `restarts` says so (it then rebuilds the heads
    table from the store's snapshot); returns the store and each batch's outcomes."""
    store = MemoryStore()
    store.initialize(SEQUENCER_KEY.sign_checkpoint(0, EMPTY_ROOT, 1000), 1000)

    def sequencer() -> Sequencer:
        return Sequencer(store, SEQUENCER_KEY.sign_checkpoint, max_batch_delay_ms=0, checkpoint_interval_s=3600)

    seq = sequencer()
    outcomes = []
    for batch, restart in zip(batches, restarts + [False] * len(batches), strict=False):
        if restart:
            seq = sequencer()
        async with running(seq):
            futures = []
            for fleet, sequence, retire in batch:  # no await in between: one batch
                a = _admitted(fleet, sequence, retire)
                futures.append(seq.submit(a.leaf, leaf_hash(a.leaf), a.fleet_id, a.sequence, a.payload_digest,
                                          retired=a.retired))
            outcomes.append(await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 30))
    return store, outcomes


async def _snapshot(store: MemoryStore) -> list[str]:
    async with store.sequencing(1000) as tx:
        return [fleet for fleet, *_ in (await tx.read_heads()).rows]


@SETTINGS
@given(submissions, st.lists(st.booleans(), max_size=5))
def test_the_real_sequencers_log_folds_to_proofs_of_every_fleets_newest_bundle(
        batches: list[list[tuple[str, int, bool]]], restarts: list[bool]) -> None:
    """The same submissions through the real `Sequencer` (write/sequencer.py, its HEADS
    leaf step included) on tests/memory_store.py, restarted between some batches: the
    sequencer admits exactly what the model admits; every checkpoint ends with a type-3
    HEADS leaf; the fold of the stored leaves checks every HEADS leaf; the store's
    snapshot keeps the rows in first-appearance order (the one the sequencer rebuilds
    the tree in); and a proof built from the stored log for every fleet verifies and
    names its newest bundle (a retirement as such), or its absence."""
    store, outcomes = asyncio.run(_through_the_sequencer(batches, restarts))
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
        assert leaves[cp.tree_size - 1][0] == 3, "a type-3 HEADS leaf (the chained layout)"
    table = fold(leaves)  # raises HeadsMismatchError for a HEADS leaf that does not commit to it
    assert [r.fleet_id for r in table.rows] == list(model) == asyncio.run(_snapshot(store))
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
        _check_absence(log, note, fleet)
