"""Hostile clients against real `logserver serve` and `logserver witness` processes
(issue 23, section 1; docs/reliability.md "Hostile clients").

* an idle-connection flood, with the server's file-descriptor limit lowered so the
  flood would exhaust it: honest clients are still served, nothing is logged per
  connection, no accept error traceback;
* a flood of malformed request heads: each gets the JSON 400, and the server log
  grows by a few rate-limited lines, not a traceback per request;
* a connection that never sends a request head is closed after the header timeout;
* HTTP/0.9 request lines, Expect, a trailing %0A in parameters, gzip;q=0.

Every load here is bounded in count, stays on 127.0.0.1 and stops by itself.
"""
from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import resource

import pytest
from aiohttp import ClientSession, ClientTimeout

from bundle_factory import BundleFactory
from server_harness import ServerProcess, free_port, write_config
from witness_harness import witness_process

pytestmark = pytest.mark.fault

JSON = {"Content-Type": "application/json"}
SERVER_NOFILE = 1024  # the server's RLIMIT_NOFILE: max_connections is fitted under it
IDLE_FLOOD = 3000     # idle connections opened at once: far beyond what the server can hold
MALFORMED = 400       # malformed request heads per sending task
SENDERS = 4
HEADER_TIMEOUT_S = 1.0
LIMITS = f"[limits]\nheader_timeout_s = {HEADER_TIMEOUT_S}\n"


def raise_own_file_limit(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


@pytest.fixture(scope="module")
async def log_server(database_url, tmp_path_factory):
    cfg = write_config(tmp_path_factory.mktemp("hostile"), database_url, extra=LIMITS)
    proc = ServerProcess(cfg, database_url, nofile=SERVER_NOFILE)
    await proc.start()
    yield proc
    await proc.stop()
    proc.kill_now()


@pytest.fixture(scope="module")
async def witness_server(database_url, tmp_path_factory):
    w = witness_process(tmp_path_factory.mktemp("hostile"), database_url, free_port(), nofile=SERVER_NOFILE)
    await w.start()
    yield w
    w.stop()


@pytest.fixture(params=["log_server", "witness_server"])
def target(request):
    return request.getfixturevalue(request.param)


async def raw(port: int, data: bytes, *, read_timeout: float = 30) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(1 << 16), read_timeout)
    finally:
        writer.close()


def status_of(response: bytes) -> int:
    line = response.split(b"\r\n", 1)[0]
    assert line.startswith(b"HTTP/"), response[:200]
    return int(line.split()[1])


def json_error(response: bytes) -> dict:
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    return json.loads(body)["error"]


# --- connections ---------------------------------------------------------------------------------


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(log_server):
    reader, writer = await asyncio.open_connection("127.0.0.1", log_server.port)
    try:
        # EOF (b"") from the server, not the test's own bound.
        assert await asyncio.wait_for(reader.read(100), HEADER_TIMEOUT_S + 20) == b""
    finally:
        writer.close()


async def test_a_request_head_trickled_forever_is_cut(log_server):
    reader, writer = await asyncio.open_connection("127.0.0.1", log_server.port)
    writes = 0
    try:
        writer.write(b"GET /v1/log HTTP/1.1\r\nX-Slow: ")
        while not reader.at_eof() and writes < 100:
            writer.write(b"a")
            await writer.drain()
            writes += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(100), 0.2)
    except ConnectionError:
        pass
    finally:
        writer.close()
    assert writes < 100, "a request head sent one byte every 0.2 s for 20 s was never cut"


async def idle_flood(port: int, n: int) -> list[asyncio.StreamWriter]:
    raise_own_file_limit(n + 512)
    writers = []
    for _ in range(n):
        try:
            _, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        except (TimeoutError, OSError):
            continue  # the backlog is full: the flood is as big as it can get
        writers.append(w)
    return writers


async def test_an_idle_connection_flood_does_not_lock_out_honest_clients(log_server):
    before = log_server.output()
    writers = await idle_flood(log_server.port, IDLE_FLOOD)
    try:
        assert len(writers) > SERVER_NOFILE, "the flood must exceed the server's file limit to mean anything"
        async with ClientSession(timeout=ClientTimeout(total=30)) as s:
            for i in range(3):
                async with s.get(log_server.url + "/checkpoint") as r:
                    assert r.status == 200
                factory = BundleFactory(fleet_id=f"flood-{i}")
                async with s.post(log_server.url + "/v1/bundles", data=factory.envelope_json(), headers=JSON) as r:
                    assert r.status == 201, await r.text()
    finally:
        for w in writers:
            w.close()
    added = log_server.output()[len(before):]
    assert "Too many open files" not in added and "Traceback" not in added, added[-3000:]
    assert len(added.splitlines()) <= 10, added[-3000:]
    assert "limits.max_connections lowered" in log_server.output()


async def test_an_idle_connection_flood_does_not_lock_out_the_witness(witness_server):
    before = witness_server.output()
    writers = await idle_flood(witness_server.port, IDLE_FLOOD)
    try:
        assert len(writers) > SERVER_NOFILE
        async with ClientSession(timeout=ClientTimeout(total=30)) as s:
            for _ in range(3):
                async with s.get(witness_server.url + "/readyz") as r:
                    assert r.status == 200
    finally:
        for w in writers:
            w.close()
    added = witness_server.output()[len(before):]
    assert "Too many open files" not in added and "Traceback" not in added, added[-3000:]
    assert len(added.splitlines()) <= 10, added[-3000:]


