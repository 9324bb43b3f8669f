"""Fleet heads (docs/fleet-heads.md): the heads rows, the HEADS leaf, the heads table
with its RFC 6962 tree, and the fold of a log's leaves into that table.

In the presentation language of RFC 8446 §3 (big-endian integers, vectors prefixed by
their length):

    enum { active(0), retired(1), (255) } FleetStatus;

    struct {
        opaque fleet_id<1..2^8-1>;  /* ASCII, the payload schema's fleet id */
        uint64 sequence;            /* the bundle's payload sequence, <= 2^63-1 */
        uint64 leaf_index;          /* the bundle's index in the log, <= 2^63-1 */
        opaque leaf_hash[32];       /* RFC 6962 §2.1 leaf hash of the bundle's leaf */
        FleetStatus status;         /* the bundle's payload status */
    } HeadsRow;

    struct {
        HeadsRow row;
        opaque next_fleet_id<1..2^8-1>;  /* the next fleet id in byte order, circular */
    } HeadsEntry;

    struct {
        uint8  type;                /* 3 (a bundle leaf starts with its version, 1) */
        uint64 previous;            /* index of the previous HEADS leaf; 0 if none */
        uint64 count;               /* rows in the heads table */
        opaque root[32];            /* the heads tree's root */
    } HeadsLeaf;

Decoding is strict: one byte string per value (exact sizes, no trailing bytes, status
0 or 1, a fleet id a payload may carry, integers below 2^63 as in every JSON format
of the log, and an empty table's root is the empty tree's).

The heads tree is the RFC 6962 §2.1 tree whose leaves are the encoded entries in the
order their fleets first appeared in the log (the chained layout, docs/fleet-heads.md,
"The heads tree"): a new fleet is appended, a known one replaced in place, and each
entry names the next fleet id in byte order, so one entry proves that no fleet sorts
between two (as DNSSEC's NSEC records do, RFC 4034 §4). `HeadsTable` keeps it
incrementally, O(log n) hashes per change (see its docstring).

Release 0.2.0 wrote HEADS leaves of type 2 over another layout: the rows alone, sorted
by fleet id, whose inserts cost O(n). Such leaves stay in a log that ran 0.2.0; they
still decode (`HeadsLeaf.layout`) and a fold still checks them (`legacy_sorted_root`),
but nothing writes them and no fleet-head proof is made at one.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from hashlib import sha256

from ..formats.fleet_head import ProvedRow
from ..formats.strict import MAX_UINT63
from ..merkle import EMPTY_ROOT, HASH_SIZE, CompactRange, NodeID, frontier_ids, inclusion_proof, leaf_hash
from .leaf import decode_leaf
from .payload import ACTIVE, RETIRED, STATUSES, is_fleet_id, parse_payload

HEADS_LEAF_TYPE = 3
"""The first byte of a HEADS leaf (the chained layout); a bundle leaf's first byte is
its version, 1."""

LEGACY_HEADS_LEAF_TYPE = 2
"""The first byte of release 0.2.0's HEADS leaves (the sorted layout): still decoded
and checked by a fold, never written."""

HEADS_LEAF_TYPES = (LEGACY_HEADS_LEAF_TYPE, HEADS_LEAF_TYPE)
_HEADS_LEAF_FIRST_BYTES = tuple(bytes((t,)) for t in HEADS_LEAF_TYPES)

HEADS_LEAF_SIZE = 1 + 8 + 8 + HASH_SIZE  # 49

MAX_FLEET_ID_BYTES = 128
"""The payload schema's limit; the row's length prefix (one byte) could say 255."""

_STATUS_BYTE = {ACTIVE: 0, RETIRED: 1}
_STATUS_OF_BYTE = {0: ACTIVE, 1: RETIRED}

_ROW_TAIL = struct.Struct(">QQ32sB")  # sequence, leaf_index, leaf_hash, status
_HEADS_LEAF = struct.Struct(">BQQ32s")
_NODE = b"\x01"


class HeadsError(ValueError):
    """Base class: a heads row, HEADS leaf or heads table operation was refused."""


class MalformedHeadsError(HeadsError):
    """A heads row or HEADS leaf is not in its one canonical encoding."""


class HeadsUpdateError(HeadsError):
    """A row cannot enter the table: its sequence is not above the fleet's row, or the
    fleet is retired (docs/fleet-heads.md, "Admission and retirement")."""


class HeadsMismatchError(HeadsError):
    """A HEADS leaf in the log does not commit to the table folded from the bundles
    before it: evidence that the log misbehaved (docs/fleet-heads.md, "Soundness")."""


def _uint63(name: str, value: object) -> None:
    if type(value) is not int or not 0 <= value <= MAX_UINT63:
        raise MalformedHeadsError(f"{name}: got {value!r}, want an integer in [0, 2^63-1]")


@dataclass(frozen=True, slots=True)
class HeadsRow:
    """A fleet's newest bundle: one row of the heads table (checked on construction)."""

    fleet_id: str
    sequence: int
    leaf_index: int
    leaf_hash: bytes
    status: str = ACTIVE

    def __post_init__(self) -> None:
        if not isinstance(self.fleet_id, str) or not is_fleet_id(self.fleet_id):
            shown = repr(self.fleet_id[:40]) if isinstance(self.fleet_id, str) else type(self.fleet_id).__name__
            raise MalformedHeadsError(
                f"row fleet_id: got {shown}, want 1..{MAX_FLEET_ID_BYTES} characters of "
                "[A-Za-z0-9._:-], not '.' or '..'"
            )
        _uint63("row sequence", self.sequence)
        _uint63("row leaf_index", self.leaf_index)
        if type(self.leaf_hash) is not bytes or len(self.leaf_hash) != HASH_SIZE:
            raise MalformedHeadsError(f"row leaf_hash: got {self.leaf_hash!r:.80}, want {HASH_SIZE} bytes")
        if self.status not in _STATUS_BYTE:
            raise MalformedHeadsError(f"row status: got {self.status!r:.40}, want one of {list(STATUSES)}")

    @property
    def key(self) -> bytes:
        """The sort key: the fleet id's bytes (compared unsigned, a proper prefix first)."""
        return self.fleet_id.encode("ascii")

    @property
    def retired(self) -> bool:
        return self.status == RETIRED

    def encode(self) -> bytes:
        """The canonical HeadsRow bytes: the heads tree's leaf."""
        key = self.key
        return bytes((len(key),)) + key + _ROW_TAIL.pack(
            self.sequence, self.leaf_index, self.leaf_hash, _STATUS_BYTE[self.status]
        )

    def entry(self, next_fleet_id: str) -> bytes:
        """The canonical HeadsEntry bytes (the heads tree's leaf): this row and the next
        fleet id in byte order (circular: the last row names the first; a lone row
        names itself)."""
        if not isinstance(next_fleet_id, str) or not is_fleet_id(next_fleet_id):
            raise MalformedHeadsError(f"next_fleet_id: got {next_fleet_id!r:.60}, want a payload's fleet id")
        return self.entry_from_key(next_fleet_id.encode("ascii"))

    def entry_from_key(self, next_key: bytes) -> bytes:
        """`entry` for a next fleet id already checked and encoded (the table's own)."""
        return self.encode() + bytes((len(next_key),)) + next_key

    def entry_hash(self, next_fleet_id: str) -> bytes:
        """The entry's RFC 6962 §2.1 leaf hash in the heads tree: SHA-256(0x00 || entry)."""
        return leaf_hash(self.entry(next_fleet_id))

    def legacy_tree_hash(self) -> bytes:
        """The row's leaf hash in release 0.2.0's sorted layout: SHA-256(0x00 || encode())."""
        return leaf_hash(self.encode())


