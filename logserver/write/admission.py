"""Admission of submitted bodies in helper processes, in batches, off the event loop.

Checking a submission (strict parsing, two signature verifications, the payload
schema, the leaf encoding: `bundle.admit`) is most of its CPU. The server runs
it in `verify_processes` child processes (`python -m logserver.write.admission_child`),
so a single server uses a second core for it while its event loop reads
requests, answers them and drives the sequencer.

Why processes and not threads: `cryptography` releases the GIL while OpenSSL
verifies, but a thread must take the GIL back for every other step and between
any two signatures, and with the event loop busy each wait is up to the switch
interval. Measured here, such a thread spent most of its time waiting for the
GIL and the server got no faster. A child process has its own interpreter.

Bodies are handed over in frames (logserver/write/admission_wire.py) of at most
FRAME_ITEMS: requests read in the same turn of the event loop share a frame, and
the child answers each body as soon as it is checked, so the first of a frame
does not wait for the others (the sequencer can already take it). If a child
dies, the bodies it had in flight fail with AdmissionUnavailableError (the API
answers 503; a retry is safe) and a new child is started. With `processes = 0`
admission runs inline.

A child confirms it is ready (it decoded the keys) with one byte before it is
given any work; `start()` waits for that and fails start-up (AdmissionStartError)
if a child cannot get ready within START_TIMEOUT_S. A child that stops answering
(stopped, stuck) is killed once the frame it is working on is older than
FRAME_DEADLINE_S (5 s: a frame is at most 8 bodies of at most 64 KiB, checked in
milliseconds), so no request waits on it for ever; its frames fail with
AdmissionUnavailableError like a dead child's. Dead children are replaced at most
once per RESPAWN_INTERVAL_S; a start that fails is retried, backing off to
MAX_RESPAWN_INTERVAL_S. `ready` is false while no child runs (/readyz says so).
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import sys
import time
from collections import deque
from collections.abc import Sequence

from ..bundle import Admitted, AuthoritySet, admit
from ..integrity.checks import StartupError
from .admission_wire import READY, decode_answer, encode_keys, encode_request

log = logging.getLogger(__name__)

FRAME_ITEMS = 8  # small frames spread a burst over the children (answers come per body, not per frame)
RESPAWN_INTERVAL_S = 1.0  # at most one start per second...
MAX_RESPAWN_INTERVAL_S = 30.0  # ...backing off to this while starts keep failing
FRAME_DEADLINE_S = 5.0  # a child working on one frame for longer is killed (module docstring)
EXIT_GRACE_S = 2.0  # a child whose stdout closed is given this long to exit before it is killed
START_TIMEOUT_S = 30.0  # a new child must say it is ready within this (a Python start-up, imports, keys)
WORKER_COMMAND = (sys.executable, "-m", "logserver.write.admission_child")

_Waiting = tuple[bytes, int, asyncio.Future]  # body, time of the request (POSIX ms), answer


class AdmissionUnavailableError(Exception):
    """The body could not be checked (an admission process died or hung); retry."""


class AdmissionStartError(StartupError):
    """An admission process could not be started or did not get ready."""


class _Child:
    """One admission process and the frames it has not answered yet, oldest first."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.in_flight: deque[list[_Waiting]] = deque()
        self.answered = 0  # items of the oldest frame in flight answered so far
        self.alive = True
        self.reader: asyncio.Task | None = None
        self.head_since = 0.0  # monotonic time the oldest frame in flight became the one it works on
        self.hung = False  # killed for missing FRAME_DEADLINE_S

    @property
    def items(self) -> int:
        return sum(map(len, self.in_flight)) - self.answered


