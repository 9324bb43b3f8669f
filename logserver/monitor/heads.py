"""The monitor's fold of the heads table (docs/fleet-heads.md; issue 20 §5), and the
evidence of a HEADS leaf that misbehaves, in a form a third party re-checks.

The heads table is a deterministic function of the log: the monitor folds it from the
bundles as it verifies them, in log order, and compares every HEADS leaf with it
(`HeadsFolder`). Two findings:

* `heads_mismatch`: a HEADS leaf does not commit to the table folded from the bundles
  before it (its `previous`, `count` or `root` differs; it does not decode; or it
  commits to an empty table, which a conforming log never writes: its first HEADS leaf
  follows a bundle);
* `heads_missing`: a checkpoint of size N whose leaf N - 1 is not a HEADS leaf, once
  the log has written its first HEADS leaf before N (a log that ran before this
  feature has older checkpoints that end with a bundle: they are not findings).

The fold is `bundle.heads.fold`'s, with one difference: a bundle the log should have
refused (a sequence not above its fleet's row, a bundle of a retired fleet) does not
stop it. It adds no row (the log's table holds each fleet's highest sequence, and a
retired fleet's retirement), and is reported on its own (`sequence_rollback`,
`duplicate_bundle` or `equivocation` by the fleet tracker; `retired_fleet_bundle`
here), so one misbehaviour is one alert, and later HEADS leaves are still compared.

Evidence (`HEADS_EVIDENCE_TYPE`, JSON):

    {"type", "finding": "mismatch" | "missing", "origin", "log_vkey",
     "checkpoint": "<signed note of size N>",
     "heads_leaf": {"index", "leaf": "<base64>", "inclusion_proof": ["<hex>", ...]},
     mismatch: "want": {"previous", "count", "root"},
               "rows": [[fleet_id, sequence, leaf_index, "<leaf hash hex>", status], ...],
     missing:  "last_leaf": {"index": N - 1, "leaf", "inclusion_proof"}}

For a mismatch, `heads_leaf` is the leaf that lies and `rows` the table the fold says
it should commit to (each row names its bundle's index: fetch those leaves to check
each row, or the whole prefix to refold it). For a missing HEADS leaf, `heads_leaf` is
an earlier HEADS leaf (the log has the feature) and `last_leaf` the checkpoint's last
leaf. `verify_heads_evidence` re-checks it from its own contents (and, given the log's
leaves before the HEADS leaf, refolds them).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..bundle.errors import BundleError
from ..bundle.heads import (
    HEADS_LEAF_TYPE,
    LEGACY_HEADS_LEAF_TYPE,
    HeadsError,
    HeadsLeaf,
    HeadsRow,
    HeadsTable,
    HeadsUpdateError,
    bundle_row,
    decode_heads_leaf,
    is_heads_leaf,
)
from ..client.policy import TrustPolicy
from ..formats import FormatError, VerificationError, open_checkpoint
from ..formats.strict import hex_hash, json_uint, strict_json
from ..merkle import MerkleError, leaf_hash, verify_inclusion

HEADS_EVIDENCE_TYPE = "logserver/heads-evidence@v1"
MISMATCH, MISSING = "mismatch", "missing"
MAX_PROOF_HASHES = 64


@dataclass(frozen=True, slots=True)
class FoldItem:
    """One leaf as the fold sees it: a bundle's row, or a HEADS leaf's bytes."""

    index: int
    row: HeadsRow | None = None
    heads: bytes | None = None


@dataclass(frozen=True)
class HeadsMismatch:
    """A HEADS leaf at `index` that is not the fold's `want` (`got` None: it does not
    decode); `rows`: the folded table at that point, in tree order."""

    index: int
    leaf: bytes
    got: HeadsLeaf | None
    want: HeadsLeaf
    rows: tuple[HeadsRow, ...]
    reason: str


@dataclass(frozen=True)
class RetiredFleetBundle:
    """A bundle logged at `index` for a fleet the table holds as retired."""

    index: int
    row: HeadsRow
    retirement: HeadsRow


def _leaf_text(heads: HeadsLeaf) -> str:
    return f"type {heads.layout}, previous {heads.previous}, count {heads.count}, root {heads.root.hex()}"


class HeadsFolder:
    """The fold's state: the table, the index of the last HEADS leaf (`previous`, 0 if
    none, as the HEADS leaf says it) and of the first (`first`, None if none yet).

    `observe` takes the items of consecutive leaves in log order and returns findings;
    work on a `copy()` until the leaves are proved part of the signed tree."""

    def __init__(self, table: HeadsTable | None = None, previous: int = 0, first: int | None = None) -> None:
        self.table = table if table is not None else HeadsTable()
        self.previous = previous
        self.first = first
        self.checked = 0  # HEADS leaves compared by this instance
        self.last_heads: bytes | None = None  # the bytes of the last HEADS leaf observed here

    def copy(self) -> HeadsFolder:
        return HeadsFolder(self.table.copy(), self.previous, self.first)

    def observe(self, item: FoldItem) -> HeadsMismatch | RetiredFleetBundle | None:
        if item.row is not None:
            try:
                self.table.apply(item.row)
            except HeadsUpdateError:
                old = self.table.get(item.row.fleet_id)
                if old is not None and old.retired:
                    return RetiredFleetBundle(item.index, item.row, old)
                # A sequence not above the fleet's row: the fleet tracker reports it.
            return None
        assert item.heads is not None
        leaf = item.heads
        want = self.table.heads_leaf(self.previous, _layout(leaf))
        self.previous = item.index
        self.last_heads = leaf
        if self.first is None:
            self.first = item.index
        self.checked += 1
        try:
            got = decode_heads_leaf(leaf)
        except HeadsError as exc:
            return HeadsMismatch(item.index, leaf, None, want, tuple(self.table.rows),
                                 f"HEADS leaf {item.index} does not decode: {exc}")
        if got.count == 0:
            return HeadsMismatch(item.index, leaf, got, want, tuple(self.table.rows),
                                 f"HEADS leaf {item.index} commits to an empty heads table; a log writes a "
                                 "HEADS leaf only after a bundle")
        if got != want:
            return HeadsMismatch(
                item.index, leaf, got, want, tuple(self.table.rows),
                f"HEADS leaf {item.index} says {_leaf_text(got)}; the table folded from the bundles of leaves "
                f"0..{item.index - 1} gives {_leaf_text(want)}")
        return None


def _layout(leaf: bytes) -> int:
    """The layout a HEADS leaf claims by its type byte (the current one if it claims none):
    a log that ran release 0.2.0 holds type-2 leaves over the sorted layout."""
    return LEGACY_HEADS_LEAF_TYPE if leaf[:1] == bytes((LEGACY_HEADS_LEAF_TYPE,)) else HEADS_LEAF_TYPE


def fold_leaves(leaves: Sequence[bytes]) -> HeadsTable:
    """The monitor's fold of a log's leaves (see the module docstring): like
    `bundle.heads.fold(leaves, check_heads=False)`, but a bundle the log should have
    refused adds no row instead of stopping the fold, and a leaf that is no bundle with
    a valid payload adds none either."""
    table = HeadsTable()
    for index, leaf in enumerate(leaves):
        if is_heads_leaf(leaf):
            continue
        try:
            table.apply(bundle_row(index, leaf))
        except (BundleError, HeadsError):
            continue
    return table


# --- evidence -----------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _proved_leaf(index: int, leaf: bytes, proof: Sequence[bytes]) -> dict[str, Any]:
    return {"index": index, "leaf": _b64(leaf), "inclusion_proof": [h.hex() for h in proof]}


def _row_list(row: HeadsRow) -> list[Any]:
    return [row.fleet_id, row.sequence, row.leaf_index, row.leaf_hash.hex(), row.status]


def mismatch_evidence(origin: str, log_vkey: str | None, note: str, mismatch: HeadsMismatch,
                      proof: Sequence[bytes]) -> dict[str, Any]:
    """The JSON evidence of a HEADS leaf that disagrees with the fold (`proof`: its
    inclusion proof in the checkpoint `note`'s tree)."""
    want = mismatch.want
    return {
        "type": HEADS_EVIDENCE_TYPE,
        "finding": MISMATCH,
        "origin": origin,
        "log_vkey": log_vkey,
        "checkpoint": note,
        "heads_leaf": _proved_leaf(mismatch.index, mismatch.leaf, proof),
        "want": {"previous": want.previous, "count": want.count, "root": want.root.hex()},
        "rows": [_row_list(r) for r in mismatch.rows],
    }


def missing_evidence(origin: str, log_vkey: str | None, note: str, first: tuple[int, bytes, Sequence[bytes]],
                     last: tuple[int, bytes, Sequence[bytes]]) -> dict[str, Any]:
    """The JSON evidence of a checkpoint whose last leaf is not a HEADS leaf: an
    earlier HEADS leaf and the last leaf, each (index, leaf, inclusion proof)."""
    return {
        "type": HEADS_EVIDENCE_TYPE,
        "finding": MISSING,
        "origin": origin,
        "log_vkey": log_vkey,
        "checkpoint": note,
        "heads_leaf": _proved_leaf(*first),
        "last_leaf": _proved_leaf(*last),
    }


class HeadsEvidenceError(ValueError):
    """The evidence does not show a misbehaving HEADS leaf (malformed, a signature or
    proof that does not verify, or a HEADS leaf that agrees with the fold)."""


_COMMON = {"type", "finding", "origin", "log_vkey", "checkpoint", "heads_leaf"}
_FIELDS = {MISMATCH: _COMMON | {"want", "rows"}, MISSING: _COMMON | {"last_leaf"}}


def _uint(value: Any, what: str) -> int:
    return json_uint(value, what, HeadsEvidenceError)


def _leaf_of(obj: Any, what: str) -> tuple[int, bytes, list[bytes]]:
    if not isinstance(obj, Mapping) or set(obj) != {"index", "leaf", "inclusion_proof"}:
        raise HeadsEvidenceError(f"evidence {what}: want an object with index, leaf, inclusion_proof")
    proof = obj["inclusion_proof"]
    if not isinstance(proof, list) or len(proof) > MAX_PROOF_HASHES:
        raise HeadsEvidenceError(f"evidence {what}.inclusion_proof: want a list of at most {MAX_PROOF_HASHES} hashes")
    if not isinstance(obj["leaf"], str):
        raise HeadsEvidenceError(f"evidence {what}.leaf: want base64")
    try:
        leaf = base64.b64decode(obj["leaf"], validate=True)
    except binascii.Error:
        raise HeadsEvidenceError(f"evidence {what}.leaf: got {obj['leaf'][:40]!r}, want base64") from None
    return (_uint(obj["index"], f"{what}.index"), leaf,
            [hex_hash(h, f"evidence {what}.inclusion_proof[{i}]", HeadsEvidenceError) for i, h in enumerate(proof)])


def _included(what: str, leaf: tuple[int, bytes, list[bytes]], size: int, root: bytes) -> None:
    index, data, proof = leaf
    try:
        verify_inclusion(index, size, leaf_hash(data), proof, root)
    except MerkleError as exc:
        raise HeadsEvidenceError(f"evidence {what}: leaf {index} is not proved in the checkpoint's tree "
                                 f"of size {size}: {exc}") from None


def _rows(value: Any) -> list[HeadsRow]:
    if not isinstance(value, list):
        raise HeadsEvidenceError("evidence rows: want a list")
    rows = []
    for i, item in enumerate(value):
        if not isinstance(item, list) or len(item) != 5 or not isinstance(item[0], str) or not isinstance(item[4], str):
            raise HeadsEvidenceError(f"evidence rows[{i}]: want [fleet_id, sequence, leaf_index, leaf_hash, status]")
        try:
            rows.append(HeadsRow(item[0], _uint(item[1], f"rows[{i}]"), _uint(item[2], f"rows[{i}]"),
                                 hex_hash(item[3], f"evidence rows[{i}]", HeadsEvidenceError), item[4]))
        except HeadsError as exc:
            raise HeadsEvidenceError(f"evidence rows[{i}]: {exc}") from None
    return rows


def verify_heads_evidence(evidence: Mapping[str, Any] | bytes | str, policy: TrustPolicy,
                          leaves: Sequence[bytes] | None = None) -> str:
    """Re-check heads evidence; returns the finding as text, raises `HeadsEvidenceError`
    if the evidence does not show it.

    Checked from the evidence alone: the checkpoint is signed by a key `policy` lists
    for its origin; each leaf is proved at its index in the checkpoint's tree. Mismatch:
    the rows (in first-appearance order, one per fleet, each naming a leaf before the
    HEADS leaf) give the HEADS leaf `want`, and the logged HEADS leaf is not `want`. Missing: the earlier
    leaf is a HEADS leaf, the last one (index N - 1) is not. With `leaves` (the log's
    leaves from 0 to at least the HEADS leaf, e.g. fetched from its entry bundles and
    checked against the checkpoint), a mismatch's rows are refolded from them too: then
    the evidence does not rest on the rows being the right ones.
    """
    if isinstance(evidence, (bytes, str)):
        parsed: object = strict_json(evidence, "evidence", HeadsEvidenceError)
    else:
        parsed = evidence
    if not isinstance(parsed, Mapping) or parsed.get("type") != HEADS_EVIDENCE_TYPE:
        raise HeadsEvidenceError(f"evidence: want a JSON object of type {HEADS_EVIDENCE_TYPE!r}")
    evidence = parsed
    finding = evidence.get("finding")
    if finding not in _FIELDS or set(evidence) != _FIELDS[finding]:
        raise HeadsEvidenceError(f"evidence: want finding {MISMATCH!r} or {MISSING!r} with its fields")
    note, origin = evidence["checkpoint"], evidence["origin"]
    if not isinstance(note, str) or not isinstance(origin, str):
        raise HeadsEvidenceError("evidence checkpoint, origin: want strings")
    verifiers = [log.verifier for log in policy.log_for(origin)]
    if not verifiers:
        raise HeadsEvidenceError(f"evidence origin: {origin!r} is not a log of the policy")
    try:
        checkpoint, _ = open_checkpoint(note, verifiers)
    except (FormatError, VerificationError) as exc:
        raise HeadsEvidenceError(f"evidence checkpoint: {exc}") from None
    if checkpoint.origin != origin:
        raise HeadsEvidenceError(f"evidence checkpoint: origin {checkpoint.origin!r}, want {origin!r}")
    size, root = checkpoint.size, checkpoint.root
    heads = _leaf_of(evidence["heads_leaf"], "heads_leaf")
    _included("heads_leaf", heads, size, root)
    index, data, _ = heads
    if finding == MISSING:
        last = _leaf_of(evidence["last_leaf"], "last_leaf")
        _included("last_leaf", last, size, root)
        if not is_heads_leaf(data):
            raise HeadsEvidenceError(f"evidence heads_leaf: leaf {index} is not a HEADS leaf")
        if last[0] != size - 1:
            raise HeadsEvidenceError(f"evidence last_leaf: index {last[0]}, want the checkpoint's last, {size - 1}")
        if is_heads_leaf(last[1]):
            raise HeadsEvidenceError(f"evidence last_leaf: leaf {last[0]} is a HEADS leaf")
        return (f"the checkpoint of size {size} of {origin!r} ends with leaf {size - 1}, which is not a HEADS "
                f"leaf, though the log wrote HEADS leaf {index} before it")
    want_obj = evidence["want"]
    if not isinstance(want_obj, Mapping) or set(want_obj) != {"previous", "count", "root"}:
        raise HeadsEvidenceError("evidence want: want {previous, count, root}")
    rows = _rows(evidence["rows"])
    try:
        # The rows in the order their fleets first appeared: the heads tree's order.
        table = HeadsTable.from_rows(rows)
        want = HeadsLeaf(_uint(want_obj["previous"], "want.previous"), _uint(want_obj["count"], "want.count"),
                         hex_hash(want_obj["root"], "evidence want.root", HeadsEvidenceError),
                         _layout(data))
    except HeadsError as exc:
        raise HeadsEvidenceError(f"evidence rows/want: {exc}") from None
    late = [r.leaf_index for r in rows if r.leaf_index >= index]
    if late:
        raise HeadsEvidenceError(f"evidence rows: leaf index {late[0]} is not before the HEADS leaf {index}")
    if table.heads_leaf(want.previous, _layout(data)) != want:
        raise HeadsEvidenceError(f"evidence want: the rows give count {table.count}, root {table.root().hex()}, "
                                 f"not the evidence's {want.count}, {want.root.hex()}")
    if leaves is not None:
        if len(leaves) < index:
            raise HeadsEvidenceError(f"leaves: got {len(leaves)}, want the log's first {index} at least")
        refolded = fold_leaves(leaves[:index])
        if refolded.rows != table.rows:
            raise HeadsEvidenceError(f"evidence rows: the leaves before {index} fold to another table "
                                     f"(count {refolded.count}, root {refolded.root().hex()})")
    try:
        got = decode_heads_leaf(data)
    except HeadsError as exc:
        return f"leaf {index} of {origin!r} is a HEADS leaf that does not decode: {exc}"
    if got.count == 0:
        return f"HEADS leaf {index} of {origin!r} commits to an empty heads table"
    if got == want:
        raise HeadsEvidenceError(f"evidence heads_leaf: HEADS leaf {index} is the fold's ({_leaf_text(want)})")
    return (f"HEADS leaf {index} of {origin!r}, in its signed tree of size {size}, says {_leaf_text(got)}; "
            f"the bundles before it give {_leaf_text(want)}")
