"""Fleet-head proof test vectors (docs/fleet-heads.md): an in-memory log built with the
pure code, and the valid and invalid proofs written to tests/testdata/fleet-heads/.

    python3 tests/fleet_head_vectors.py [DIRECTORY]   # default: tests/testdata/fleet-heads
    python3 tests/fleet_head_vectors.py --sizes       # proof sizes at 10M leaves, 10,000 fleets

Everything is deterministic: fixed key seeds, Ed25519 authorities (ECDSA signatures
are randomised), fixed signing times and the canonical JSON of
formats/fleet_head.py, so the files are byte-stable; tests/test_fleet_head_vectors.py
regenerates them and compares. The format of the directory is in its README.md.

The proofs are format version 2 over the chained layout (docs/fleet-heads.md, "The
heads tree"): tree positions in the order fleets first appeared, each entry naming the
next fleet id in byte order, an absent fleet proved by the one covering row.

`MemoryLog` and `fleet_head_proof` are also what tests/test_fleet_heads_properties.py
builds its logs and proofs with.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: tests/ is not a package
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bundle_factory import Authorities, make_authorities, make_authority, make_envelope, make_payload
from logserver.bundle import (
    Envelope,
    HeadsLeaf,
    HeadsRow,
    HeadsTable,
    bundle_row,
    decode_leaf,
    encode_leaf,
    is_heads_leaf,
)
from logserver.bundle.heads import LEGACY_HEADS_LEAF_TYPE, decode_heads_leaf, legacy_sorted_root
from logserver.client import TrustPolicy
from logserver.formats import Checkpoint, CosignatureSigner, Ed25519NoteSigner, parse_checkpoint, parse_note
from logserver.formats.checkpoint import sign_checkpoint
from logserver.formats.fleet_head import BundleProof, HeadsLeafProof, ProvedRow, build_fleet_head_proof
from logserver.merkle import EMPTY_ROOT, CompactRange, inclusion_proof, leaf_hash, node_hash

DEFAULT_DIRECTORY = Path(__file__).resolve().parent / "testdata" / "fleet-heads"

ORIGIN = "example.com/fleet-heads-vectors"
WITNESS = "example.com/witness-1"
SIGNED_AT = 1767225600  # 2026-01-01T00:00:00Z: the log's cosignature/v1 time
WITNESSED_AT = SIGNED_AT + 5
NOW = SIGNED_AT + 60
MAX_AGE_S = 300


# Ed25519 for both roles: ECDSA signatures are randomised, the vectors must not be.
AUTHORITIES = make_authorities("ed25519", "ed25519")


def _seeded_key(label: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"fleet-heads vectors " + label.encode()).digest())


@dataclass(frozen=True)
class VectorKeys:
    """The deterministic keys of the vectors: the log's, a witness's, the authorities."""

    log: Ed25519PrivateKey = field(default_factory=lambda: _seeded_key("log"))
    witness: Ed25519PrivateKey = field(default_factory=lambda: _seeded_key("witness"))
    other_log: Ed25519PrivateKey = field(default_factory=lambda: _seeded_key("other log"))
    authorities: Authorities = AUTHORITIES

    @property
    def log_vkey(self) -> str:
        return Ed25519NoteSigner(ORIGIN, self.log).vkey

    @property
    def witness_vkey(self) -> str:
        return CosignatureSigner(WITNESS, self.witness).vkey

    def policy_text(self, witnessed: bool) -> str:
        if not witnessed:
            return f"log {self.log_vkey}\nquorum none\n"
        return f"log {self.log_vkey}\nwitness w1 {self.witness_vkey}\nquorum w1\n"

    def policy(self, witnessed: bool = True, max_age_s: int | None = MAX_AGE_S) -> TrustPolicy:
        keys = [a.authority_key() for a in self.authorities.all]
        return TrustPolicy.from_parts(keys, self.policy_text(witnessed), max_age_s=max_age_s)

    def sign(self, size: int, root: bytes, *, log_time: int = SIGNED_AT, witness_time: int | None = WITNESSED_AT,
             log_key: Ed25519PrivateKey | None = None) -> str:
        """The checkpoint note: the log's two signatures and, unless `witness_time` is
        None, the witness's cosignature."""
        key = self.log if log_key is None else log_key
        signers: list[Any] = [Ed25519NoteSigner(ORIGIN, key), CosignatureSigner(ORIGIN, key).at(log_time)]
        if witness_time is not None:
            signers.append(CosignatureSigner(WITNESS, self.witness).at(witness_time))
        return sign_checkpoint(Checkpoint(ORIGIN, size, root), signers)


class MemoryLog:
    """A log in memory: leaves, their RFC 6962 tree, and the heads table kept as the
    sequencer will keep it (each batch of bundles, then one HEADS leaf)."""

    def __init__(self) -> None:
        self.leaves: list[bytes] = []
        self.hashes: list[bytes] = []
        self.table = HeadsTable()
        self.previous = 0  # index of the last HEADS leaf; 0: none yet
        self._nodes: dict[tuple[int, int], bytes] = {}

    @property
    def size(self) -> int:
        return len(self.leaves)

    def append(self, leaf: bytes) -> int:
        self.leaves.append(leaf)
        self.hashes.append(leaf_hash(leaf))
        return len(self.leaves) - 1

    def pop(self) -> bytes:
        """Remove the last leaf (to replace it: a lying log's HEADS leaf)."""
        self.hashes.pop()
        self._nodes = {k: v for k, v in self._nodes.items() if (k[1] + 1) << k[0] <= self.size - 1}
        return self.leaves.pop()

    def add_bundles(self, envelopes: Iterable[Envelope], *, apply: bool = True) -> list[int]:
        """Append bundle leaves; with `apply`, each updates the heads table (raises
        `HeadsUpdateError` for one the log would refuse)."""
        indices = []
        for envelope in envelopes:
            leaf = encode_leaf(envelope)
            if apply:
                self.table.apply(bundle_row(self.size, leaf))
            indices.append(self.append(leaf))
        return indices

    def add_heads(self, heads: HeadsLeaf | None = None) -> int:
        """Append the HEADS leaf of the table as it stands (or `heads`, to lie)."""
        index = self.append((heads or self.table.heads_leaf(self.previous)).encode())
        self.previous = index
        return index

    def batch(self, envelopes: Iterable[Envelope]) -> int:
        self.add_bundles(envelopes)
        return self.add_heads()

    def node(self, level: int, index: int) -> bytes:
        if level == 0:
            return self.hashes[index]
        key = (level, index)
        if key not in self._nodes:
            self._nodes[key] = node_hash(self.node(level - 1, 2 * index), self.node(level - 1, 2 * index + 1))
        return self._nodes[key]

    def root(self, size: int | None = None) -> bytes:
        compact = CompactRange()
        compact.extend(self.hashes[: self.size if size is None else size])
        return compact.root()

    def inclusion(self, index: int, size: int | None = None) -> tuple[bytes, ...]:
        return tuple(inclusion_proof(index, self.size if size is None else size,
                                     lambda ids: [self.node(level, i) for level, i in ids]))

    def checkpoint(self, keys: VectorKeys, **signing: Any) -> str:
        return keys.sign(self.size, self.root(), **signing)