def decode_row(data: bytes) -> HeadsRow:
    """Decode HeadsRow bytes strictly; `decode_row(row.encode()) == row` and nothing
    else decodes. Raises `MalformedHeadsError`."""
    if not isinstance(data, bytes) or not data:
        raise MalformedHeadsError(f"row: got {len(data) if isinstance(data, bytes) else type(data).__name__}, "
                                  "want bytes")
    length = data[0]
    want = 1 + length + _ROW_TAIL.size
    if len(data) != want:
        raise MalformedHeadsError(f"row: got {len(data)} bytes, want {want} for a {length}-byte fleet id")
    raw_id = data[1 : 1 + length]
    try:
        fleet_id = raw_id.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedHeadsError(f"row fleet_id: got non-ASCII bytes {raw_id[:40]!r}") from None
    sequence, leaf_index, hash_, status = _ROW_TAIL.unpack_from(data, 1 + length)
    if status not in _STATUS_OF_BYTE:
        raise MalformedHeadsError(f"row status: got byte {status}, want 0 (active) or 1 (retired)")
    # HeadsRow checks the fleet id's charset and length and the integer bounds.
    return HeadsRow(fleet_id, sequence, leaf_index, hash_, _STATUS_OF_BYTE[status])


def decode_entry(data: bytes) -> tuple[HeadsRow, str]:
    """Decode HeadsEntry bytes strictly into the row and the next fleet id; raises
    `MalformedHeadsError`."""
    if not isinstance(data, bytes) or not data:
        got = "0 bytes" if isinstance(data, bytes) else type(data).__name__
        raise MalformedHeadsError(f"entry: got {got}, want the bytes of a row and a next fleet id")
    row_size = 1 + data[0] + _ROW_TAIL.size
    if len(data) < row_size + 1:
        raise MalformedHeadsError(f"entry: got {len(data)} bytes, want a {row_size}-byte row and a next fleet id")
    row = decode_row(data[:row_size])
    length = data[row_size]
    if len(data) != row_size + 1 + length:
        raise MalformedHeadsError(f"entry: got {len(data)} bytes, want {row_size + 1 + length} for a "
                                  f"{length}-byte next fleet id")
    raw = data[row_size + 1:]
    try:
        next_id = raw.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedHeadsError(f"entry next_fleet_id: got non-ASCII bytes {raw[:40]!r}") from None
    if not is_fleet_id(next_id):
        raise MalformedHeadsError(f"entry next_fleet_id: got {next_id[:40]!r}, want a payload's fleet id")
    return row, next_id


