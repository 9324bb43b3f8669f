"""An idle log keeps a fresh signed time without storing rows (issue 23, section 3).

Before migration 0003 an idle log stored a checkpoint row every
checkpoint_interval_s (about 17,000 a day at 5 s), in tables that forbid deletion,
and fsck re-verified every one. Now the re-sign updates only log_state's slot.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from bundle_factory import BundleFactory
from logserver.api.keys import LOG_KEY, STORE
from logserver.formats.checkpoint import open_checkpoint
from logserver.formats.cosignature import CosignatureVerifier, timestamp_of
from server_harness import start_server, write_config

JSON = {"Content-Type": "application/json"}
RESIGNS = 20
DEADLINE_S = 120.0  # generous: a bound on a stuck test, not a measurement


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory):
    cfg = write_config(tmp_path_factory.mktemp("idle"), database_url,
                       extra="[sequencer]\ncheckpoint_interval_s = 0.05\n")
    s = await start_server(cfg)
    yield s
    await s.close()


async def served(server) -> tuple[int, int]:
    """The size and signed time (seconds, the log's cosignature/v1 timestamp) of /checkpoint."""
    key = server.app[LOG_KEY]
    stamp = CosignatureVerifier(key.origin, key._private_key.public_key())
    async with server.session.get("/checkpoint") as resp:
        assert resp.status == 200
        text = await resp.text()
    cp, opened = open_checkpoint(text.encode(), [stamp])
    return cp.size, timestamp_of(opened.verified[0].signature)


async def test_an_idle_log_re_signs_without_storing_rows(server):
    r = await server.session.post("/v1/bundles", data=BundleFactory(fleet_id="idle").envelope_json(), headers=JSON)
    assert r.status == 201, await r.text()
    pool = server.app[STORE].pool
    rows = await pool.fetchval("SELECT count(*) FROM checkpoints")
    size, first_time = await served(server)
    store = server.app[STORE]
    seen = [(await store.latest_checkpoint()).signed_at_ms]
    deadline = time.monotonic() + DEADLINE_S
    while len(seen) <= RESIGNS:
        assert time.monotonic() < deadline, f"only {len(seen) - 1} re-signs: {seen}"
        await asyncio.sleep(0.01)
        t = (await store.latest_checkpoint()).signed_at_ms
        if t != seen[-1]:
            seen.append(t)
    assert seen == sorted(seen)
    # Each re-sign is at least an interval after the last, so 20 of them span >= 1 s:
    # the served signed time (whole seconds) has advanced.
    now_size, now_time = await served(server)
    assert (now_size, now_time > first_time) == (size, True), (first_time, now_time)
    assert await pool.fetchval("SELECT count(*) FROM checkpoints") == rows
    assert await pool.fetchval("SELECT count(*) FROM checkpoints WHERE tree_size = $1", size) == 1
