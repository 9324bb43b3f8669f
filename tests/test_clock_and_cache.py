"""Checkpoint times never go backwards, and cache headers fit each resource."""
from __future__ import annotations

import asyncio

import pytest

from bundle_factory import BundleFactory
from logserver.api.keys import LOG_KEY, SEQUENCER, STORE
from logserver.formats.checkpoint import open_checkpoint
from logserver.formats.cosignature import CosignatureVerifier, timestamp_of
from server_harness import start_server, write_config

JSON = {"Content-Type": "application/json"}


class SteppingClock:
    """A clock the test moves by hand, backwards included."""

    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
async def clock():
    return SteppingClock(1_900_000_000.0)


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory, clock):
    s = await start_server(write_config(tmp_path_factory.mktemp("clock"), database_url,
                                        extra="[sequencer]\ncheckpoint_interval_s = 0.2\n"), clock=clock)
    yield s
    await s.close()


async def _submit(server, factory) -> dict:
    r = await server.session.post("/v1/bundles", data=factory.envelope_json(), headers=JSON)
    assert r.status == 201, await r.text()
    return await r.json()


async def test_checkpoint_times_stay_monotonic_when_the_clock_steps_back(server, clock):
    factory = BundleFactory(fleet_id="clock")
    key = server.app[LOG_KEY]
    stamp = CosignatureVerifier(key.origin, key._private_key.public_key())  # the log's cosignature/v1 key
    times = []
    for step in (0, -3600, -86400 * 30, +10, -5):
        clock.t += step
        receipt = await _submit(server, factory)
        _, opened = open_checkpoint(receipt["checkpoint"].encode(), [stamp])
        times.append(timestamp_of(opened.verified[0].signature))
    # An idle re-sign with the clock far behind must not go back either.
    clock.t -= 86400 * 365
    before = len(await server.app[STORE].checkpoints())
    resigned = await server.app[SEQUENCER].integrate([])
    assert resigned is not None  # idle re-sign still happens
    rows = await server.app[STORE].checkpoints()
    # ... in log_state's slot only: the size did not change, so no row (issue 23).
    assert len(rows) == before
    latest = await server.app[STORE].latest_checkpoint()
    assert latest == resigned
    signed = [r.signed_at_ms for r in rows] + [latest.signed_at_ms]
    assert signed == sorted(signed) and len(set(signed)) == len(signed), signed
    assert times == sorted(times), times
    assert rows[-1].signed_at_ms > 1_900_000_000_000  # never dragged back to the stepped clock
    assert latest.signed_at_ms > 1_900_000_000_000


async def test_cache_headers(server):
    factory = BundleFactory(fleet_id="cache")
    for _ in range(3):
        await _submit(server, factory)
    size = (await (await server.session.get("/v1/log")).json())["tree_size"]

    async def cc(path: str) -> str:
        r = await server.session.get(path)
        assert r.status < 500, path
        return r.headers.get("Cache-Control", "")

    # Mutable resources: never immutable.
    for path in ("/checkpoint", "/v1/log", "/v1/fleets/cache", f"/tile/0/000.p/{size}"):
        assert "immutable" not in await cc(path), path
    # Addressed by tree size: immutable.
    for path in (f"/v1/proof/inclusion?tree_size={size}&index=0", f"/v1/proof/consistency?first=1&second={size}",
                 f"/v1/entries?start=0&end={size}"):
        assert "immutable" in await cc(path), path
    # Errors are never cached.
    for path in (f"/v1/proof/inclusion?tree_size={size + 1}&index=0", "/tile/0/x001", "/v1/fleets/nope"):
        assert await cc(path) == "no-store", path
    # Different queries are different URLs with different answers, never one cached response.
    a = await (await server.session.get(f"/v1/proof/inclusion?tree_size={size}&index=0")).json()
    b = await (await server.session.get(f"/v1/proof/inclusion?tree_size={size}&index=1")).json()
    assert a != b


# --- every proof, tile and entries route: cache headers that fit what the response is ---------

IMMUTABLE = "public, max-age=31536000, immutable"


