"""JSON read routes: log info, proofs, entries, bundles and fleets."""
from __future__ import annotations

import json

from aiohttp import web

from ..bundle import decode_leaf
from ..bundle.heads import decode_heads_leaf
from ..formats.receipt import build_receipt
from ..http.budget import send_large
from ..http.errors import bad_request, not_found
from ..http.params import decimal, hex_hash, query
from ..http.responses import IMMUTABLE, NO_STORE, hex_list, json_response, raw_json_response
from ..merkle import InvalidParameterError
from ..read.tree_reader import BeyondTreeError
from ..storage import HEADS_LEAF, LeafRow
from .keys import CONFIG, LOG_KEY, READER, RESPONSE_BUDGET, STORE
from .published import published_covering, published_latest


async def get_log(request: web.Request) -> web.Response:
    query(request, set())
    app = request.app
    key = app[LOG_KEY]
    cp = await published_latest(app)
    return json_response({
        "origin": key.origin,
        "verifier_key": key.vkey,
        # Every key the log signs checkpoints with: 0x01, 0x04 and, if it has one, the
        # ML-DSA-44 0x06 key (docs/formats.md, "Checkpoints").
        "verifier_keys": list(key.vkeys),
        "public_key": key.public_pem,
        "tree_size": cp.tree_size,
        "checkpoint": cp.note,
    }, cache="public, max-age=1")


async def get_inclusion_proof(request: web.Request) -> web.Response:
    q = query(request, {"tree_size"}, {"index", "leaf_hash"})
    size = decimal(q["tree_size"], "tree_size")
    if ("index" in q) == ("leaf_hash" in q):
        raise bad_request("give exactly one of index and leaf_hash")
    reader = request.app[READER]
    index: int | None
    if "index" in q:
        index = decimal(q["index"], "index")
        lh = None
    else:
        lh = hex_hash(q["leaf_hash"], "leaf_hash")
        index = await request.app[STORE].leaf_index(lh)
        if index is None:
            raise not_found(f"no entry has leaf hash {lh.hex()}")
    if index >= size:
        raise bad_request(f"index {index} is not below tree_size {size}")
    try:
        proof, at_index = await reader.inclusion_proof_and_leaf(index, size)
        lh = lh or at_index
    except (BeyondTreeError, InvalidParameterError) as e:
        raise bad_request(str(e)) from None
    # Byte for byte what json_response would give for {"index", "tree_size", "leaf_hash", "proof"}.
    return raw_json_response(
        b'{"index":%d,"tree_size":%d,"leaf_hash":"%s","proof":%s}' % (index, size, lh.hex().encode(), hex_list(proof)),
        cache=IMMUTABLE,
    )


async def get_consistency_proof(request: web.Request) -> web.Response:
    q = query(request, {"first", "second"})
    first, second = decimal(q["first"], "first"), decimal(q["second"], "second")
    if first > second:
        raise bad_request(f"first ({first}) must not exceed second ({second})")
    try:
        proof = await request.app[READER].consistency_proof(first, second)
    except (BeyondTreeError, InvalidParameterError) as e:
        raise bad_request(str(e)) from None
    return raw_json_response(b'{"first":%d,"second":%d,"proof":%s}' % (first, second, hex_list(proof)), cache=IMMUTABLE)


async def get_entries(request: web.Request) -> web.StreamResponse:
    q = query(request, {"start", "end"})
    start, end = decimal(q["start"], "start"), decimal(q["end"], "end")
    if start >= end:
        raise bad_request(f"start ({start}) must be below end ({end})")
    reader = request.app[READER]
    try:
        await reader.covering(end)
    except BeyondTreeError as e:
        raise bad_request(str(e)) from None
    limits = request.app[CONFIG].limits
    end = min(end, start + limits.entries_page_size)
    # The page is also bounded in bytes (limits.entries_page_bytes, passed by the entry
    # that crosses it): 256 entries of large bundles are ~13 MB of JSON, which one
    # response must not pin. Read a few rows at a time so the rows are bounded too.
    store, parts, size, at = request.app[STORE], [], 0, start
    while at < end and size < limits.entries_page_bytes:
        batch_end = min(end, at + _READ_BATCH)
        rows = await store.read_leaves(at, batch_end)
        if len(rows) != batch_end - at:
            raise RuntimeError(f"storage returned {len(rows)} leaves for [{at}, {batch_end})")
        for r in rows:
            item = {"index": r.idx, "leaf_hash": r.leaf_hash.hex(), **_content(r)}
            parts.append(json.dumps(item, separators=(",", ":")).encode())
            size += len(parts[-1])
            at = r.idx + 1
            if size >= limits.entries_page_bytes:
                break
    body = b'{"start":%d,"end":%d,"entries":[%s]}' % (start, at, b",".join(parts))
    return await send_large(request, body, {"Content-Type": "application/json", "Cache-Control": IMMUTABLE},
                            request.app[RESPONSE_BUDGET])


_READ_BATCH = 16


async def entry_json(app: web.Application, index: int, leaf_hash: bytes) -> dict:
    row = await app[STORE].leaf_by_hash(leaf_hash)
    if row is None or row.idx != index:
        raise RuntimeError(f"entry {index} with leaf hash {leaf_hash.hex()} vanished")
    return _entry(row)


def _content(row: LeafRow) -> dict:
    """What a leaf holds: a bundle's envelope, or a HEADS leaf's fields (docs/fleet-heads.md)."""
    if row.kind == HEADS_LEAF:
        heads = decode_heads_leaf(row.leaf)
        return {"heads": {"type": heads.layout, "previous": heads.previous, "count": heads.count,
                          "root": heads.root.hex()}}
    return {"envelope": decode_leaf(row.leaf).to_dict()}


def _entry(row: LeafRow) -> dict:
    out = {
        "index": row.idx,
        "leaf_hash": row.leaf_hash.hex(),
        "integrated_at": row.integrated_at.isoformat().replace("+00:00", "Z"),
    }
    if row.kind != HEADS_LEAF:
        out |= {"fleet_id": row.fleet_id, "sequence": row.sequence}
    return out | _content(row)


async def _entry_with_receipt(app: web.Application, row: LeafRow) -> dict:
    reader = app[READER]
    cp = await published_covering(app, row.idx + 1, wait=False)
    proof = await reader.inclusion_proof(row.idx, cp.tree_size)
    out = _entry(row)
    out["receipt"] = build_receipt(row.idx, row.leaf_hash, cp.tree_size, cp.note, proof, duplicate=False)
    return out


async def get_bundle(request: web.Request) -> web.Response:
    query(request, set())
    lh = hex_hash(request.match_info["leaf_hash"], "leaf_hash")
    row = await request.app[STORE].leaf_by_hash(lh)
    if row is None:
        raise not_found(f"no entry has leaf hash {lh.hex()}")
    return json_response(await _entry_with_receipt(request.app, row), cache=NO_STORE)


async def get_fleet(request: web.Request) -> web.Response:
    query(request, set())
    fleet_id = request.match_info["fleet_id"]
    if not 1 <= len(fleet_id) <= 128 or not all(c.isascii() and (c.isalnum() or c in "._:-") for c in fleet_id):
        raise bad_request(f"fleet_id: want 1-128 of [A-Za-z0-9._:-], got {fleet_id[:140]!r}")
    row = await request.app[STORE].fleet_latest(fleet_id)
    if row is None:
        raise not_found(f"fleet {fleet_id!r} has no logged bundle")
    return json_response(await _entry_with_receipt(request.app, row), cache=NO_STORE)
