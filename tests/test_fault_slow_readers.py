"""Slow readers cannot pin the server's memory (issue 23, section 1; docs/reliability.md).

A real `logserver serve` process holds a log of 256 large bundles (~15 KB each, so
a full entry bundle is ~3.7 MB and a full /v1/entries page would be too). Readers
ask for those objects and then read nothing, each from its own connection with a
small receive buffer. The server's resident memory must stay within the documented
bound: the response budget (64 MiB) plus two 64 KiB chunks per connection, plus
slack for the interpreter, far below the ~500 MB the same readers pinned before.
/healthz and submissions are still answered meanwhile.

The load is bounded: 96 connections, each sends one request; all stay on 127.0.0.1.
"""
from __future__ import annotations

import asyncio
import json
import socket

import pytest
from aiohttp import ClientSession, ClientTimeout

from bundle_factory import BundleFactory, make_key
from server_harness import ServerProcess, rss_bytes, write_config

pytestmark = pytest.mark.fault

JSON = {"Content-Type": "application/json"}
ENTRIES = 256
KEYS = [make_key(f"hsm-{i}", "ecdsa-p384", i) for i in range(64)]
READERS = 48  # per object kind
BOUND = 120 << 20  # RSS growth allowed: the 64 MiB budget + 96 x 128 KiB + slack


@pytest.fixture(scope="module")
async def big_log(database_url, tmp_path_factory):
    cfg = write_config(tmp_path_factory.mktemp("slow-readers"), database_url)
    proc = ServerProcess(cfg, database_url)
    await proc.start()
    factory = BundleFactory(fleet_id="big")
    bodies = [factory.envelope_json(keys=KEYS) for _ in range(ENTRIES)]
    assert len(bodies[0]) > 18_000
    gate = asyncio.Semaphore(16)
    async with ClientSession(timeout=ClientTimeout(total=120)) as s:
        async def submit(body: bytes) -> None:
            async with gate, s.post(proc.url + "/v1/bundles", data=body, headers=JSON) as r:
                assert r.status == 201, await r.text()
        await asyncio.gather(*(submit(b) for b in bodies))
    yield proc
    await proc.stop()
    proc.kill_now()


async def stalled_reader(port: int, path: str, headers: str = "") -> tuple[asyncio.StreamWriter, bytes]:
    """Send one GET, read only the status line's first bytes, then read nothing more."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n".encode())
    await writer.drain()
    first = await asyncio.wait_for(reader.read(12), 60)  # the server has started answering
    return writer, first


async def test_slow_readers_of_large_objects_do_not_pin_memory(big_log):
    async with ClientSession() as s:
        async with s.get(big_log.url + "/tile/entries/000") as r:
            assert r.status == 200 and len(await r.read()) > 3_000_000
        async with s.get(big_log.url + f"/v1/entries?start=0&end={ENTRIES}") as r:
            page = json.loads(await r.read())
            assert r.status == 200 and 0 < page["end"] < ENTRIES  # bounded in bytes, not only in entries
    before = rss_bytes(big_log.proc.pid)
    readers = []
    try:
        for i in range(READERS):
            readers.append(await stalled_reader(big_log.port, "/tile/entries/000"))
            readers.append(await stalled_reader(big_log.port, f"/v1/entries?start={i}&end={ENTRIES}"))
        statuses = [first[9:12] for _, first in readers]
        assert set(statuses) <= {b"200", b"503"}, statuses
        assert statuses.count(b"200") >= 10  # the budget admits several before it sheds
        grown = rss_bytes(big_log.proc.pid) - before
        assert grown < BOUND, f"RSS grew by {grown >> 20} MiB with {len(readers)} stalled readers"
        async with ClientSession(timeout=ClientTimeout(total=30)) as s:
            async with s.get(big_log.url + "/healthz") as r:
                assert r.status == 200
            async with s.post(big_log.url + "/v1/bundles", headers=JSON,
                              data=BundleFactory(fleet_id="during").envelope_json()) as r:
                assert r.status == 201
    finally:
        for writer, _ in readers:
            writer.close()


@pytest.fixture(scope="module")
async def witness(database_url, tmp_path_factory):
    from server_harness import free_port
    from witness_harness import witness_process

    w = witness_process(tmp_path_factory.mktemp("slow-uploads"), database_url, free_port())
    await w.start()
    yield w
    w.stop()


UPLOADS = 300
UPLOAD_SENT = 900 << 10  # of a declared 1,000,000: the witness waits for the rest


async def test_slow_uploads_to_the_witness_do_not_pin_memory(witness):
    before = rss_bytes(witness.proc.pid)
    writers = []
    chunk = b"x" * (64 << 10)
    try:
        for _ in range(UPLOADS):
            reader, writer = await asyncio.open_connection("127.0.0.1", witness.port)
            writer.write(b"POST /add-checkpoint HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n")
            sent = 0
            try:
                while sent < UPLOAD_SENT and not reader.at_eof():
                    writer.write(chunk)
                    sent += len(chunk)
                    await asyncio.wait_for(writer.drain(), 0.5)
            except (TimeoutError, ConnectionError):
                pass  # refused (503) and closed, or the witness stopped reading: both bound it
            writers.append(writer)
        grown = rss_bytes(witness.proc.pid) - before
        assert grown < 64 << 20, f"witness RSS grew by {grown >> 20} MiB with {UPLOADS} slow uploads"
        async with ClientSession(timeout=ClientTimeout(total=30)) as s, s.get(witness.url + "/healthz") as r:
            assert r.status == 200
    finally:
        for w in writers:
            w.close()