async def _fetch(server, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    r = await server.session.get(path, headers=headers or {}, auto_decompress=False)
    return r.status, r.headers, await r.read()


async def _grow_to(server, size: int, fleet: str) -> None:
    have = (await (await server.session.get("/v1/log")).json())["tree_size"]
    bodies = [BundleFactory(fleet_id=f"{fleet}-{i}").envelope_json() for i in range(max(0, size - have))]
    for start in range(0, len(bodies), 64):
        rs = [server.session.post("/v1/bundles", data=b, headers=JSON) for b in bodies[start:start + 64]]
        for r in await asyncio.gather(*rs):
            assert r.status == 201, await r.text()


async def test_every_read_route_is_cached_only_as_long_as_it_cannot_change(server):
    await _grow_to(server, 260, "cache-all")  # one full tile and bundle, and a partial one
    size = (await (await server.session.get("/v1/log")).json())["tree_size"]
    lh = (await (await server.session.get("/v1/entries?start=5&end=6")).json())["entries"][0]["leaf_hash"]
    w = size - 256
    immutable = [
        f"/v1/proof/inclusion?tree_size={size}&index=5", f"/v1/proof/inclusion?tree_size={size}&leaf_hash={lh}",
        "/v1/proof/inclusion?tree_size=7&index=5", f"/v1/proof/consistency?first=3&second={size}",
        f"/v1/proof/consistency?first=0&second={size}", "/v1/entries?start=0&end=3",
        f"/v1/entries?start=250&end={size}", "/tile/0/000", "/tile/entries/000",
    ]
    short_lived = [f"/tile/0/001.p/{w}", f"/tile/entries/001.p/{w}", "/tile/1/000.p/1"]  # partial tiles
    mutable = ["/checkpoint", "/v1/log", f"/v1/bundles/{lh}", "/v1/fleets/cache-all-0"]
    # Today's errors that become answers once the tree grows: never cached.
    not_yet = [f"/v1/proof/inclusion?tree_size={size + 1}&index=0", f"/v1/proof/consistency?first=1&second={size + 1}",
               f"/v1/entries?start={size}&end={size + 1}", "/tile/0/001", f"/tile/0/001.p/{w + 1}",
               "/tile/entries/001", "/v1/fleets/cache-later"]

    first = {}
    for path in immutable + short_lived + mutable:
        status, headers, body = await _fetch(server, path)
        assert status == 200, (path, body[:200])
        cc = headers["Cache-Control"]
        if path in immutable:
            assert cc == IMMUTABLE, (path, cc)
        elif path in short_lived:
            assert cc == "public, max-age=60", (path, cc)
        else:
            assert "immutable" not in cc and ("no-store" in cc or "max-age=1" in cc), (path, cc)
        head = await server.session.head(path)
        assert head.headers["Cache-Control"] == cc, path  # HEAD says the same
        first[path] = (headers, body)
    for path in not_yet:
        status, headers, _ = await _fetch(server, path)
        assert status in (400, 404) and headers["Cache-Control"] == "no-store", (path, status)

    # Different queries are different URLs with different answers: the query string is the
    # cache key, and no two of these share a response.
    # (By index and by leaf hash are two names of one proof, so they answer the same.)
    by_hash = f"/v1/proof/inclusion?tree_size={size}&leaf_hash={lh}"
    assert first[by_hash][1] == first[f"/v1/proof/inclusion?tree_size={size}&index=5"][1]
    bodies = [first[p][1] for p in immutable if p != by_hash]
    assert len(set(bodies)) == len(bodies)

    # A response that varies with a request header says so (Vary); the others do not vary.
    for path in immutable + short_lived:
        plain = await _fetch(server, path, {"Accept-Encoding": "identity"})
        gz = await _fetch(server, path, {"Accept-Encoding": "gzip"})
        if plain[2] != gz[2]:
            assert "Accept-Encoding" in gz[1].get("Vary", ""), path
            assert "Accept-Encoding" in plain[1].get("Vary", ""), path

    # Grow the tree: everything marked immutable is byte-for-byte what it was; the
    # errors above have become answers (which is why they were not cached).
    await _grow_to(server, 520, "cache-more")
    factory = BundleFactory(fleet_id="cache-later")
    await _submit(server, factory)
    for path in immutable:
        status, _, body = await _fetch(server, path)
        assert (status, body) == (200, first[path][1]), path
    changed = 0
    for path in mutable:
        changed += (await _fetch(server, path))[2] != first[path][1]
    assert changed >= 3  # checkpoint, log info and the receipt in /v1/bundles moved on
    for path in not_yet:
        assert (await _fetch(server, path))[0] == 200, path
