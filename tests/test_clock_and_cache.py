"""Checkpoint times never go backwards, and cache headers fit each resource."""
from __future__ import annotations

import pytest

from bundle_factory import BundleFactory
from logserver.formats.checkpoint import open_checkpoint
from logserver.formats.cosignature import CosignatureVerifier, timestamp_of
from logserver.api.keys import LOG_KEY, SEQUENCER, STORE
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
    assert await server.app[SEQUENCER].integrate([]) is not None  # idle re-sign still happens
    rows = await server.app[STORE].checkpoints()
    assert len(rows) >= before + 1
    signed = [r.signed_at_ms for r in rows]
    assert signed == sorted(signed) and len(set(signed)) == len(signed), signed
    assert times == sorted(times), times
    assert rows[-1].signed_at_ms > 1_900_000_000_000  # never dragged back to the stepped clock


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
    for path in ("/checkpoint", "/v1/log", "/v1/fleets/cache", "/tile/0/000.p/%d" % size):
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
