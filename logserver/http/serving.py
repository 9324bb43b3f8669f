"""Serving an aiohttp app to clients who may be hostile: the log's and the witness's listener.

aiohttp's own defaults leave four ways for an unauthenticated client to hurt a
public server (docs/reliability.md, "Hostile clients"):

* connections are not bounded: 20,000 idle sockets exhaust the process's file
  descriptors, after which every `accept` fails (EMFILE) and every client is
  refused, the database pool included once it needs a new connection;
* a connection that never finishes its request head is kept until the
  keep-alive timeout;
* every malformed request head is logged at ERROR with a full traceback (a few
  KB of log per request, megabytes a second from one client), and answered in
  plain text before any middleware runs;
* an `accept` that fails is logged with a traceback each time it is retried.

`serve()` runs the app with:

1. at most `max_connections` open connections. When a new one would exceed it,
   the connection that has been idle longest (no request being handled) is
   closed to make room, so a flood of idle sockets cannot lock honest clients
   out: an honest client sends its request within milliseconds of connecting,
   an idle one is the first to go. If every connection is busy, the new one is
   closed at once.
2. a header timeout: a connection that has not sent one complete request head
   `header_timeout_s` after it opened is closed; after a response, aiohttp's
   keep-alive timeout (`keepalive_timeout_s`) closes one that sends nothing more,
   or only part of a head;
3. the process's soft file-descriptor limit raised to cover the connections
   plus a reserve for accept bursts, the database pool, the data files and the
   admission processes' pipes (`FD_RESERVE`); where the hard limit does not allow that,
   `max_connections` is lowered to fit, with one warning;
4. a malformed request answered with the project's JSON error shape
   (`{"error": {"code": "bad_request", ...}}`), and logged as one short line,
   at most once per `LOG_INTERVAL_S` per kind, with a count of the ones not
   logged; accept failures are logged the same way.
"""
from __future__ import annotations

import asyncio
import logging
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from .errors import error_response

log = logging.getLogger(__name__)

# asyncio accepts up to `backlog` connections in one go before any other callback
# runs, so a full accept burst can open ACCEPT_BACKLOG sockets past max_connections
# before the ones closed to make room are released (a transport's socket is closed
# on the loop's next turn). The listen backlog and that burst are the same number.
ACCEPT_BACKLOG = 128
# File descriptors kept free for everything but client connections: two accept
# bursts, and about 128 for the database pool (<= 16), the embedded PostgreSQL's
# socket, log files, the tile file, the admission processes' pipes and the
# forwarding socket under --workers.
FD_RESERVE = 2 * ACCEPT_BACKLOG + 128
LOG_INTERVAL_S = 10.0


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 1024
    header_timeout_s: float = 10.0
    keepalive_timeout_s: float = 15.0