class AdmissionPool:
    def __init__(self, authorities: AuthoritySet, processes: int, *, frame_deadline_s: float = FRAME_DEADLINE_S,
                 start_timeout_s: float = START_TIMEOUT_S, command: Sequence[str] = WORKER_COMMAND):
        """`command` runs one admission process (replaceable for tests)."""
        if processes < 0:
            raise ValueError(f"processes: got {processes}, want >= 0")
        self.processes = processes
        self.frame_deadline_s = frame_deadline_s
        self.start_timeout_s = start_timeout_s
        self.command = list(command)
        self._authorities = authorities
        self._keys_frame = encode_keys(authorities)
        self._children: list[_Child] = []
        self._queue: list[_Waiting] = []
        self._scheduled = False
        self._respawning: asyncio.Task | None = None
        self._watchdog: asyncio.Task | None = None
        self._last_spawn = 0.0
        self._closed = False

    @property
    def pending(self) -> int:
        """Bodies queued or being checked."""
        return len(self._queue) + sum(c.items for c in self._children)

    @property
    def ready(self) -> bool:
        """Whether a submission can be checked now: inline, or some child is running."""
        return not self.processes or any(c.alive and c.proc.returncode is None for c in self._children)

    async def start(self) -> None:
        """Start the child processes (none with processes = 0), each ready for work.

        Raises AdmissionStartError (a StartupError: the server must not start) when
        one cannot be started or does not get ready."""
        try:
            for _ in range(self.processes):
                self._children.append(await self._spawn())
        except BaseException as e:
            await self.close()
            if isinstance(e, OSError):
                raise AdmissionStartError(f"cannot start an admission process ({' '.join(self.command)}): {e}") from e
            raise
        if self.processes:
            self._watchdog = asyncio.create_task(self._watch(), name="admission-watchdog")

    async def _spawn(self) -> _Child:
        """A new child that said it is ready. Raises OSError or AdmissionStartError."""
        self._last_spawn = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(self._keys_frame)
            ready = await asyncio.wait_for(proc.stdout.readexactly(len(READY)), self.start_timeout_s)
            if ready != READY:
                raise AdmissionStartError(f"admission process {proc.pid} sent {ready!r} instead of its ready byte")
        except BaseException as e:
            if not isinstance(e, Exception):  # cancelled: the watcher reaps it
                if proc.returncode is None:
                    proc.kill()
                raise
            exited = isinstance(e, (asyncio.IncompleteReadError, ConnectionError))
            await _reap(proc, exiting=exited)
            if exited:
                raise AdmissionStartError(
                    f"admission process {proc.pid} exited with status {proc.returncode} before it was ready "
                    "(its error output, if any, is above)"
                ) from None
            if isinstance(e, asyncio.TimeoutError):
                raise AdmissionStartError(
                    f"admission process {proc.pid} was not ready within {self.start_timeout_s:g}s; killed it"
                ) from None
            raise
        child = _Child(proc)
        child.reader = asyncio.create_task(self._read_answers(child), name=f"admission-{proc.pid}")
        return child

    async def admit(self, body: bytes, now_s: float) -> Admitted:
        """`bundle.admit(body, ...)` at time `now_s` (POSIX seconds). Raises its
        BundleError, or AdmissionUnavailableError when no process could run it
        (within FRAME_DEADLINE_S of getting to it)."""
        if not self.processes:
            return admit(body, self._authorities, dt.datetime.fromtimestamp(now_s, dt.UTC))
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
            if not child.in_flight:
                child.head_since = time.monotonic()
            child.in_flight.append(frame)
            # One time per frame: the latest of its requests' (a few milliseconds apart).
            child.proc.stdin.write(encode_request(max(t for _, t, _ in frame), [body for body, _, _ in frame]))

    async def _read_answers(self, child: _Child) -> None:
        assert child.proc.stdout is not None
        exited = False  # its stdout closed: it is exiting (or has)
        try:
            while True:
                head = await child.proc.stdout.readexactly(4)
                payload = await child.proc.stdout.readexactly(int.from_bytes(head, "big"))
                results = decode_answer(payload)
                if not child.in_flight:
                    raise ValueError(f"admission process answered {len(results)} items while given none")
                frame, done = child.in_flight[0], child.answered
                if not 0 < len(results) <= len(frame) - done:
                    raise ValueError(f"admission process answered {len(results)} items, "
                                     f"want 1 to {len(frame) - done} (the rest of a frame of {len(frame)})")
                # strict=False: an answer may cover only the first part of the rest (checked above).
                for (_, _, fut), result in zip(frame[done:], results, strict=False):
                    if fut.done():  # the request was cancelled (client gone)
                        continue
                    if isinstance(result, Admitted):
                        fut.set_result(result)
                    else:
                        fut.set_exception(result)
                child.answered += len(results)
                if child.answered == len(frame):
                    child.in_flight.popleft()
                    child.answered = 0
                    if child.in_flight:
                        child.head_since = time.monotonic()
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            exited = True
            if not self._closed and not child.hung:
                log.error("admission process %d stopped (%r); starting another", child.proc.pid, e)
        except Exception as e:  # an answer that does not parse or fit: a bug; stop this child
            log.error("admission process %d answered wrongly (%r); stopping it and starting another",
                      child.proc.pid, e)
        finally:
            child.alive = False
            if child.hung:
                error = AdmissionUnavailableError(
                    f"the admission process did not answer within {self.frame_deadline_s:g}s; retry")
            else:
                error = AdmissionUnavailableError("the admission process stopped; retry")
            for waiting in child.in_flight:  # the answered ones are done: _fail skips them
                _fail(waiting, error)
            child.in_flight.clear()
            await _reap(child.proc, exiting=exited)
            if not self._closed:
                self._respawn()

    async def _watch(self) -> None:
        """Kill a child that has worked on one frame for longer than the deadline."""
        period = self.frame_deadline_s / 4
        while True:
            due = time.monotonic() + period
            await asyncio.sleep(period)
            now = time.monotonic()
            if now - due > self.frame_deadline_s / 2:
                # The event loop itself was stalled: the answers may be waiting unread.
                # That is not the children's fault; start their clocks again.
                for child in self._children:
                    child.head_since = max(child.head_since, now)
                continue
            for child in self._children:
                if (child.alive and not child.hung and child.in_flight
                        and now - child.head_since > self.frame_deadline_s):
                    child.hung = True
                    log.error("admission process %d has not answered a frame for %.1fs; killing it and "
                              "starting another", child.proc.pid, now - child.head_since)
                    with contextlib.suppress(ProcessLookupError):
                        child.proc.kill()  # also ends a stopped process; its reader then fails the frames

    def _respawn(self) -> None:
        if self._closed or (self._respawning is not None and not self._respawning.done()):
            return
        self._respawning = asyncio.create_task(self._replace_dead(), name="admission-respawn")

    async def _replace_dead(self) -> None:
        """Until every child runs: start the dead ones, retrying failed starts."""
        interval = RESPAWN_INTERVAL_S
        while not self._closed and any(not c.alive for c in self._children):
            await asyncio.sleep(max(0.0, self._last_spawn + interval - time.monotonic()))
            for i, child in enumerate(self._children):
                if child.alive or self._closed:
                    continue
                try:
                    self._children[i] = await self._spawn()
                    interval = RESPAWN_INTERVAL_S
                except (OSError, AdmissionStartError) as e:
                    interval = min(interval * 2, MAX_RESPAWN_INTERVAL_S)
                    log.error("cannot start an admission process (%s); retrying in %gs", e, interval)
                    break

    async def close(self) -> None:
        """Stop the children (their stdin closes, so they exit) and fail what is queued."""
        self._closed = True
        for task in (self._respawning, self._watchdog):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for child in self._children:
            if child.proc.stdin is not None:
                child.proc.stdin.close()
        for child in self._children:
            try:
                await asyncio.wait_for(child.proc.wait(), 5)
            except TimeoutError:
                child.proc.kill()
            if child.reader is not None:
                await asyncio.gather(child.reader, return_exceptions=True)
        _fail(self._queue, AdmissionUnavailableError("the server is shutting down"))


async def _reap(proc: asyncio.subprocess.Process, *, exiting: bool) -> None:
    """Wait for `proc` to end, killing it first unless it is already on its way out.

    A child that closed its stdout is given EXIT_GRACE_S to exit by itself: killing
    one that has exited but is not reaped yet makes Popen.send_signal reap it, and
    asyncio's child watcher then reports its exit status as 255 instead of the real
    one (the status start-up errors report)."""
    if exiting:
        try:
            await asyncio.wait_for(proc.wait(), EXIT_GRACE_S)
            return
        except TimeoutError:
            pass
    if proc.returncode is None:
        proc.kill()
    await proc.wait()


def _fail(waiting: list[_Waiting], error: Exception) -> None:
    for _, _, fut in waiting:
        if not fut.done():
            fut.set_exception(error)