def fleet_head_proof(log: MemoryLog, fleet_id: str, note: str, *, table: HeadsTable | None = None) -> bytes:
    """The fleet-head proof of `fleet_id` at the note's size, from the log's current
    heads table (which must be the one its last HEADS leaf commits to)."""
    size = parse_checkpoint(parse_note(note).text).size
    assert size >= 1 and is_heads_leaf(log.leaves[size - 1])
    table = log.table if table is None else table
    heads = HeadsLeafProof(size - 1, log.leaves[size - 1], log.inclusion(size - 1, size))
    position = table.position(fleet_id)
    if position is None:
        # The absence proof's one row: the row whose chain link passes over fleet_id
        # (docs/fleet-heads.md, "Absence"); none in an empty table.
        covering = table.covering(fleet_id)
        return build_fleet_head_proof(fleet_id, note, heads, absent=True,
                                      covering=None if covering is None else table.proved_row(covering))
    row = table.proved_row(position)
    envelope = decode_leaf(log.leaves[row.leaf_index])
    bundle = BundleProof(envelope.to_dict(), log.inclusion(row.leaf_index, size))
    return build_fleet_head_proof(fleet_id, note, heads, row=row, bundle=bundle)


def bundle(fleet_id: str, sequence: int, *, status: str | None = None, authorities: Authorities | None = None,
           signers: Sequence[Any] | None = None) -> Envelope:
    """A dual-signed bundle of the fleet (deterministic: Ed25519 authorities)."""
    overrides: dict[str, object] = {"fleet_id": fleet_id, "sequence": sequence}
    if status is not None:
        overrides["status"] = status
    return make_envelope(make_payload(**overrides), authorities=authorities or AUTHORITIES, signers=signers)


# --- the vectors ----------------------------------------------------------------------


def canonical(obj: object) -> bytes:
    """The builder's serialisation (formats/fleet_head.py), for mutated objects."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def flip_b64(text: str, byte: int = 0, bit: int = 0) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[byte] ^= 1 << bit
    return base64.b64encode(bytes(raw)).decode("ascii")


@dataclass
class Vector:
    name: str
    proof: bytes
    expect: str  # "valid" or the error class name
    description: str
    policy: str = "witnessed"
    fleet_id: str | None = None
    now: int = NOW
    max_age_s: int = MAX_AGE_S
    outcome: dict[str, Any] | None = None  # valid only: present / absent / retired and what
    state: dict[str, Any] | None = None  # ClientState "heads" seen before

    def expect_json(self) -> bytes:
        obj: dict[str, Any] = {
            "description": self.description,
            "expect": self.expect,
            "fleet_id": self.fleet_id,
            "max_age_s": self.max_age_s,
            "now": self.now,
            "policy": self.policy,
        }
        if self.outcome is not None:
            obj["outcome"] = self.outcome
        if self.state is not None:
            obj["state"] = self.state
        return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("ascii")


MAIN_BATCHES: tuple[tuple[tuple[str, int, str | None], ...], ...] = (
    (("fleet-e", 1, None), ("fleet-a", 1, None), ("fleet-r", 1, None)),
    (("fleet-a", 2, None), ("fleet-g", 1, None), ("fleet-c", 1, None)),
    (("fleet-c", 5, None), ("fleet-r", 2, "retired"), ("fleet-a", 3, None)),
)
"""The main log's three batches of (fleet, sequence, status). The fleets first appear
in the order e, a, r, g, c, which is not their byte order (a, c, e, g, r): a verifier
that placed rows by sorted rank, or a log that kept them sorted, fails the vectors."""


class _Main:
    """The main log: five fleets over three batches, one retired.

    batch 1: fleet-e 1, fleet-a 1, fleet-r 1            HEADS at 3  (previous 0)
    batch 2: fleet-a 2, fleet-g 1, fleet-c 1            HEADS at 7  (previous 3)
    batch 3: fleet-c 5, fleet-r 2 (retired), fleet-a 3  HEADS at 11 (previous 7)

    Table at 12, by position (first appearance), with each entry's next fleet id:
    0 fleet-e 1 (leaf 0) -> fleet-g, 1 fleet-a 3 (10) -> fleet-c, 2 fleet-r 2 retired
    (9) -> fleet-a (the greatest id names the smallest), 3 fleet-g 1 (5) -> fleet-r,
    4 fleet-c 5 (8) -> fleet-e. Batch 2 rewrote two links besides its new entries:
    fleet-g's arrival changed fleet-e's (fleet-r -> fleet-g), fleet-c's fleet-a's
    (fleet-e -> fleet-c).
    """

    def __init__(self, keys: VectorKeys) -> None:
        self.keys = keys
        self.log = MemoryLog()
        for batch in MAIN_BATCHES:
            self.log.batch([bundle(fleet, sequence, status=status) for fleet, sequence, status in batch])
        self.note = self.log.checkpoint(keys)

    def proof(self, fleet_id: str, note: str | None = None) -> bytes:
        return fleet_head_proof(self.log, fleet_id, self.note if note is None else note)

    def obj(self, fleet_id: str) -> dict[str, Any]:
        return json.loads(self.proof(fleet_id))

    def mutated(self, fleet_id: str, mutate: Callable[[dict[str, Any]], None]) -> bytes:
        obj = self.obj(fleet_id)
        mutate(obj)
        return canonical(obj)


def _present(sequence: int, leaf_index: int, position: int) -> dict[str, Any]:
    return {"result": "present", "sequence": sequence, "leaf_index": leaf_index, "position": position}


def _absent(position: int | None = None, fleet_id: str = "", next_fleet_id: str = "") -> dict[str, Any]:
    """An absence's outcome: the covering row (None for an empty table), as
    `VerifiedFleetAbsence.to_dict` writes it."""
    if position is None:
        return {"result": "absent", "covering": None}
    return {"result": "absent",
            "covering": {"position": position, "fleet_id": fleet_id, "next_fleet_id": next_fleet_id}}


def _digest_of(log: MemoryLog, leaf_index: int) -> str:
    return hashlib.sha256(decode_leaf(log.leaves[leaf_index]).payload).hexdigest()


def chained_tree(entries: Sequence[tuple[HeadsRow, str]]) -> tuple[bytes, list[ProvedRow]]:
    """A heads tree over `entries` (row, next fleet id) in the order given, whatever they
    link to: a lying log's. Its root and every entry as a proved row."""
    tree = MemoryLog()  # only as an RFC 6962 tree over the entry bytes
    for row, next_id in entries:
        tree.append(row.entry(next_id))
    proved = [ProvedRow(p, row.fleet_id, row.sequence, row.leaf_index, row.leaf_hash, row.status,
                        tree.inclusion(p), next_id) for p, (row, next_id) in enumerate(entries)]
    return tree.root(), proved


