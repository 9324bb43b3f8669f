"""Admission of submitted bodies in helper processes, in batches, off the event loop.

Checking a submission (strict parsing, two signature verifications, the payload
schema, the leaf encoding: `bundle.admit`) is most of its CPU. The server runs
it in `verify_processes` child processes (`python -m logserver.admission_worker`),
so a single server uses a second core for it while its event loop reads
requests, answers them and drives the sequencer.

Why processes and not threads: `cryptography` releases the GIL while OpenSSL
verifies, but a thread must take the GIL back for every other step and between
any two signatures, and with the event loop busy each wait is up to the switch
interval. Measured here, such a thread spent most of its time waiting for the
GIL and the server got no faster. A child process has its own interpreter.

Bodies are handed over in frames (logserver/admission_wire.py) of at most
FRAME_ITEMS: requests read in the same turn of the event loop share a frame, and
small frames keep the first of them from waiting for many others. If a child
dies, the bodies it had in flight fail with AdmissionUnavailableError (the API
answers 503; a retry is safe) and a new child is started. With `processes = 0`
admission runs inline.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys
import time
from collections import deque

from .admission_wire import decode_answer, encode_keys, encode_request
from .bundle import Admitted, AuthoritySet, admit

log = logging.getLogger(__name__)

FRAME_ITEMS = 8  # measured: 4-16 do as well; 64 and more make every request wait for its whole frame
RESPAWN_INTERVAL_S = 1.0

_Waiting = tuple[bytes, int, asyncio.Future]  # body, time of the request (POSIX ms), answer


class AdmissionUnavailableError(Exception):
    """The body could not be checked (an admission process died); retry."""


class _Child:
    """One admission process and the frames it has not answered yet, oldest first."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.in_flight: deque[list[_Waiting]] = deque()
        self.alive = True
        self.reader: asyncio.Task | None = None

    @property
    def items(self) -> int:
        return sum(map(len, self.in_flight))


class AdmissionPool:
    def __init__(self, authorities: AuthoritySet, processes: int):
        if processes < 0:
            raise ValueError(f"processes: got {processes}, want >= 0")
        self.processes = processes
        self._authorities = authorities
        self._keys_frame = encode_keys(authorities)
        self._children: list[_Child] = []
        self._queue: list[_Waiting] = []
        self._scheduled = False
        self._respawning: asyncio.Task | None = None
        self._last_spawn = 0.0
        self._closed = False

    @property
    def pending(self) -> int:
        """Bodies queued or being checked."""
        return len(self._queue) + sum(c.items for c in self._children)

    async def start(self) -> None:
        """Start the child processes (none with processes = 0)."""
        for _ in range(self.processes):
            self._children.append(await self._spawn())

    async def _spawn(self) -> _Child:
        self._last_spawn = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "logserver.admission_worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None
        proc.stdin.write(self._keys_frame)
        child = _Child(proc)
        child.reader = asyncio.create_task(self._read_answers(child), name=f"admission-{proc.pid}")
        return child

    async def admit(self, body: bytes, now_s: float) -> Admitted:
        """`bundle.admit(body, ...)` at time `now_s` (POSIX seconds). Raises its
        BundleError, or AdmissionUnavailableError when no process could run it."""
        if not self.processes:
            return admit(body, self._authorities, dt.datetime.fromtimestamp(now_s, dt.timezone.utc))
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.append((body, int(now_s * 1000), fut))
        if not self._scheduled:
            # At the end of this turn of the loop: the requests already ready in it
            # join the same frames.
            self._scheduled = True
            loop.call_soon(self._dispatch)
        return await fut

    def _dispatch(self) -> None:
        self._scheduled = False
        while self._queue:
            live = [c for c in self._children if c.alive]
            if not live:
                _fail(self._queue, AdmissionUnavailableError("no admission process is running; retry"))
                self._queue = []
                self._respawn()
                return
            child = min(live, key=lambda c: c.items)
            frame, self._queue = self._queue[:FRAME_ITEMS], self._queue[FRAME_ITEMS:]
            assert child.proc.stdin is not None
            child.in_flight.append(frame)
            # One time per frame: the latest of its requests' (a few milliseconds apart).
            child.proc.stdin.write(encode_request(max(t for _, t, _ in frame), [body for body, _, _ in frame]))

    async def _read_answers(self, child: _Child) -> None:
        assert child.proc.stdout is not None
        try:
            while True:
                head = await child.proc.stdout.readexactly(4)
                results = decode_answer(await child.proc.stdout.readexactly(int.from_bytes(head, "big")))
                frame = child.in_flight.popleft()
                if len(results) != len(frame):
                    raise AssertionError(f"admission process answered {len(results)} items for {len(frame)}")
                for (_, _, fut), result in zip(frame, results):
                    if fut.done():  # the request was cancelled (client gone)
                        continue
                    if isinstance(result, Admitted):
                        fut.set_result(result)
                    else:
                        fut.set_exception(result)
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            if not self._closed:
                log.error("admission process %d stopped (%r); starting another", child.proc.pid, e)
        finally:
            child.alive = False
            error = AdmissionUnavailableError("the admission process stopped; retry")
            for frame in child.in_flight:
                _fail(frame, error)
            child.in_flight.clear()
            if child.proc.returncode is None:
                child.proc.kill()
            await child.proc.wait()
            if not self._closed:
                self._respawn()

    def _respawn(self) -> None:
        if self._closed or (self._respawning is not None and not self._respawning.done()):
            return
        self._respawning = asyncio.create_task(self._replace_dead(), name="admission-respawn")

    async def _replace_dead(self) -> None:
        await asyncio.sleep(max(0.0, self._last_spawn + RESPAWN_INTERVAL_S - time.monotonic()))
        for i, child in enumerate(self._children):
            if not child.alive and not self._closed:
                try:
                    self._children[i] = await self._spawn()
                except OSError as e:
                    log.error("cannot start an admission process: %r", e)

    async def close(self) -> None:
        """Stop the children (their stdin closes, so they exit) and fail what is queued."""
        self._closed = True
        if self._respawning is not None:
            self._respawning.cancel()
        for child in self._children:
            if child.proc.stdin is not None:
                child.proc.stdin.close()
        for child in self._children:
            try:
                await asyncio.wait_for(child.proc.wait(), 5)
            except asyncio.TimeoutError:
                child.proc.kill()
            if child.reader is not None:
                await asyncio.gather(child.reader, return_exceptions=True)
        _fail(self._queue, AdmissionUnavailableError("the server is shutting down"))


def _fail(waiting: list[_Waiting], error: Exception) -> None:
    for _, _, fut in waiting:
        if not fut.done():
            fut.set_exception(error)