class RateLimitedLog:
    """One line per kind per interval; what was not logged is counted into the next line.

    A flood of bad requests costs a counter increment each, and at most one short
    line per `interval` seconds. Lines name the kind and the latest detail; a
    summary of the suppressed count follows the flood when it stops."""

    def __init__(self, logger: logging.Logger, interval: float = LOG_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        self._log, self._interval, self._clock = logger, interval, clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._flush_scheduled: set[str] = set()

    def warning(self, kind: str, detail: str) -> None:
        now = self._clock()
        last = self._last.get(kind)
        if last is None or now - last >= self._interval:
            self._last[kind] = now
            skipped = self._suppressed.pop(kind, 0)
            more = f" ({skipped} more since the last line)" if skipped else ""
            self._log.warning("%s: %s%s", kind, detail, more)
            return
        self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
        if kind not in self._flush_scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._flush_scheduled.add(kind)
            loop.call_later(self._interval - (now - last), self._flush, kind)

    def _flush(self, kind: str) -> None:
        self._flush_scheduled.discard(kind)
        skipped = self._suppressed.pop(kind, 0)
        if skipped:
            self._last[kind] = self._clock()
            self._log.warning("%s: %d more in the last %.0f s", kind, skipped, self._interval)

    def suppressed(self, kind: str) -> int:
        return self._suppressed.get(kind, 0)


class _GuardedHandler(RequestHandler):
    """One connection. The header timer and the connection count are the guard's."""

    _guard: ConnectionGuard
    _header_timer: asyncio.TimerHandle | None = None
    opened_at: float = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        guard = self._guard
        self.opened_at = self._loop.time()
        if not guard.admit(self):
            self.force_close()
            return
        if guard.header_timeout_s > 0:
            self._header_timer = self._loop.call_later(guard.header_timeout_s, self._header_deadline)

    def _header_deadline(self) -> None:
        self._header_timer = None
        if self._request_count == 0 and self.transport is not None:
            self._guard.header_timeouts += 1
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._guard.release(self)
        super().connection_lost(exc)

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse or hand to the app.

        Replaces aiohttp's ERROR log line with a traceback and its plain-text body:
        one rate-limited line, and the JSON error shape. Statuses other than 400
        (a handler that escaped the error middleware, or timed out) become 503,
        the only 5xx this server answers with."""
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error response")
        if status < 500:
            detail = (message or (str(exc) if exc else "bad request")).strip().splitlines()[0][:120]
            self._guard.log.warning("malformed request", f"from {request.remote}: {detail}")
            resp = error_response(status, "bad_request", f"malformed request: {detail}")
        else:
            log.error("request failed outside the error middleware (status %d)", status, exc_info=exc)
            resp = error_response(503, "internal_error", "internal error; retry later", retry_after=1)
        resp.force_close()
        return resp


class ConnectionGuard:
    """Counts the open connections and picks the one to close when there are too many."""

    def __init__(self, limits: ConnectionLimits, logger: RateLimitedLog):
        self.max_connections = limits.max_connections
        self.header_timeout_s = limits.header_timeout_s
        self.log = logger
        # Insertion order is connection order: the first idle one found is the oldest.
        self._open: dict[_GuardedHandler, None] = {}
        self.evicted = 0
        self.refused = 0
        self.header_timeouts = 0

    @property
    def open(self) -> int:
        return len(self._open)

    def admit(self, handler: _GuardedHandler) -> bool:
        if len(self._open) >= self.max_connections and not self._evict_idle():
            self.refused += 1
            self.log.warning("connection limit", f"{self.max_connections} connections are open and busy; "
                             "closed a new one (limits.max_connections)")
            return False
        self._open[handler] = None
        return True

    def _evict_idle(self) -> bool:
        for old in self._open:
            # _current_request: aiohttp's "a handler is running for this connection".
            if old._current_request is None and not old._messages:
                del self._open[old]
                old.force_close()
                self.evicted += 1
                self.log.warning("connection limit", f"{self.max_connections} connections are open; "
                                 "closed the longest-idle one (limits.max_connections)")
                return True
        return False

    def release(self, handler: _GuardedHandler) -> None:
        self._open.pop(handler, None)


class _GuardedServer(Server):
    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.guard = guard

    def __call__(self) -> RequestHandler:
        handler = _GuardedHandler(self, loop=self._loop, **self._kwargs)
        handler._guard = self.guard
        return handler


class GuardedRunner(web.AppRunner):
    """An AppRunner whose connections go through a ConnectionGuard."""

    def __init__(self, app: web.Application, *, guard: ConnectionGuard, **kwargs: Any):
        super().__init__(app, **kwargs)
        self.guard = guard

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        guarded = _GuardedServer(server.request_handler, request_factory=server.request_factory,
                                 handler_cancellation=server.handler_cancellation, loop=server._loop,
                                 guard=self.guard, **server._kwargs)
        return guarded


def fit_connections_to_fd_limit(wanted: int, reserve: int = FD_RESERVE) -> int:
    """Raise the soft RLIMIT_NOFILE to cover `wanted` connections plus `reserve`; return
    how many connections fit (fewer than wanted if the hard limit is too low)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + reserve
    if soft != resource.RLIM_INFINITY and soft < need:
        new_soft = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
            soft = new_soft
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < need:
        fitted = max(16, soft - reserve)
        log.warning("limits.max_connections lowered from %d to %d: this process may open only %d files "
                    "(ulimit -n); raise the limit to serve more connections", wanted, fitted, soft)
        return fitted
    return wanted


def _accept_error_handler(limited: RateLimitedLog) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if message.startswith("socket.accept() out of system resource"):
            limited.warning("accept failed", f"{context.get('exception')!r}; retrying in 1 s")
            return
        loop.default_exception_handler(context)
    return handler


# Passed to every connection's RequestHandler (aiohttp's defaults in brackets).
HANDLER_SETTINGS: dict[str, Any] = dict(
    max_headers=64, max_line_size=8190, max_field_size=8190,  # [128, 8190, 8190]
    auto_decompress=False,
    # Per-connection buffering of request bodies not yet read: aiohttp pauses the socket
    # at twice this. The 64 KiB default let 200 parallel oversized chunked uploads grow
    # the process by ~150 MiB (tests/test_fault_bodies.py); 8 KiB keeps it under 20 MiB.
    read_bufsize=8192,
)


async def start(app: web.Application, host: str, port: int, limits: ConnectionLimits, *,
                reuse_port: bool = False, logger_name: str = "logserver.http") -> GuardedRunner:
    """Set up and start the app on host:port; returns the runner (cleanup() stops it)."""
    limited = RateLimitedLog(logging.getLogger(logger_name))
    max_connections = fit_connections_to_fd_limit(limits.max_connections)
    guard = ConnectionGuard(
        ConnectionLimits(max_connections, limits.header_timeout_s, limits.keepalive_timeout_s), limited)
    asyncio.get_running_loop().set_exception_handler(_accept_error_handler(limited))
    runner = GuardedRunner(app, guard=guard, access_log=None, handle_signals=False,
                           keepalive_timeout=limits.keepalive_timeout_s, shutdown_timeout=10,
                           **HANDLER_SETTINGS)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None, backlog=ACCEPT_BACKLOG)
    await site.start()
    return runner


def serve(app: web.Application, host: str, port: int, limits: ConnectionLimits, *,
          reuse_port: bool = False, on_listening: Callable[[], None] = lambda: None) -> None:
    """Run the app until SIGINT or SIGTERM (what `web.run_app` does, with the guard)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runner = await start(app, host, port, limits, reuse_port=reuse_port)
        try:
            on_listening()
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