# --- malformed requests ----------------------------------------------------------------------------


MALFORMED_HEADS = [
    b"GET /a\x01" + b"A" * 200 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
    b"G\x00T / HTTP/1.1\r\n\r\n",
]


async def test_a_malformed_request_flood_costs_a_few_log_lines(target):
    before = target.output()
    answers: list[bytes] = []

    async def sender(k: int) -> None:
        for i in range(MALFORMED):
            answers.append(await raw(target.port, MALFORMED_HEADS[(i + k) % len(MALFORMED_HEADS)]))

    await asyncio.gather(*(sender(k) for k in range(SENDERS)))
    assert len(answers) == SENDERS * MALFORMED
    for a in answers:
        assert status_of(a) == 400, a[:300]
        assert json_error(a)["code"] == "bad_request", a[:300]
    added = target.output()[len(before):]
    assert "Traceback" not in added, added[:3000]
    # One line, then at most one per 10 s with the count: a handful for this whole flood.
    lines = [line for line in added.splitlines() if "malformed request" in line]
    assert 1 <= len(lines) <= 4, added[:3000]
    assert len(added.splitlines()) <= 6, added[:3000]
    assert len(added) < 2000


async def test_a_request_line_without_a_version_gets_400(target):
    answer = await raw(target.port, b"GET /healthz\r\n\r\n")
    assert b" 200 " not in answer.split(b"\r\n", 1)[0]
    assert status_of(answer) == 400
    assert json_error(answer)["code"] == "bad_request"


# --- Expect --------------------------------------------------------------------------------------------


async def test_expect_100_continue_with_a_body_over_the_limit_gets_413_at_once(log_server):
    answer = await raw(log_server.port, b"POST /v1/bundles HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                                        b"Content-Length: 1000000\r\nExpect: 100-continue\r\n\r\n")
    assert not answer.startswith(b"HTTP/1.1 100"), answer[:200]
    assert status_of(answer) == 413
    assert json_error(answer)["code"] == "too_large"


async def test_expect_other_than_100_continue_gets_417(log_server):
    answer = await raw(log_server.port, b"POST /v1/bundles HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                                        b"Content-Length: 2\r\nExpect: teapot\r\n\r\n{}")
    assert status_of(answer) == 417
    assert json_error(answer)["code"] == "expectation_failed"


async def test_expect_100_continue_within_the_limit_continues(log_server):
    body = BundleFactory(fleet_id="expect").envelope_json()
    reader, writer = await asyncio.open_connection("127.0.0.1", log_server.port)
    try:
        writer.write(b"POST /v1/bundles HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body))
        await writer.drain()
        assert await asyncio.wait_for(reader.readline(), 30) == b"HTTP/1.1 100 Continue\r\n"
        assert await reader.readline() == b"\r\n"
        writer.write(body)
        await writer.drain()
        assert await asyncio.wait_for(reader.readline(), 30) == b"HTTP/1.1 201 Created\r\n"
    finally:
        writer.close()


async def test_expect_on_the_witness_is_checked_before_the_body(witness_server):
    answer = await raw(witness_server.port, b"POST /add-checkpoint HTTP/1.1\r\nHost: t\r\n"
                                            b"Content-Length: 100000000\r\nExpect: 100-continue\r\n\r\n")
    assert status_of(answer) == 413


# --- parameters --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [
    "/v1/entries?start=0&end=1%0A",
    "/v1/proof/inclusion?leaf_hash=" + "ab" * 32 + "%0A&tree_size=1",
    "/v1/proof/consistency?first=0%0A&second=1",
    "/v1/bundles/" + "ab" * 32 + "%0A",
    "/tile/0/000%0A",
    "/v1/fleets/abc%0A",
])
async def test_a_parameter_with_a_trailing_newline_is_refused(log_server, path):
    async with ClientSession() as s, s.get(log_server.url + path) as r:
        assert r.status == 400, (path, r.status, await r.text())
        assert "immutable" not in r.headers.get("Cache-Control", "")


# --- gzip --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("accept, gzipped", [
    ("gzip", True), ("gzip;q=0", False), ("gzip; q=0.000", False), ("identity", False),
    ("*", True), ("*;q=0", False), ("gzip;q=0, *", False), ("br, gzip;q=0.5", True), ("x-gzip", True),
])
async def test_entry_bundles_are_gzipped_only_when_accepted(log_server, accept, gzipped):
    async with ClientSession(auto_decompress=False) as s:
        async with s.post(log_server.url + "/v1/bundles", data=BundleFactory(fleet_id="gz").envelope_json(),
                          headers=JSON) as r:
            assert r.status in (200, 201), await r.text()  # 200: a duplicate
        async with s.get(log_server.url + "/v1/log") as r:
            size = (await r.json())["tree_size"]
        async with s.get(log_server.url + f"/tile/entries/000.p/{size}", headers={"Accept-Encoding": accept}) as r:
            assert r.status == 200
            body = await r.read()
            assert (r.headers.get("Content-Encoding") == "gzip") is gzipped
            if gzipped:
                body = gzip.decompress(body)
            assert len(body) > 0