def _lying_absence(keys: VectorKeys, fleets: Sequence[str], links: Sequence[str], asked: str,
                   covering: int, *, leaf_index: int | None = None) -> bytes:
    """A log of one bundle per fleet and a HEADS leaf over entries linking to `links`
    (a lie the fold would catch: HeadsMismatchError), validly signed, and its proof that
    `asked` is absent, covered by the entry at position `covering` (naming `leaf_index`
    instead of its bundle's index, when given: another lie)."""
    liar = MemoryLog()
    liar.add_bundles([bundle(fleet, 1) for fleet in fleets])
    rows = list(liar.table)
    if leaf_index is not None:
        r = rows[covering]
        rows[covering] = HeadsRow(r.fleet_id, r.sequence, leaf_index, r.leaf_hash, r.status)
    root, proved = chained_tree(list(zip(rows, links, strict=True)))
    index = liar.add_heads(HeadsLeaf(0, len(fleets), root))
    note = liar.checkpoint(keys)
    heads = HeadsLeafProof(index, liar.leaves[index], liar.inclusion(index))
    return build_fleet_head_proof(asked, note, heads, absent=True, covering=proved[covering])


def _release_0_2_0_absence(keys: VectorKeys, fleet_id: str) -> bytes:
    """The proof of `fleet_id`'s absence as release 0.2.0 served it (format version 1):
    the main log's bundles with type-2 HEADS leaves over the sorted layout (the rows'
    own bytes, sorted by fleet id), and the two neighbours in sorted order."""
    old = MemoryLog()
    for batch in MAIN_BATCHES:
        old.add_bundles([bundle(fleet, sequence, status=status) for fleet, sequence, status in batch])
        old.add_heads(HeadsLeaf(old.previous, old.table.count, legacy_sorted_root(old.table), LEGACY_HEADS_LEAF_TYPE))
    ranked = sorted(old.table, key=lambda r: r.key)
    tree = MemoryLog()  # the sorted layout's tree: leaves are HeadsRow bytes
    for row in ranked:
        tree.append(row.encode())
    assert tree.root() == legacy_sorted_root(old.table)
    key = fleet_id.encode("ascii")
    after = next(i for i, r in enumerate(ranked) if r.key > key)
    neighbours = [{"position": p, "fleet_id": r.fleet_id, "sequence": r.sequence, "leaf_index": r.leaf_index,
                   "leaf_hash": r.leaf_hash.hex(), "status": r.status,
                   "proof": base64.b64encode(b"".join(tree.inclusion(p))).decode("ascii")}
                  for p, r in ((p, ranked[p]) for p in (after - 1, after))]
    index = old.size - 1
    return canonical({
        "version": 1, "fleet_id": fleet_id, "checkpoint": old.checkpoint(keys),
        "heads_leaf": {"index": index, "leaf": base64.b64encode(old.leaves[index]).decode("ascii"),
                       "inclusion_proof": base64.b64encode(b"".join(old.inclusion(index))).decode("ascii")},
        "neighbours": neighbours,
    })


