"""Unit tests of the HTTP guards: byte budgets, gzip negotiation and compression, the
rate-limited log (logserver/http/budget.py, api/compression.py, http/serving.py)."""
from __future__ import annotations

import asyncio
import gzip
import logging
import threading

import pytest

from logserver.api import compression
from logserver.api.compression import Gzipper, accepts_gzip
from logserver.http.budget import ByteBudget
from logserver.http.errors import ApiError
from logserver.http.serving import RateLimitedLog


def test_a_budget_counts_a_shared_object_once_and_refuses_past_its_bound():
    budget = ByteBudget(100, "responses")
    shared, other = b"a" * 60, b"b" * 30
    budget.hold(shared)
    budget.hold(shared)
    assert budget.used == 60
    budget.hold(other)
    assert budget.used == 90
    with pytest.raises(ApiError) as e:
        budget.hold(b"c" * 20)
    assert (e.value.status, e.value.code) == (503, "overloaded")
    assert budget.refused == 1
    budget.release(shared)
    assert budget.used == 90  # still held once
    budget.release(shared)
    budget.release(other)
    assert budget.used == 0


def test_an_object_larger_than_the_budget_is_still_served_when_nothing_else_is_held():
    budget = ByteBudget(10, "responses")
    big = b"x" * 50
    budget.hold(big)  # alone: refusing it would make it unservable
    with pytest.raises(ApiError):
        budget.take(1)
    budget.release(big)
    budget.take(5)
    budget.give(5)
    assert budget.used == 0


@pytest.mark.parametrize("header, want", [
    ("", False), ("gzip", True), ("GZIP", True), ("GzIp;Q=0.5", True), ("gzip;q=0", False), ("gzip; q=0.0", False),
    ("gzip;q=0.001", True), ("gzip;q=1.000", True), ("gzip;q=1.5", False), ("gzip;q=abc", False),
    ("deflate, gzip", True), ("identity", False), ("*", True), ("*;q=0", False),
    ("gzip;q=0, *", False), ("*, gzip;q=0", False), ("br;q=1, *;q=0.1", True), ("x-gzip", True),
    ("notgzip", False),
])
def test_accept_encoding_is_negotiated_as_rfc_9110_says(header, want):
    assert accepts_gzip(header) is want


async def test_a_full_bundle_is_compressed_once_in_a_worker_thread(monkeypatch):
    threads: list[int] = []
    real = gzip.compress

    def recording(data, *args, **kwargs):
        threads.append(threading.get_ident())
        return real(data, *args, **kwargs)

    monkeypatch.setattr(compression.gzip, "compress", recording)
    gz = Gzipper(max_bytes=1 << 20)
    data = b"entry" * 10_000
    results = await asyncio.gather(*(gz.full_bundle(7, data) for _ in range(8)))
    assert all(r == results[0] for r in results)
    assert gzip.decompress(results[0]) == data
    assert gz.compressions == 1 and len(threads) == 1
    assert threads[0] != threading.get_ident()  # not on the event loop's thread
    assert await gz.full_bundle(7, data) == results[0] and gz.compressions == 1  # cached


async def test_the_compressed_bundle_cache_stays_within_its_bound():
    gz = Gzipper(max_bytes=300)
    for i in range(20):
        await gz.full_bundle(i, bytes(range(256)) * (i + 1))
    assert gz._bytes <= 300 and sum(len(v) for v in gz._cache.values()) == gz._bytes


async def test_a_reader_who_leaves_does_not_cancel_the_compression_for_the_others():
    gz = Gzipper()
    data = b"z" * 100_000
    first = asyncio.ensure_future(gz.full_bundle(1, data))
    second = asyncio.ensure_future(gz.full_bundle(1, data))
    await asyncio.sleep(0)
    first.cancel()
    assert gzip.decompress(await second) == data


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_rate_limited_log_writes_one_line_per_interval_and_counts_the_rest(caplog):
    clock = Clock()
    logger = logging.getLogger("test.ratelimited")
    limited = RateLimitedLog(logger, interval=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.ratelimited"):
        for i in range(1000):
            limited.warning("malformed request", f"request {i}")
        assert [r.getMessage() for r in caplog.records] == ["malformed request: request 0"]
        assert limited.suppressed("malformed request") == 999
        clock.now += 10
        limited.warning("malformed request", "request 1000")
    assert caplog.records[-1].getMessage() == "malformed request: request 1000 (999 more since the last line)"
    assert len(caplog.records) == 2
