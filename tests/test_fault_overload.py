"""Overload: a real server offered at least 5x what it can append sheds load with 503.

The server (`logserver serve`, its own process) gets a small queue
(`sequencer.max_pending = 16`) and one entry per batch (`max_batch_size = 1`), so
its capacity is reachable on a small machine. Writers submit fresh envelopes
back to back, ignoring Retry-After, while readers fetch checkpoints, proofs and
tiles and a probe samples /metrics and the server's RSS. Afterwards:

* the server was offered at least 5x what it appended (attempts >= 5 x 201s), and
  every refusal was 503 `overloaded` with `Retry-After` (no other status at all);
* no acknowledged entry was lost: every 201 receipt's leaf is at its index, and the log
  holds no bundle without its 201 (each followed by its batch's HEADS leaf);
* reads succeeded at least 99% of the time;
* the pending queue never exceeded max_pending, and RSS stayed bounded.

LOGSERVER_LONG_FAULTS=1 runs the load for 60 s instead of 6 s.
"""
from __future__ import annotations

import asyncio
import json
import os
import time

import pytest
from aiohttp import ClientSession, ClientTimeout, TCPConnector

from bundle_factory import BundleFactory
from server_harness import ServerProcess, rss_bytes, write_config

pytestmark = pytest.mark.fault

LONG = os.environ.get("LOGSERVER_LONG_FAULTS") == "1"
LOAD_S = 60.0 if LONG else 6.0
MAX_PENDING = 16
WRITERS = 48
READERS = 4
RETRY_AFTER_S = 3
RSS_GROWTH_LIMIT = 50 * 1024 * 1024
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory):
    extra = (f"[limits]\nretry_after_s = {RETRY_AFTER_S}\n"
             f"[sequencer]\nmax_pending = {MAX_PENDING}\nmax_batch_size = 1\nmax_batch_delay_ms = 0\n"
             "commit_timeout_s = 30\n")
    cfg = write_config(tmp_path_factory.mktemp("overload"), database_url, extra=extra)
    proc = ServerProcess(cfg, database_url)
    await proc.start()
    yield proc
    await proc.stop()
    proc.kill_now()


def pending_from_metrics(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("logserver_pending_submissions "):
            return float(line.split()[1])
    raise AssertionError("logserver_pending_submissions missing from /metrics")


async def test_five_times_capacity_is_shed_with_503(server):
    url = server.url
    # Envelopes are signed up front so that the writers are limited by the server only.
    envelopes = [BundleFactory(fleet_id=f"overload-{w}").many(400 if LONG else 120) for w in range(WRITERS)]
    receipts: list[dict] = []
    refusals: dict[tuple[int, str], int] = {}
    reads = {"ok": 0, "failed": 0}
    pending_seen: list[float] = []
    rss_seen: list[int] = []
    stop = asyncio.Event()

    async with ClientSession(timeout=ClientTimeout(total=60), connector=TCPConnector(limit=0)) as s:
        # Some entries to read proofs against.
        for e in BundleFactory(fleet_id="overload-seed").many(8):
            async with s.post(url + "/v1/bundles", data=e.to_json(), headers=JSON) as r:
                assert r.status == 201
        baseline_rss = rss_bytes(server.proc.pid)

        async def writer(mine) -> None:
            for envelope in mine:
                if stop.is_set():
                    return
                async with s.post(url + "/v1/bundles", data=envelope.to_json(), headers=JSON) as r:
                    body = await r.read()
                    if r.status == 201:
                        receipts.append(json.loads(body))
                        continue
                    code = json.loads(body)["error"]["code"]
                    refusals[(r.status, code)] = refusals.get((r.status, code), 0) + 1
                    assert r.headers.get("Retry-After") == str(RETRY_AFTER_S), (r.status, body)

        async def reader(i: int) -> None:
            paths = ["/checkpoint", "/v1/log", f"/v1/proof/inclusion?tree_size=8&index={i % 8}",
                     "/v1/proof/consistency?first=3&second=8", "/tile/0/000.p/8", "/v1/fleets/overload-seed"]
            n = 0
            while not stop.is_set():
                async with s.get(url + paths[n % len(paths)]) as r:
                    await r.read()
                    reads["ok" if r.status == 200 else "failed"] += 1
                n += 1

        async def probe() -> None:
            while not stop.is_set():
                async with s.get(url + "/metrics") as r:
                    pending_seen.append(pending_from_metrics(await r.text()))
                rss_seen.append(rss_bytes(server.proc.pid))
                await asyncio.sleep(0.1)

        tasks = [asyncio.create_task(writer(envelopes[w])) for w in range(WRITERS)]
        tasks += [asyncio.create_task(reader(i)) for i in range(READERS)]
        tasks.append(asyncio.create_task(probe()))
        started = time.monotonic()
        await asyncio.sleep(LOAD_S)
        stop.set()
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started

        appended = len(receipts)
        shed = sum(refusals.values())
        summary = (f"{appended} appended, {shed} shed {refusals} in {elapsed:.1f}s; reads {reads}; "
                   f"max pending {max(pending_seen)}; RSS +{(max(rss_seen) - baseline_rss) / 2**20:.1f} MiB")
        print("\noverload:", summary)
        assert set(refusals) == {(503, "overloaded")}, summary
        assert appended > 0, summary
        assert appended + shed >= 5 * appended, f"offered load below 5x capacity: {summary}"
        assert reads["ok"] >= 0.99 * (reads["ok"] + reads["failed"]) and reads["ok"] > 100, summary
        assert max(pending_seen) <= MAX_PENDING, summary
        assert max(rss_seen) - baseline_rss < RSS_GROWTH_LIMIT, summary

        # No acknowledged entry is lost: each receipt's leaf is at its index.
        async with s.get(url + "/v1/log") as r:
            size = (await r.json())["tree_size"]
        logged: dict[int, str] = {}
        heads: list[int] = []
        start = 0
        while start < size:
            async with s.get(url + f"/v1/entries?start={start}&end={size}") as r:
                page = await r.json()
            logged.update({e["index"]: e["leaf_hash"] for e in page["entries"] if "envelope" in e})
            heads += [e["index"] for e in page["entries"] if "heads" in e]
            start = page["end"]
        # Nothing appended without its 201; one bundle per batch, each batch ended by its
        # HEADS leaf (docs/fleet-heads.md): bundles and HEADS leaves alternate.
        assert len(logged) == 8 + appended, (size, len(logged), appended)
        assert size == 2 * len(logged) and heads == list(range(1, size, 2)), (size, appended)
        for receipt in receipts:
            assert logged[receipt["index"]] == receipt["leaf_hash"], receipt["index"]
        assert len({r["index"] for r in receipts}) == appended
