"""Bounds on the memory that requests and responses in flight can hold.

A response body handed to aiohttp in one piece is copied into the connection's
write buffer as far as the socket does not take it, and stays there while the
client reads slowly, or not at all: 48 readers of a 13 MB entries page grew the
server by 1.1 GB (issue 23). Request bodies are the mirror image: the witness
holds up to ~1 MiB of body per connection before it checks anything.

* `send_large` streams a body in `CHUNK` pieces, waiting for the socket to take
  each one (aiohttp drains its writer past 64 KiB), so a connection's buffer
  holds at most about two chunks. A client that takes no chunk for
  `STALL_TIMEOUT_S` is disconnected: a reader that never reads pins nothing
  for long.
* A `ByteBudget` bounds what all requests together hold: the bodies being
  streamed (a body shared by several responses, such as a cached entry
  bundle, counts once), or the request bodies being received. Past it, the
  request is answered 503 `overloaded` with Retry-After, which honest clients
  retry; nothing more is allocated.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from aiohttp import web

from .errors import ApiError

log = logging.getLogger(__name__)

CHUNK = 64 << 10
STALL_TIMEOUT_S = 30.0
# Bodies below this go out as one write: they cost less than the streaming
# machinery, and max_connections of them are bounded anyway.
STREAM_ABOVE = 256 << 10
DEFAULT_RESPONSE_BUDGET = 64 << 20
DEFAULT_REQUEST_BUDGET = 16 << 20


class ByteBudget:
    """Bytes held by objects in flight, each object counted once however many hold it."""

    def __init__(self, max_bytes: int, what: str):
        self.max_bytes = max_bytes
        self.what = what
        self.used = 0
        self._held: dict[int, list] = {}  # id(obj) -> [obj, holders]; obj kept alive
        self.refused = 0

    def hold(self, obj: bytes | bytearray | memoryview) -> None:
        """Count `obj`, or raise 503 `overloaded` if it does not fit."""
        entry = self._held.get(id(obj))
        if entry is not None and entry[0] is obj:
            entry[1] += 1
            return
        self.take(len(obj))
        self._held[id(obj)] = [obj, 1]

    def release(self, obj: bytes | bytearray | memoryview) -> None:
        entry = self._held[id(obj)]
        entry[1] -= 1
        if entry[1] == 0:
            del self._held[id(obj)]
            self.used -= len(obj)

    def take(self, n: int) -> None:
        """Count `n` bytes (a request body being received, or a body `hold` counts), or raise 503."""
        if self.used + n > self.max_bytes and self.used > 0:
            self.refused += 1
            raise ApiError(503, "overloaded", f"too many large {self.what} are in flight; retry later")
        self.used += n

    def give(self, n: int) -> None:
        self.used -= n


async def send_large(request: web.Request, body: bytes, headers: Mapping[str, str],
                     budget: ByteBudget, *, status: int = 200) -> web.StreamResponse:
    """Send `body`, streamed if it is large (see the module docstring)."""
    if len(body) <= STREAM_ABOVE:
        return web.Response(status=status, body=body, headers=headers)
    budget.hold(body)
    try:
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = len(body)
        await resp.prepare(request)
        view = memoryview(body)
        for offset in range(0, len(body), CHUNK):
            try:
                async with asyncio.timeout(STALL_TIMEOUT_S):
                    await resp.write(view[offset:offset + CHUNK])
            except TimeoutError:
                # The status line is out: the only answer left is to hang up.
                log.info("closed a connection that read nothing for %.0f s (%s %s)",
                         STALL_TIMEOUT_S, request.method, request.path)
                if request.transport is not None:
                    request.transport.abort()
                raise ConnectionResetError("client stalled") from None
        await resp.write_eof()
        return resp
    finally:
        budget.release(body)


async def receive_body(request: web.Request, limit: int, budget: ByteBudget, timeout_s: float) -> bytes:
    """Read a request body of at most `limit` bytes within `timeout_s`, counted in `budget`
    while it is read (408 / 413 / 503 otherwise). The caller's handling of the body
    that follows is short and CPU-bound, so the bytes are given back on return."""
    chunks: list[bytes] = []
    taken = 0
    try:
        async with asyncio.timeout(timeout_s):
            while chunk := await request.content.readany():
                if taken + len(chunk) > limit:
                    raise ApiError(413, "too_large", f"request body too large: more than {limit} bytes")
                budget.take(len(chunk))
                taken += len(chunk)
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, "request_timeout", "the request body did not arrive in time") from None
    finally:
        budget.give(taken)
    return b"".join(chunks)