def covers(fleet_id: str, next_fleet_id: str, absent: str) -> bool:
    """Whether the chain link from `fleet_id` to `next_fleet_id` (the next fleet id in
    byte order, circular) passes over `absent`: then no fleet between them, `absent`
    included, has a row (docs/fleet-heads.md, "Absence"). A link that does not go up
    (the last row naming the first, or a lone row naming itself) wraps around: it
    covers every id above its start or below its end."""
    a, b, x = fleet_id.encode("ascii"), next_fleet_id.encode("ascii"), absent.encode("ascii")
    if a < b:
        return a < x < b
    return x > a or x < b


@dataclass(frozen=True, slots=True)
class HeadsLeaf:
    """The commitment a batch ends with: the heads table's size and root. `layout` is
    the leaf's type byte: HEADS_LEAF_TYPE (written), or LEGACY_HEADS_LEAF_TYPE (a
    release 0.2.0 leaf, whose root is `legacy_sorted_root`)."""

    previous: int
    count: int
    root: bytes
    layout: int = HEADS_LEAF_TYPE

    def __post_init__(self) -> None:
        if self.layout not in HEADS_LEAF_TYPES:
            raise MalformedHeadsError(f"HEADS leaf type: got {self.layout!r}, want one of {list(HEADS_LEAF_TYPES)}")
        _uint63("HEADS leaf previous", self.previous)
        _uint63("HEADS leaf count", self.count)
        if type(self.root) is not bytes or len(self.root) != HASH_SIZE:
            raise MalformedHeadsError(f"HEADS leaf root: got {self.root!r:.80}, want {HASH_SIZE} bytes")
        if self.count == 0 and self.root != EMPTY_ROOT:
            # RFC 6962 §2.1: MTH({}) = SHA-256(); any other root is no table of 0 rows.
            raise MalformedHeadsError(
                f"HEADS leaf root: got {self.root.hex()} with count 0, want the empty tree's {EMPTY_ROOT.hex()}"
            )

    def encode(self) -> bytes:
        """The 49 leaf bytes."""
        return _HEADS_LEAF.pack(self.layout, self.previous, self.count, self.root)

    @property
    def legacy(self) -> bool:
        """A release 0.2.0 leaf (no fleet-head proof is made or accepted at one)."""
        return self.layout == LEGACY_HEADS_LEAF_TYPE