def build_vectors(keys: VectorKeys | None = None) -> list[Vector]:
    keys = keys or VectorKeys()
    main = _Main(keys)
    log = main.log
    table = log.table
    assert [r.fleet_id for r in table] == ["fleet-e", "fleet-a", "fleet-r", "fleet-g", "fleet-c"]
    vectors: list[Vector] = []

    def add(*args: Any, **kwargs: Any) -> None:
        vectors.append(Vector(*args, **kwargs))

    # --- valid ---------------------------------------------------------------------------
    add("present", main.proof("fleet-a"), "valid",
        "fleet-a's newest of three bundles (sequence 3, leaf 10), row 1 of 5 (the second fleet to appear, "
        "the first in byte order), linking to fleet-c; witnessed",
        outcome=_present(3, 10, 1))
    add("present-log-only", main.proof("fleet-c"), "valid",
        "fleet-c's head (row 4, the last to appear) under a policy without witnesses: freshness rests on the "
        "log's own signed time",
        policy="log-only", outcome={**_present(5, 8, 4), "freshness": "log"})
    add("present-first-row", main.proof("fleet-e"), "valid",
        "fleet-e, row 0 of 5 (the first fleet to appear, the third in byte order), its only bundle at leaf 0",
        outcome=_present(1, 0, 0))
    add("absent-between", main.proof("fleet-b"), "valid",
        "fleet-b has no bundle: the covering row is fleet-a's (row 1), whose link fleet-a -> fleet-c passes "
        "over it", outcome=_absent(1, "fleet-a", "fleet-c"))
    add("absent-covering-last-row", main.proof("fleet-d"), "valid",
        "fleet-d has no bundle: the covering row is the tree's last, fleet-c's (row 4), link fleet-c -> fleet-e",
        outcome=_absent(4, "fleet-c", "fleet-e"))
    add("absent-before-first", main.proof("aaa"), "valid",
        "'aaa' sorts before every fleet: the covering row is the greatest, fleet-r (row 2), whose wrapping link "
        "fleet-r -> fleet-a passes below fleet-a", outcome=_absent(2, "fleet-r", "fleet-a"))
    add("absent-after-last", main.proof("zeta"), "valid",
        "'zeta' sorts after every fleet: the covering row is fleet-r (row 2, retired), whose wrapping link "
        "fleet-r -> fleet-a passes above fleet-r", outcome=_absent(2, "fleet-r", "fleet-a"))
    add("retired", main.proof("fleet-r"), "valid",
        "fleet-r's newest bundle (sequence 2, leaf 9) says status retired: FleetRetiredError carries it",
        outcome={"result": "retired", "sequence": 2, "leaf_index": 9, "position": 2})

    empty = MemoryLog()
    empty.add_heads(HeadsLeaf(0, 0, EMPTY_ROOT))
    empty_note = empty.checkpoint(keys)
    add("absent-empty-table", fleet_head_proof(empty, "fleet-a", empty_note), "valid",
        "a one-leaf log whose leaf is the HEADS leaf of an empty table: covering null", outcome=_absent())

    single = MemoryLog()
    single.batch([bundle("fleet-m", 0)])
    single_note = single.checkpoint(keys)
    add("absent-single-row-before", fleet_head_proof(single, "fleet-b", single_note), "valid",
        "one row (fleet-m), linking to itself: its link covers every other id; fleet-b sorts before it",
        outcome=_absent(0, "fleet-m", "fleet-m"))
    add("absent-single-row-after", fleet_head_proof(single, "fleet-z", single_note), "valid",
        "one row (fleet-m), linking to itself: its link covers every other id; fleet-z sorts after it",
        outcome=_absent(0, "fleet-m", "fleet-m"))
    add("present-older-head-seen", main.proof("fleet-a"), "valid",
        "the client saw fleet-a's sequence 2 before: sequence 3 is newer",
        outcome=_present(3, 10, 1),
        state={"fleet-a": {"sequence": 2, "payload_digest": _digest_of(log, 4), "status": "active",
                           "origin": ORIGIN, "index": 4}})

    # --- the proof's form: MalformedFleetHeadError -----------------------------------------
    present = main.proof("fleet-a")
    malformed = "MalformedFleetHeadError"

    def bad(name: str, proof: bytes, description: str, **kwargs: Any) -> None:
        add(name, proof, malformed, description, **kwargs)

    bad("format-trailing-data", present + b"{}", "a second JSON value after the proof")
    assert present.count(b'"version":2') == 1
    bad("format-duplicate-key", present.replace(b'"version":2', b'"version":2,"version":2'),
        "the key 'version' twice")
    bad("format-unknown-field", main.mutated("fleet-a", lambda o: o.update(extra=1)), "an unknown top-level field")
    bad("format-missing-field", main.mutated("fleet-a", lambda o: o["row"].pop("status")), "row without status")
    bad("format-missing-next-fleet-id", main.mutated("fleet-a", lambda o: o["row"].pop("next_fleet_id")),
        "row without next_fleet_id (a version 1 row)")
    bad("format-bad-next-fleet-id", main.mutated("fleet-b", lambda o: o["covering"].update(next_fleet_id="fleet/c")),
        "covering.next_fleet_id with a '/'")
    bad("format-row-and-covering", main.mutated("fleet-a", lambda o: o.update(covering=None)),
        "both row/bundle (present) and covering (absent)")
    bad("format-absent-without-covering", main.mutated("fleet-b", lambda o: o.pop("covering")),
        "an absence without the covering field (an empty table says covering null)")
    bad("format-covering-array", main.mutated("fleet-b", lambda o: o.update(
        covering=[o["covering"], _row_json(table, 4)])), "covering as an array of two rows")
    bad("format-version-1", _release_0_2_0_absence(keys, "fleet-b"),
        "fleet-b's absence as release 0.2.0 served it: version 1, the sorted layout's neighbours fleet-a and "
        "fleet-c, a type-2 HEADS leaf, validly signed: refused by its version number")
    bad("format-version-3", main.mutated("fleet-a", lambda o: o.update(version=3)), "version 3")
    bad("format-base64-pad-bits", main.mutated("fleet-a", lambda o: o["heads_leaf"].update(
        leaf=_set_pad_bits(o["heads_leaf"]["leaf"]))), "heads_leaf.leaf: base64 with non-zero pad bits")
    bad("format-base64-urlsafe", main.mutated("fleet-a", lambda o: o["row"].update(
        proof=_urlsafe(o["row"]["proof"]))), "row.proof in the URL-safe alphabet")
    bad("format-leaf-hash-short", main.mutated("fleet-a", lambda o: o["row"].update(
        leaf_hash=o["row"]["leaf_hash"][:62])), "row.leaf_hash of 31 bytes")
    bad("format-leaf-hash-uppercase", main.mutated("fleet-a", lambda o: o["row"].update(
        leaf_hash=o["row"]["leaf_hash"].upper())), "row.leaf_hash in upper-case hex")
    bad("format-proof-partial-hash", main.mutated("fleet-a", lambda o: o["row"].update(
        proof=base64.b64encode(base64.b64decode(o["row"]["proof"]) + b"\x00").decode())),
        "row.proof of 32k + 1 bytes")
    bad("format-integer-too-large", main.mutated("fleet-a", lambda o: o["row"].update(sequence=2**63)),
        "row.sequence = 2^63")
    bad("format-integer-negative", main.mutated("fleet-a", lambda o: o["heads_leaf"].update(index=-1)),
        "heads_leaf.index = -1")
    bad("format-integer-fraction", main.mutated("fleet-a", lambda o: o["row"].update(position=1.0)),
        "row.position written 1.0")
    bad("format-heads-leaf-48-bytes", main.mutated("fleet-a", lambda o: o["heads_leaf"].update(
        leaf=base64.b64encode(base64.b64decode(o["heads_leaf"]["leaf"])[:48]).decode())),
        "heads_leaf.leaf of 48 bytes")
    bad("format-bad-fleet-id", main.mutated("fleet-b", lambda o: o.update(fleet_id="fleet/b")),
        "fleet_id with a '/'")
    bad("format-not-an-object", b"[" + present + b"]", "a JSON array")
    bad("format-invalid-utf8", present.replace(b'"fleet-a"', b'"fleet-\xff"', 1), "invalid UTF-8")
    bad("format-envelope-no-signatures", main.mutated("fleet-a", lambda o: o["bundle"]["envelope"].pop(
        "signatures")), "the envelope without signatures (the DSSE profile of docs/formats.md)")
    bad("format-checkpoint-garbage", main.mutated("fleet-a", lambda o: o.update(
        checkpoint=o["checkpoint"].replace("\n12\n", "\n012\n"))), "the checkpoint size written 012")

    # --- the checkpoint ----------------------------------------------------------------------
    add("checkpoint-signature-flipped", main.mutated("fleet-a", lambda o: o.update(
        checkpoint=_flip_signature(o["checkpoint"], 0))), "CheckpointVerificationError",
        "a bit of the log's Ed25519 signature flipped")
    add("checkpoint-other-log-key", main.proof("fleet-a", log.checkpoint(keys, log_key=keys.other_log)),
        "CheckpointVerificationError", "the checkpoint signed by another key under the log's origin")
    add("checkpoint-no-witness", main.proof("fleet-a", log.checkpoint(keys, witness_time=None)),
        "WitnessQuorumError", "the witness's cosignature line removed; the policy's quorum is that witness")

    # --- freshness: StaleFleetHeadError ---------------------------------------------------------
    stale = "StaleFleetHeadError"
    add("stale", present, stale, f"now is {MAX_AGE_S + 1000} s after the witness cosigned",
        now=WITNESSED_AT + MAX_AGE_S + 1000)
    add("stale-just-over", present, stale, "now is max_age + 1 s after the witness cosigned",
        now=WITNESSED_AT + MAX_AGE_S + 1)
    add("stale-witness-old", main.proof("fleet-a", log.checkpoint(keys, witness_time=SIGNED_AT - 3600)), stale,
        "the log signed just now, but the witness cosigned an hour earlier: witnesses decide")
    add("stale-witness-future", main.proof("fleet-a", log.checkpoint(keys, witness_time=NOW + 3600)), stale,
        "the witness's timestamp is an hour ahead of now: beyond max_age on either side")
    add("stale-log-only", main.proof("fleet-c"), stale, "no witnesses in the policy; the log signed long ago",
        policy="log-only", now=SIGNED_AT + 86400)

    # --- the fleet asked for: FleetMismatchError ---------------------------------------------------
    add("fleet-asked-other", present, "FleetMismatchError", "a valid proof for fleet-a, but fleet-c was asked for",
        fleet_id="fleet-c")
    add("fleet-row-other", main.mutated("fleet-a", lambda o: o.update(fleet_id="fleet-b")), "FleetMismatchError",
        "the proof says fleet-b; its row is fleet-a's")

    # --- the HEADS leaf: HeadsLeafError --------------------------------------------------------------
    heads_error = "HeadsLeafError"
    add("heads-leaf-not-last", main.mutated("fleet-a", lambda o: o.update(heads_leaf={
        "index": 7, "leaf": base64.b64encode(log.leaves[7]).decode(),
        "inclusion_proof": base64.b64encode(b"".join(log.inclusion(7, 12))).decode()})), heads_error,
        "the earlier HEADS leaf at 7 (valid inclusion proof), not the last leaf 11")
    add("heads-leaf-index-changed", main.mutated("fleet-a", lambda o: o["heads_leaf"].update(index=10)),
        heads_error, "heads_leaf.index 10 instead of 11")
    add("heads-leaf-root-flipped", main.mutated("fleet-a", lambda o: o["heads_leaf"].update(
        leaf=flip_b64(o["heads_leaf"]["leaf"], 17))), heads_error, "a bit of the HEADS leaf's root flipped")
    add("heads-leaf-count-changed", main.mutated("fleet-a", lambda o: o["heads_leaf"].update(
        leaf=flip_b64(o["heads_leaf"]["leaf"], 16))), heads_error, "the HEADS leaf's count 5 -> 4")
    add("heads-leaf-type-1", main.mutated("fleet-a", lambda o: o["heads_leaf"].update(
        leaf=flip_b64(o["heads_leaf"]["leaf"], 0, 1))), heads_error,
        "the HEADS leaf's type byte 3 -> 1 (a bundle leaf's version byte)")
    legacy = _Main(keys)
    last = decode_heads_leaf(legacy.log.pop())
    legacy.log.add_heads(HeadsLeaf(last.previous, last.count, last.root, LEGACY_HEADS_LEAF_TYPE))
    legacy.note = legacy.log.checkpoint(keys)
    add("heads-leaf-type-2", legacy.proof("fleet-a"), heads_error,
        "a log whose last HEADS leaf has type 2 (release 0.2.0's sorted layout) but the chained table's count "
        "and root, under a validly signed checkpoint: everything but the type would verify")
    add("heads-leaf-proof-flipped", main.mutated("fleet-a", lambda o: o["heads_leaf"].update(
        inclusion_proof=flip_b64(o["heads_leaf"]["inclusion_proof"], 40))), heads_error,
        "a bit of the HEADS leaf's inclusion proof flipped")
    bad_previous = MemoryLog()
    bad_previous.add_bundles([bundle("fleet-a", 1)])
    bad_previous.add_heads(HeadsLeaf(1, 1, bad_previous.table.root()))
    add("heads-leaf-previous-not-earlier", fleet_head_proof(bad_previous, "fleet-a", bad_previous.checkpoint(keys)),
        heads_error, "a log whose HEADS leaf 1 names itself as the previous one")
    empty_lie = MemoryLog()
    empty_lie.add_heads(HeadsLeaf(0, 0, EMPTY_ROOT))
    empty_lie.append(empty_lie.pop()[:17] + hashlib.sha256(b"not empty").digest())
    add("heads-leaf-empty-with-root", fleet_head_proof(empty_lie, "fleet-a", empty_lie.checkpoint(keys),
                                                       table=HeadsTable()), heads_error,
        "a log whose HEADS leaf says 0 rows with a root other than SHA-256()")

    # --- the row's or covering row's entry: FleetHeadRootError ---------------------------------------
    root_error = "FleetHeadRootError"
    add("row-proof-flipped", main.mutated("fleet-a", lambda o: o["row"].update(proof=flip_b64(o["row"]["proof"], 5))),
        root_error, "a bit of the row's inclusion proof flipped")
    add("row-proof-short", main.mutated("fleet-a", lambda o: o["row"].update(
        proof=base64.b64encode(base64.b64decode(o["row"]["proof"])[:-32]).decode())), root_error,
        "the row's inclusion proof without its last hash")
    add("row-sequence-changed", main.mutated("fleet-a", lambda o: o["row"].update(sequence=4)), root_error,
        "row.sequence 3 -> 4")
    add("row-leaf-index-changed", main.mutated("fleet-a", lambda o: o["row"].update(leaf_index=4)), root_error,
        "row.leaf_index 10 -> 4 (fleet-a's previous bundle)")
    add("row-leaf-hash-flipped", main.mutated("fleet-a", lambda o: o["row"].update(
        leaf_hash=_flip_hex(o["row"]["leaf_hash"]))), root_error, "a bit of row.leaf_hash flipped")
    add("row-status-changed", main.mutated("fleet-a", lambda o: o["row"].update(status="retired")), root_error,
        "row.status active -> retired")
    add("row-position-changed", main.mutated("fleet-a", lambda o: o["row"].update(position=0)), root_error,
        "row.position 1 -> 0: fleet-a's rank in byte order, not its place in the tree (first appearance)")
    add("row-position-beyond", main.mutated("fleet-a", lambda o: o["row"].update(position=5)), root_error,
        "row.position 5 in a table of 5 rows")
    add("row-next-changed", main.mutated("fleet-a", lambda o: o["row"].update(next_fleet_id="fleet-e")),
        root_error, "row.next_fleet_id fleet-c -> fleet-e: the entry hashed is not the one the tree holds")
    add("covering-proof-flipped", main.mutated("fleet-b", lambda o: o["covering"].update(
        proof=flip_b64(o["covering"]["proof"], 0))), root_error,
        "a bit of the covering row's inclusion proof flipped")
    add("covering-sequence-changed", main.mutated("fleet-b", lambda o: o["covering"].update(sequence=2)),
        root_error, "the covering row's sequence 3 -> 2")
    add("covering-next-changed", main.mutated("fleet-b", lambda o: o["covering"].update(next_fleet_id="fleet-bb")),
        root_error, "the covering row's next_fleet_id fleet-c -> fleet-bb (the link would still pass over "
        "fleet-b): the entry proof fails")

    def hide_fleet_c(o: dict[str, Any]) -> None:
        o["fleet_id"] = "fleet-c"
        o["covering"]["next_fleet_id"] = "fleet-e"

    add("covering-next-hides-fleet", main.mutated("fleet-b", hide_fleet_c), root_error,
        "absence of fleet-c (which has a row) from fleet-a's row with its next_fleet_id fleet-c -> fleet-e: the "
        "forged link would pass over fleet-c; only the entry proof stops it")
    add("covering-in-empty-table", fleet_head_proof(empty, "fleet-b", empty_note).replace(
        b'"covering":null', b'"covering":' + canonical(_row_json(table, 1)), 1), root_error,
        "the empty table's HEADS leaf (0 rows) with a covering row (fleet-a's, from the main log): no entry is "
        "in a tree of 0 entries")

    # --- the bundle: FleetHeadBundleError, SignatureError ----------------------------------------------
    bundle_error = "FleetHeadBundleError"
    older = decode_leaf(log.leaves[4]).to_dict()
    add("bundle-older-envelope", main.mutated("fleet-a", lambda o: o["bundle"].update(envelope=older)),
        bundle_error, "the envelope of fleet-a's sequence 2 in place of the row's (sequence 3)")
    add("bundle-proof-flipped", main.mutated("fleet-a", lambda o: o["bundle"].update(
        inclusion_proof=flip_b64(o["bundle"]["inclusion_proof"], 33))), bundle_error,
        "a bit of the bundle's inclusion proof flipped")
    add("bundle-signature-flipped", main.mutated("fleet-a", lambda o: o["bundle"]["envelope"]["signatures"][0].update(
        sig=flip_b64(o["bundle"]["envelope"]["signatures"][0]["sig"], 3))), bundle_error,
        "a bit of an envelope signature flipped: another leaf hash than the row's")
    for name, field_name, value, what in (
        ("bundle-payload-sequence", "sequence", 4, "sequence 4 for a bundle of sequence 3"),
        ("bundle-payload-status", "status", "retired", "status retired for an active bundle"),
        ("bundle-payload-fleet", "fleet_id", "fleet-b", "fleet-b for a bundle of fleet-a"),
    ):
        lying = _Main(keys)
        row = lying.log.table.get("fleet-a")
        assert row is not None
        changes: dict[str, Any] = {field_name: value}
        lie = dataclasses.replace(row, **changes)
        # The lie replaces fleet-a's row in place (position 1); the entries' links are
        # the table's own, so the HEADS leaf commits to a well-formed chained table.
        lying.log.table = HeadsTable.from_rows([lie if r is row else r for r in lying.log.table])
        lying.log.pop()
        lying.log.previous = 7
        lying.log.add_heads()
        add(name, fleet_head_proof(lying.log, lie.fleet_id, lying.log.checkpoint(keys)), bundle_error,
            f"a log whose heads row says {what} (the proofs verify; the payload disagrees)")
    unpinned = make_authority("rogue-countersigner", "countersigner", "ed25519")
    rogue = MemoryLog()
    rogue.batch([bundle("fleet-a", 1), bundle("fleet-b", 1, signers=[keys.authorities.signer, unpinned])])
    add("bundle-unpinned-countersigner", fleet_head_proof(rogue, "fleet-b", rogue.checkpoint(keys)),
        "SignatureError", "a log that logged a bundle countersigned by a key the policy does not pin")

    # --- absence: AbsenceProofError --------------------------------------------------------------------
    # Each covering row here is a real entry of the table its HEADS leaf commits to (its
    # proof verifies): only the link check (docs/fleet-heads.md, "Absence") fails.
    absence_error = "AbsenceProofError"

    def covering_row(position: int) -> Callable[[dict[str, Any]], None]:
        return lambda o: o.update(covering=_row_json(table, position))

    add("absent-link-not-over", main.mutated("fleet-b", covering_row(4)), absence_error,
        "fleet-b's absence from fleet-c's row (row 4, link fleet-c -> fleet-e): fleet-b sorts below the link")
    add("absent-wrap-not-over", main.mutated("fleet-b", covering_row(2)), absence_error,
        "fleet-b's absence from the wrapping link fleet-r -> fleet-a (row 2): fleet-b lies inside the table's "
        "range, not beyond either end")
    add("absent-before-first-not-wrapping", main.mutated("aaa", covering_row(3)), absence_error,
        "'aaa' (before every fleet) from fleet-g's row (row 3, link fleet-g -> fleet-r), not the wrapping one")
    add("absent-claim-for-present-fleet", main.mutated("fleet-b", lambda o: o.update(fleet_id="fleet-c")),
        absence_error, "absence of fleet-c from fleet-a's row, link fleet-a -> fleet-c: a link passes strictly "
        "between its ends, and fleet-c is its end")
    add("absent-covering-is-the-fleet", main.mutated("zeta", lambda o: o.update(fleet_id="fleet-r")),
        absence_error, "absence of fleet-r from its own row (row 2, link fleet-r -> fleet-a): a link's start is "
        "not passed over")
    add("absent-covering-null", main.mutated("fleet-b", lambda o: o.update(covering=None)), absence_error,
        "covering null (an empty table's claim) in a table of 5 rows")
    add("absent-lone-row-claim", _lying_absence(keys, ["fleet-a", "fleet-m"], ["fleet-m", "fleet-m"], "fleet-a", 1),
        absence_error, "a log of 2 rows whose HEADS leaf commits to fleet-m's entry linking to itself (the "
        "entry proof verifies): a lone row's link, which would pass over fleet-a, in a table of 2")
    add("absent-lone-row-links-elsewhere", _lying_absence(keys, ["fleet-m"], ["fleet-z"], "fleet-n", 0),
        absence_error, "a log of 1 row whose entry links fleet-m -> fleet-z (the entry proof verifies): a lone "
        "row must link to itself")
    add("covering-leaf-index-after-heads",
        _lying_absence(keys, ["fleet-a", "fleet-c"], ["fleet-c", "fleet-a"], "fleet-b", 0, leaf_index=5),
        "FleetHeadRootError", "a log of 2 rows whose HEADS leaf (leaf 2) commits to fleet-a's entry naming leaf 5 "
        "(the entry proof verifies): a row names a bundle before the HEADS leaf that commits to it")

    # --- the client's state: FleetHeadRollbackError ------------------------------------------------------
    rollback = "FleetHeadRollbackError"
    add("rollback-newer-head-seen", present, rollback, "the client saw fleet-a's head with sequence 4 before",
        state={"fleet-a": {"sequence": 4, "payload_digest": "00" * 32, "status": "active", "origin": ORIGIN,
                           "index": 13}})
    add("rollback-other-bundle-same-sequence", present, rollback,
        "the client saw another bundle of fleet-a with sequence 3",
        state={"fleet-a": {"sequence": 3, "payload_digest": "11" * 32, "status": "active", "origin": ORIGIN,
                           "index": 10}})
    add("rollback-absent-but-seen", main.proof("fleet-b"), rollback,
        "the client saw a head of fleet-b in this log; the log now proves it absent",
        state={"fleet-b": {"sequence": 0, "payload_digest": "22" * 32, "status": "active", "origin": ORIGIN,
                           "index": 12}})
    return vectors


