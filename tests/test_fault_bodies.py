"""Request bodies at and over the limit, slow and partial bodies, and oversized floods.

The server is a real `logserver serve` process (the production HTTP settings of
cli/serve.py), with `limits.max_body_bytes = 8192` and `limits.request_timeout_s = 1`.
Requests are written on raw sockets so the test controls every byte: with and
without Content-Length (chunked), stalled half-way, trickled.
"""
from __future__ import annotations

import asyncio
import json
import os

import pytest
from aiohttp import ClientSession

from bundle_factory import BundleFactory
from server_harness import ServerProcess, rss_bytes, write_config

pytestmark = pytest.mark.fault

LIMIT = 8192
TIMEOUT_S = 1
LONG = os.environ.get("LOGSERVER_LONG_FAULTS") == "1"
FLOOD = 200
FLOOD_BODY = (4 if LONG else 1) * 1024 * 1024  # each oversized upload offers this many bytes
RSS_GROWTH_LIMIT = 30 * 1024 * 1024


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory):
    extra = f"[limits]\nmax_body_bytes = {LIMIT}\nrequest_timeout_s = {TIMEOUT_S}\n"
    cfg = write_config(tmp_path_factory.mktemp("bodies"), database_url, extra=extra)
    proc = ServerProcess(cfg, database_url)
    await proc.start()
    yield proc
    await proc.stop()
    proc.kill_now()


# --- raw HTTP/1.1 -------------------------------------------------------------------------


def padded(body: bytes, size: int) -> bytes:
    """The same JSON value padded with insignificant whitespace to exactly `size` bytes."""
    assert len(body) <= size - 2 and body.startswith(b"{")
    return b"{" + b" " * (size - len(body)) + body[1:]


def head(length: int | None, path: str = "/v1/bundles") -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"{framing}\r\nConnection: close\r\n\r\n").encode()


def chunked(body: bytes, chunk: int = 1000) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + chunk]), body[i:i + chunk]) for i in range(0, len(body), chunk)]
    return b"".join(parts) + b"0\r\n\r\n"


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    status_line = await reader.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


async def send_raw(server: ServerProcess, data: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(read_response(reader), 30)
    finally:
        writer.close()


async def tree_size(server: ServerProcess) -> int:
    async with ClientSession() as s, s.get(server.url + "/v1/log") as r:
        return (await r.json())["tree_size"]


def error_code(body: bytes) -> str:
    return json.loads(body)["error"]["code"]


# --- at the limit and one byte over ----------------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_body_exactly_at_the_limit_is_processed_one_byte_over_is_413(server, framing):
    factory = BundleFactory(fleet_id=f"limit-{framing}")
    before = await tree_size(server)

    at_limit = padded(factory.envelope_json(), LIMIT)
    assert len(at_limit) == LIMIT
    request = head(LIMIT) + at_limit if framing == "content-length" else head(None) + chunked(at_limit)
    status, _, body = await send_raw(server, request)
    assert status == 201, body
    assert (json.loads(body)["index"], json.loads(body)["tree_size"]) == (before, before + 2), body

    over = padded(factory.envelope_json(), LIMIT + 1)
    request = head(LIMIT + 1) + over if framing == "content-length" else head(None) + chunked(over)
    status, headers, body = await send_raw(server, request)
    assert (status, error_code(body)) == (413, "too_large"), body
    assert headers["cache-control"] == "no-store"
    # Only the envelope at the limit was appended, with its batch's HEADS leaf
    # (docs/fleet-heads.md); the refused one appended nothing.
    assert await tree_size(server) == before + 2


async def test_declared_length_over_the_limit_is_refused_before_the_body_is_sent(server):
    # Only the headers: the server answers without waiting for (or reading) the body.
    status, _, body = await send_raw(server, head(10 * 1024 * 1024))
    assert (status, error_code(body)) == (413, "too_large")


# --- slow and partial bodies ------------------------------------------------------------------


async def test_partial_body_times_out_with_408_and_appends_nothing(server):
    before = await tree_size(server)
    whole = BundleFactory(fleet_id="partial").envelope_json()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(head(len(whole)) + whole[: len(whole) // 2])  # then silence
        await writer.drain()
        status, _, body = await asyncio.wait_for(read_response(reader), TIMEOUT_S + 10)
    finally:
        writer.close()
    assert (status, error_code(body)) == (408, "request_timeout"), body
    assert await tree_size(server) == before


async def test_trickled_body_times_out_with_408_and_appends_nothing(server):
    """Bytes keep arriving, too slowly: the timeout is on the whole body, not per read."""
    before = await tree_size(server)
    whole = BundleFactory(fleet_id="trickle").envelope_json()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    response = asyncio.ensure_future(read_response(reader))
    try:
        writer.write(head(None))
        for byte in whole:
            if response.done():
                break
            writer.write(b"1\r\n%c\r\n" % byte)
            await writer.drain()
            await asyncio.sleep(0.05)  # about 20 bytes a second, ~1 KB in total
        status, _, body = await asyncio.wait_for(response, TIMEOUT_S + 10)
    finally:
        response.cancel()
        writer.close()
    assert (status, error_code(body)) == (408, "request_timeout"), body
    assert await tree_size(server) == before


# --- 200 parallel oversized uploads ----------------------------------------------------------


async def oversized_upload(server: ServerProcess, declare_length: bool, peak: list[int]) -> int | None:
    """Offer FLOOD_BODY bytes; return the status the server answered (None: it hung up first)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    response = asyncio.ensure_future(read_response(reader))
    chunk = b"[" + b" " * 65534 + b"]"
    try:
        writer.write(head(FLOOD_BODY if declare_length else None))
        sent = 0
        while sent < FLOOD_BODY and not response.done():
            writer.write(chunk if declare_length else b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
            await writer.drain()
            peak[0] = max(peak[0], rss_bytes(server.proc.pid))
        if not declare_length and not response.done():
            writer.write(b"0\r\n\r\n")
        status, _, body = await asyncio.wait_for(response, 60)
        assert error_code(body) == "too_large"
        return status
    except (ConnectionError, asyncio.IncompleteReadError):
        return None  # the server answered 413 and closed while we were still writing
    finally:
        response.cancel()
        writer.close()


async def test_200_parallel_oversized_uploads_leave_memory_flat(server):
    # Warm up the code paths once, so the baseline includes them.
    await asyncio.gather(*(oversized_upload(server, d, [0]) for d in (True, False)))
    baseline = rss_bytes(server.proc.pid)
    peak = [baseline]
    statuses = await asyncio.gather(*(oversized_upload(server, i % 2 == 0, peak) for i in range(FLOOD)))
    peak[0] = max(peak[0], rss_bytes(server.proc.pid))
    assert set(statuses) <= {413, None}, statuses
    assert statuses.count(413) >= FLOOD // 2, statuses  # most clients saw the 413 itself
    growth = peak[0] - baseline
    offered = FLOOD * FLOOD_BODY
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew {growth / 2**20:.1f} MiB for {offered / 2**20:.0f} MiB offered"
    # And the server still serves: a bundle is appended, with its batch's HEADS leaf.
    before = await tree_size(server)
    body = padded(BundleFactory(fleet_id="after-flood").envelope_json(), LIMIT)
    status, _, _ = await send_raw(server, head(LIMIT) + body)
    assert status == 201
    assert await tree_size(server) == before + 2