def is_heads_leaf(leaf: bytes) -> bool:
    """Whether a log leaf is a HEADS leaf, of either layout (by its first byte; decode it
    to check it)."""
    return leaf[:1] in _HEADS_LEAF_FIRST_BYTES


def decode_heads_leaf(data: bytes) -> HeadsLeaf:
    """Decode the 49 bytes of a HEADS leaf strictly; raises `MalformedHeadsError`."""
    if not isinstance(data, bytes) or len(data) != HEADS_LEAF_SIZE:
        got = f"{len(data)} bytes" if isinstance(data, bytes) else type(data).__name__
        raise MalformedHeadsError(f"HEADS leaf: got {got}, want {HEADS_LEAF_SIZE}")
    kind, previous, count, root = _HEADS_LEAF.unpack(data)
    if kind not in HEADS_LEAF_TYPES:
        raise MalformedHeadsError(f"HEADS leaf type: got {kind}, want {HEADS_LEAF_TYPE} "
                                  f"(or {LEGACY_HEADS_LEAF_TYPE}, release 0.2.0's)")
    return HeadsLeaf(previous, count, root, kind)


def bundle_row(index: int, leaf: bytes) -> HeadsRow:
    """The row a bundle leaf at `index` makes: its payload's fleet, sequence and status.
    Raises `MalformedEnvelopeError` / `MalformedPayloadError` for a leaf that is not a
    bundle leaf with a valid payload."""
    envelope = decode_leaf(leaf)
    bundle = parse_payload(envelope.payload)
    return HeadsRow(bundle.fleet_id, bundle.sequence, index, leaf_hash(leaf), bundle.status)