def _row_json(table: HeadsTable, position: int) -> dict[str, Any]:
    return table.proved_row(position).to_dict()


def _urlsafe(text: str) -> str:
    out = text.replace("+", "-").replace("/", "_")
    assert out != text, "the proof has no '+' or '/': pick another"
    return out


def _set_pad_bits(text: str) -> str:
    # The last base64 character before "==" carries 4 pad bits: set the lowest.
    assert text.endswith("==")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(text[-3])
    return text[:-3] + alphabet[last | 1] + "=="


def _flip_hex(text: str) -> str:
    raw = bytearray.fromhex(text)
    raw[0] ^= 1
    return raw.hex()


def _flip_signature(note: str, line: int) -> str:
    """Flip a bit of the signature (after the 4-byte key ID) on signature line `line`."""
    text, _, block = note.partition("\n\n")
    lines = block.splitlines(keepends=True)
    prefix, _, encoded = lines[line].rstrip("\n").rpartition(" ")
    lines[line] = f"{prefix} {flip_b64(encoded, 4 + 10)}\n"
    return text + "\n\n" + "".join(lines)


# --- writing ------------------------------------------------------------------------------------


def files(keys: VectorKeys | None = None) -> dict[str, bytes]:
    """Every generated file, by path relative to the vectors directory (README.md is
    written by hand)."""
    keys = keys or VectorKeys()
    out: dict[str, bytes] = {}
    for authority in keys.authorities.all:
        out[f"trust/{authority.role}.pem"] = authority.public_pem
    for name, witnessed in (("witnessed", True), ("log-only", False)):
        out[f"trust/{name}.policy"] = keys.policy_text(witnessed).encode()
        out[f"trust/{name}.toml"] = (
            f'tlog_policy = "{name}.policy"\nmax_age_s = {MAX_AGE_S}\n\n'
            '[[authorities]]\nname = "signer-ca"\nrole = "signer"\nkeys = ["signer.pem"]\n\n'
            '[[authorities]]\nname = "countersigner-ca"\nrole = "countersigner"\nkeys = ["countersigner.pem"]\n'
        ).encode()
    for vector in build_vectors(keys):
        out[f"vectors/{vector.name}.json"] = vector.proof
        out[f"vectors/{vector.name}.expect.json"] = vector.expect_json()
    return out