class HeadsTable:
    """The heads table and its RFC 6962 tree, in the chained layout.

    Position p holds the p-th fleet to appear in the log; the tree's leaf there is
    that fleet's newest row with the next fleet id in byte order (`HeadsRow.entry`).
    Positions never move: a new fleet is appended, a known one replaced in place.

    The tree is kept as the hashes of every complete subtree over positions:
    `_levels[0]` holds the entries' leaf hashes and `_levels[l][j]` the node covering
    positions [j * 2^l, (j + 1) * 2^l) (RFC 6962 §2.1 splits MTH at the largest power
    of two below n, so every node of the tree is such a subtree or a fold of them along
    the right edge). `apply` rehashes the entries it changes and records where; the
    nodes above them are brought up to date by the next `root()`, `row_proof()` or
    `heads_leaf()`, so a batch of changes pays once for the ancestors they share:

    * a known fleet's newer row changes one entry: its ancestors, one per level, are
      rehashed: O(log n) hashes;
    * a new fleet changes two entries: its own, appended, and its predecessor's in byte
      order (whose next fleet id it now is): O(log n) hashes, plus one insertion into
      the sorted key list (a memmove of pointers, ~1000x cheaper than a hash);
    * `root()` then folds the popcount(n) frontier subtrees: O(log n); `row_proof` reads
      O(log n) stored hashes (`merkle.inclusion_proof`).

    Memory: about 2n hashes plus the rows and two key indexes. Rows are never removed
    (a retired fleet keeps its row), so n only grows.
    """

    __slots__ = ("_dirty", "_dirty_from", "_keys", "_levels", "_positions", "_root", "_rows")

    def __init__(self) -> None:
        self._rows: list[HeadsRow] = []               # by position (first appearance)
        self._positions: dict[bytes, int] = {}         # fleet id bytes -> position
        self._keys: list[bytes] = []                   # fleet id bytes, sorted
        self._levels: list[list[bytes]] = [[]]
        # Positions >= _dirty_from are new (appended); _dirty: changed positions below
        # it. _dirty_from == count and no _dirty means the upper levels are current.
        self._dirty_from = 0
        self._dirty: set[int] = set()
        self._root: bytes | None = EMPTY_ROOT

    @classmethod
    def from_rows(cls, rows: Iterable[HeadsRow]) -> HeadsTable:
        """A table holding `rows`, one per fleet, in the order their fleets first
        appeared in the log (that order is the tree's: storage keeps it, see
        `fleets.first_idx`); built in O(n) hashes."""
        table = cls()
        ordered = list(rows)
        positions: dict[bytes, int] = {}
        for p, r in enumerate(ordered):
            if not isinstance(r, HeadsRow):
                raise TypeError(f"from_rows: got {type(r).__name__}, want HeadsRow")
            if positions.setdefault(r.key, p) != p:
                raise HeadsUpdateError(f"rows: fleet {r.fleet_id!r} twice, want one row per fleet")
        keys = sorted(positions)
        following = {k: keys[(i + 1) % len(keys)] for i, k in enumerate(keys)}
        table._rows = ordered
        table._positions = positions
        table._keys = keys
        table._levels = [[leaf_hash(r.entry_from_key(following[r.key])) for r in ordered]]
        table._dirty_from = 0  # every node above the entries is yet to be made
        table._root = None
        return table

    def copy(self) -> HeadsTable:
        """An independent copy (O(n) pointer copies, no hashing): apply a batch to the
        copy and keep it only if the batch commits."""
        self._flush()
        clone = HeadsTable.__new__(HeadsTable)
        clone._rows = list(self._rows)
        clone._positions = dict(self._positions)
        clone._keys = list(self._keys)
        clone._levels = [list(level) for level in self._levels]
        clone._dirty_from = self._dirty_from
        clone._dirty = set()
        clone._root = self._root
        return clone

    # --- queries ------------------------------------------------------------------------

    @property
    def count(self) -> int:
        """The number of rows (fleets)."""
        return len(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[HeadsRow]:
        return iter(self._rows)

    @property
    def rows(self) -> Sequence[HeadsRow]:
        """The rows in tree order, the order their fleets first appeared (a copy)."""
        return tuple(self._rows)

    def row(self, position: int) -> HeadsRow:
        """The row at `position` (IndexError beyond the table)."""
        if not 0 <= position < len(self._rows):
            raise IndexError(f"position: got {position}, want 0..{len(self._rows) - 1}")
        return self._rows[position]

    def position(self, fleet_id: str) -> int | None:
        """The fleet's row position, or None if it has no row."""
        if not is_fleet_id(fleet_id):
            return None
        return self._positions.get(fleet_id.encode("ascii"))

    def get(self, fleet_id: str) -> HeadsRow | None:
        """The fleet's row, or None."""
        position = self.position(fleet_id)
        return None if position is None else self._rows[position]

    def next_fleet_id(self, position: int) -> str:
        """The next fleet id in byte order after the row at `position` (circular)."""
        return self._following(self.row(position).key).decode("ascii")

    def covering(self, fleet_id: str) -> int | None:
        """For a fleet without a row, the position of the row whose chain link passes
        over it (its predecessor in byte order, or the last row when it sorts first):
        the absence proof's row (docs/fleet-heads.md, "Absence"). None for an empty
        table. Raises `KeyError` if the fleet has a row, `MalformedHeadsError` if
        `fleet_id` is not a fleet id."""
        if not is_fleet_id(fleet_id):
            raise MalformedHeadsError(f"fleet_id: got {fleet_id[:40]!r}, want a payload's fleet id")
        key = fleet_id.encode("ascii")
        if key in self._positions:
            raise KeyError(f"fleet {fleet_id!r} has a row at position {self._positions[key]}")
        if not self._keys:
            return None
        # keys[i - 1] is the predecessor; i == 0 wraps to the last key.
        return self._positions[self._keys[bisect_left(self._keys, key) - 1]]

    def root(self) -> bytes:
        """MTH of the encoded entries in order (RFC 6962 §2.1); SHA-256() when empty."""
        if self._root is None:
            self._flush()
            hashes = [self._levels[level][index] for level, index in frontier_ids(len(self._rows))]
            root = hashes.pop() if hashes else EMPTY_ROOT
            # The frontier subtrees, largest first, fold right to left into the root.
            for h in reversed(hashes):
                root = sha256(_NODE + h + root).digest()
            self._root = root
        return self._root

    def heads_leaf(self, previous: int, layout: int = HEADS_LEAF_TYPE) -> HeadsLeaf:
        """The HEADS leaf committing to the table as it stands: in the chained layout
        (the one written), or, to check a release 0.2.0 leaf (`layout` 2), in the
        sorted one (`legacy_sorted_root`, O(n log n))."""
        if layout == LEGACY_HEADS_LEAF_TYPE:
            return HeadsLeaf(previous, len(self._rows), legacy_sorted_root(self._rows), LEGACY_HEADS_LEAF_TYPE)
        return HeadsLeaf(previous, len(self._rows), self.root(), layout)

    def row_proof(self, position: int) -> list[bytes]:
        """The RFC 6962 §2.1.1 inclusion proof of entry `position` in the heads tree of
        `count` entries (InvalidParameterError beyond the table)."""
        self._flush()
        levels = self._levels
        return inclusion_proof(position, len(self._rows), lambda ids: [_node(levels, i) for i in ids])

    def proved_row(self, position: int) -> ProvedRow:
        """The row at `position` with its next fleet id and inclusion proof, as a
        fleet-head proof carries it (formats/fleet_head.py): `row` for a present fleet,
        `covering` for an absent one."""
        row = self.row(position)
        return ProvedRow(position, row.fleet_id, row.sequence, row.leaf_index, row.leaf_hash, row.status,
                         tuple(self.row_proof(position)), self.next_fleet_id(position))

    # --- updates ------------------------------------------------------------------------

    def apply(self, row: HeadsRow) -> int:
        """Insert the fleet's row (appended: a new fleet), or replace it by a newer one;
        returns its position.

        Raises `HeadsUpdateError`, leaving the table unchanged, when the fleet's row is
        retired or its sequence is not below `row.sequence` (the log appends a bundle
        only if its sequence is above its fleet's head).
        """
        if not isinstance(row, HeadsRow):
            raise TypeError(f"apply: got {type(row).__name__}, want HeadsRow")
        key = row.key
        p = self._positions.get(key)
        if p is not None:
            old = self._rows[p]
            if old.retired:
                raise HeadsUpdateError(
                    f"fleet {row.fleet_id!r}: retired by sequence {old.sequence} (leaf {old.leaf_index}), "
                    f"want no later bundle (got sequence {row.sequence})"
                )
            if row.sequence <= old.sequence:
                raise HeadsUpdateError(
                    f"fleet {row.fleet_id!r} sequence: got {row.sequence}, want above the head's "
                    f"{old.sequence} (leaf {old.leaf_index})"
                )
            self._rows[p] = row
            self._set(p, leaf_hash(row.entry_from_key(self._following(key))))
        else:
            keys = self._keys
            i = bisect_left(keys, key)
            keys.insert(i, key)
            p = len(self._rows)
            self._positions[key] = p
            self._rows.append(row)
            # Its next key is the one after it in byte order, circular (itself when alone).
            following = keys[i + 1] if i + 1 < len(keys) else keys[0]
            self._levels[0].append(leaf_hash(row.entry_from_key(following)))
            self._dirty_from = min(self._dirty_from, p)
            if p:
                # The predecessor in byte order (the last key when this one sorts first)
                # now links to this fleet.
                q = self._positions[keys[i - 1]]
                self._set(q, leaf_hash(self._rows[q].entry_from_key(key)))
        self._root = None
        return p

    def _following(self, key: bytes) -> bytes:
        """The next key after `key` (which is in the table) in byte order, circular."""
        keys = self._keys
        i = bisect_left(keys, key) + 1
        return keys[i if i < len(keys) else 0]

    def _set(self, position: int, h: bytes) -> None:
        self._levels[0][position] = h
        if position < self._dirty_from:
            self._dirty.add(position)

    def _flush(self) -> None:
        """Bring the stored subtree hashes up to date (see the class docstring)."""
        n = len(self._rows)
        if self._dirty_from == n and not self._dirty:
            return  # up to date: every proof of an unchanged table reads only
        levels = self._levels
        start = self._dirty_from
        dirty = self._dirty
        level = 1
        while n >> level:
            width = n >> level
            lower = levels[level - 1]
            if level == len(levels):
                levels.append([])
            current = levels[level]
            # Node j covers positions [j << level, (j + 1) << level): it is new if it
            # ends right of the first appended position, or changed if it lies above a
            # changed one.
            start >>= 1
            del current[start:]
            current += [
                sha256(_NODE + left + right).digest()
                for left, right in zip(lower[2 * start : 2 * width : 2], lower[2 * start + 1 : 2 * width : 2],
                                       strict=True)
            ]
            dirty = {p >> 1 for p in dirty if p >> 1 < start}
            for j in dirty:
                current[j] = sha256(_NODE + lower[2 * j] + lower[2 * j + 1]).digest()
            level += 1
        del levels[max(level, 1):]
        self._dirty_from = n
        self._dirty = set()


def legacy_sorted_root(rows: Iterable[HeadsRow]) -> bytes:
    """The root release 0.2.0's HEADS leaves (type 2) committed to: MTH of the encoded
    rows alone, sorted by fleet id bytes (RFC 6962 §2.1). O(n) per call: only a fold
    over a log that ran 0.2.0 needs it, once per such leaf."""
    hashes = [r.legacy_tree_hash() for r in sorted(rows, key=lambda r: r.key)]
    if not hashes:
        return EMPTY_ROOT
    cr = CompactRange()
    cr.extend(hashes)
    return cr.root()


def _node(levels: list[list[bytes]], node: NodeID) -> bytes:
    level, index = node
    return levels[level][index]


def fold(leaves: Iterable[bytes], *, check_heads: bool = True) -> HeadsTable:
    """The heads table of a log, folded from its leaves in log order (docs/fleet-heads.md,
    "The heads table"): each bundle leaf replaces its fleet's row.

    HEADS leaves add no row. With `check_heads`, each one must commit to the table as
    folded so far, with `previous` the index of the HEADS leaf before it (0 if none),
    else `HeadsMismatchError`. A bundle the log should have refused (a sequence not
    above its fleet's head, a bundle of a retired fleet) raises `HeadsUpdateError`; a
    leaf that is neither raises the bundle layer's `MalformedEnvelopeError` (or
    `MalformedPayloadError`) or `MalformedHeadsError`.
    """
    table = HeadsTable()
    previous = 0
    for index, leaf in enumerate(leaves):
        if is_heads_leaf(leaf):
            heads = decode_heads_leaf(leaf)
            if check_heads:
                want = table.heads_leaf(previous, heads.layout)
                if heads != want:
                    raise HeadsMismatchError(
                        f"HEADS leaf {index} (type {heads.layout}): got previous {heads.previous}, count "
                        f"{heads.count}, root {heads.root.hex()}; want previous {want.previous}, count "
                        f"{want.count}, root {want.root.hex()} (the table folded from leaves 0..{index - 1})"
                    )
            previous = index
            continue
        try:
            table.apply(bundle_row(index, leaf))
        except HeadsUpdateError as exc:
            raise HeadsUpdateError(f"leaf {index}: {exc}") from None
    return table