GENERATED_SUBDIRECTORIES = ("trust", "vectors")
"""Everything in these is generated: `write` removes what it no longer generates (a
renamed or dropped vector)."""


def write(directory: Path) -> tuple[list[Path], list[Path]]:
    """Write every generated file under `directory`; returns the paths written and the
    stale ones removed."""
    generated = files()
    written = []
    for relative, data in sorted(generated.items()):
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)
    removed = []
    for sub in GENERATED_SUBDIRECTORIES:
        for path in sorted((directory / sub).rglob("*")):
            if path.is_file() and path.relative_to(directory).as_posix() not in generated:
                path.unlink()
                removed.append(path)
    return written, removed


def proof_sizes(size: int = 10_000_000, fleets: int = 10_000) -> list[str]:
    """The sizes of fleet-head proofs in a log of `size` leaves with `fleets` rows
    (docs/fleet-heads.md, "Size"). A proof's length depends only on the index and the
    size, so real proofs of those lengths (with stand-in hashes) are built instead of
    the log; the envelope is real (Ed25519 signer, P-256 countersigner, two fleet keys)
    and so is the checkpoint (the log's two lines and one witness cosignature)."""
    from bundle_factory import make_envelope as real_envelope  # the default authorities: P-256 countersigner
    from logserver.merkle import inclusion_plan

    keys = VectorKeys()
    stand_in = [hashlib.sha256(b"%d" % i).digest() for i in range(200)]

    def hashes(n: int) -> tuple[bytes, ...]:
        return tuple(stand_in[:n])

    envelope = real_envelope(make_payload(fleet_id="fleet-04242", sequence=17))
    envelope_json = len(canonical(envelope.to_dict()))
    leaf = encode_leaf(envelope)
    row_length = inclusion_plan(fleets // 2, fleets).proof_size
    # The heads tree's leaf is the entry: the row's bytes and the next fleet id.
    entry_bytes = len(HeadsRow("fleet-04242", 17, 0, leaf_hash(leaf)).entry("fleet-04243"))
    note = keys.sign(size, stand_in[0])
    lines = [f"{size:,} leaves, {fleets:,} rows; row proof {row_length} hashes; envelope JSON {envelope_json} "
             f"bytes (leaf {len(leaf)}); checkpoint note {len(note)} bytes "
             f"({len(keys.sign(size, stand_in[0], witness_time=None))} without the witness line)"]
    recent = size - 1000
    for what, heads_length, bundle_length in (
        ("worst case", 24, 24),
        ("exact size, a recent bundle", inclusion_plan(size - 1, size).proof_size,
         inclusion_plan(recent, size).proof_size),
    ):
        row = ProvedRow(fleets // 2, "fleet-04242", 17, recent, leaf_hash(leaf), "active", hashes(row_length),
                        "fleet-04243")
        heads = HeadsLeafProof(size - 1, HeadsLeaf(size - 2000, fleets, stand_in[1]).encode(), hashes(heads_length))
        data = build_fleet_head_proof("fleet-04242", note, heads, row=row,
                                      bundle=BundleProof(envelope.to_dict(), hashes(bundle_length)))
        total = heads_length + bundle_length + row_length
        lines.append(f"present, {what}: {heads_length} + {bundle_length} + {row_length} = {total} hashes, "
                     f"{total * 32} bytes; binary with the HEADS leaf and the entry {total * 32 + 49 + entry_bytes}; "
                     f"JSON {len(data)} bytes ({len(data) - envelope_json} without the envelope)")
    # An absence: one covering row, whose link fleet-04242 -> fleet-04243 passes over
    # fleet-042425, and no envelope.
    covering = ProvedRow(fleets // 2, "fleet-04242", 17, recent, leaf_hash(leaf), "active", hashes(row_length),
                         "fleet-04243")
    heads = HeadsLeafProof(size - 1, HeadsLeaf(size - 2000, fleets, stand_in[1]).encode(), hashes(24))
    absent = build_fleet_head_proof("fleet-042425", note, heads, absent=True, covering=covering)
    lines.append(f"absent, worst case: 24 + {row_length} = {24 + row_length} hashes; binary with the HEADS leaf "
                 f"and the entry {(24 + row_length) * 32 + 49 + entry_bytes}; JSON {len(absent)} bytes")
    return lines


if __name__ == "__main__":
    if sys.argv[1:] == ["--sizes"]:
        print("\n".join(proof_sizes()))
    else:
        target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIRECTORY
        written, removed = write(target)
        print(f"wrote {len(written)} files under {target}" + (f", removed {len(removed)} stale" if removed else ""))
