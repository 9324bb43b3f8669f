"""Signature checks in helper processes, in batches, off the event loop.

Two signature verifications are most of a submission's CPU (docs/performance.md).
They run in `verify_processes` child processes (`python -m logserver.verify_worker`),
so a single server uses a second core for them while its event loop parses
requests, answers them and drives the sequencer.

Why processes and not threads: `cryptography` releases the GIL while OpenSSL
verifies, but a verifying thread must take the GIL back between any two
signatures, and with the event loop busy that wait is up to the switch interval.
Measured here, such a thread spent most of its time waiting for the GIL and the
server got no faster. A child process has its own interpreter and no such wait.

The protocol is private to this module and the child, over the child's stdin and
stdout. Every request parsed in the same turn of the event loop shares one frame:

    keys frame:   u16 count, then count x (u16 length, DER SubjectPublicKeyInfo)
    batch frame:  u32 length of the rest, u32 items, then per item
                  u32 message length, message (the PAE), u8 signatures,
                  then per signature u16 key number, u16 length, signature
    answer:       u32 items, then one byte per item: 0 if every signature
                  verified, else 1 + the position of the first that did not

Frames are answered in order. If a child dies, what it had in flight fails with
VerifierUnavailableError (the API answers 503, and the submission can be
retried) and a new child is started. With `processes = 0` the checks run inline.
"""
from __future__ import annotations

import asyncio
import logging
import struct
import sys
import time
from collections import deque

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .bundle import AuthorityKey, AuthoritySet, SignatureChecks

log = logging.getLogger(__name__)

MAX_BATCH = 8  # items per frame: bounds how long one frame keeps its first request waiting
RESPAWN_INTERVAL_S = 1.0

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_ITEM = struct.Struct(">I")
_SIG = struct.Struct(">HH")


class VerifierUnavailableError(Exception):
    """The signature checks could not be run (a verifier process died); retry."""


def encode_keys(keys: list[AuthorityKey]) -> bytes:
    parts = [_U16.pack(len(keys))]
    for key in keys:
        der = key.public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        parts += (_U16.pack(len(der)), der)
    return b"".join(parts)


def encode_batch(batch: list[SignatureChecks], key_number: dict[str, int]) -> bytes:
    parts = [b"", _U32.pack(len(batch))]
    for checks in batch:
        parts += (_ITEM.pack(len(checks.message)), checks.message, bytes((len(checks.pinned),)))
        for sig, key in checks.pinned:
            parts += (_SIG.pack(key_number[key.keyid], len(sig)), sig)
    size = sum(map(len, parts))
    parts[0] = _U32.pack(size)
    return b"".join(parts)


class _Child:
    """One verifier process and the frames it has not answered yet, oldest first."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.in_flight: deque[list[tuple[SignatureChecks, asyncio.Future]]] = deque()
        self.alive = True
        self.reader: asyncio.Task | None = None

    @property
    def items(self) -> int:
        return sum(map(len, self.in_flight))


class SignatureVerifier:
    def __init__(self, authorities: AuthoritySet, processes: int):
        if processes < 0:
            raise ValueError(f"processes: got {processes}, want >= 0")
        self.processes = processes
        self._keys = list(authorities.values())
        self._key_number = {k.keyid: i for i, k in enumerate(self._keys)}
        self._children: list[_Child] = []
        self._queue: list[tuple[SignatureChecks, asyncio.Future]] = []
        self._scheduled = False
        self._respawning: asyncio.Task | None = None
        self._last_spawn = 0.0
        self._closed = False

    async def start(self) -> None:
        """Start the child processes (none with processes = 0)."""
        for _ in range(self.processes):
            self._children.append(await self._spawn())

    async def _spawn(self) -> _Child:
        self._last_spawn = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "logserver.verify_worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None
        proc.stdin.write(encode_keys(self._keys))
        child = _Child(proc)
        child.reader = asyncio.create_task(self._read_answers(child), name=f"verifier-{proc.pid}")
        return child

    async def verify(self, checks: SignatureChecks) -> None:
        """Run `checks` (policy step 3). Raises PolicyError like checks.run(), or
        VerifierUnavailableError when no verifier process could run them."""
        if not self.processes:
            checks.run()
            return
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.append((checks, fut))
        if not self._scheduled:
            # At the end of this turn of the loop: the requests already ready in it
            # join the same frame.
            self._scheduled = True
            loop.call_soon(self._dispatch)
        await fut

    def _dispatch(self) -> None:
        self._scheduled = False
        while self._queue:
            live = [c for c in self._children if c.alive]
            if not live:
                self._fail(self._queue, VerifierUnavailableError("no signature verifier process is running"))
                self._queue = []
                self._respawn()
                return
            child = min(live, key=lambda c: c.items)
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            assert child.proc.stdin is not None
            child.in_flight.append(batch)
            child.proc.stdin.write(encode_batch([c for c, _ in batch], self._key_number))

    async def _read_answers(self, child: _Child) -> None:
        assert child.proc.stdout is not None
        try:
            while True:
                head = await child.proc.stdout.readexactly(4)
                (n,) = _U32.unpack(head)
                answer = await child.proc.stdout.readexactly(n)
                batch = child.in_flight.popleft()
                if n != len(batch):
                    raise AssertionError(f"verifier answered {n} items for a frame of {len(batch)}")
                for (checks, fut), code in zip(batch, answer):
                    if fut.done():  # the request was cancelled (client gone)
                        continue
                    if code == 0:
                        fut.set_result(None)
                    else:
                        _, key = checks.pinned[code - 1]
                        fut.set_exception(key.invalid_signature())
        except (asyncio.IncompleteReadError, ConnectionError, AssertionError) as e:
            if not self._closed:
                log.error("signature verifier process %d failed (%r); starting another", child.proc.pid, e)
        finally:
            child.alive = False
            error = VerifierUnavailableError("the signature verifier process stopped; retry")
            for batch in child.in_flight:
                self._fail(batch, error)
            child.in_flight.clear()
            if child.proc.returncode is None:
                child.proc.kill()
            await child.proc.wait()
            if not self._closed:
                self._respawn()

    def _respawn(self) -> None:
        if self._closed or (self._respawning is not None and not self._respawning.done()):
            return
        self._respawning = asyncio.create_task(self._replace_dead(), name="verifier-respawn")

    async def _replace_dead(self) -> None:
        await asyncio.sleep(max(0.0, self._last_spawn + RESPAWN_INTERVAL_S - time.monotonic()))
        for i, child in enumerate(self._children):
            if not child.alive and not self._closed:
                try:
                    self._children[i] = await self._spawn()
                except OSError as e:
                    log.error("cannot start a signature verifier process: %r", e)

    @staticmethod
    def _fail(batch: list[tuple[SignatureChecks, asyncio.Future]], error: Exception) -> None:
        for _, fut in batch:
            if not fut.done():
                fut.set_exception(error)

    async def close(self) -> None:
        """Stop the children (their stdin closes, so they exit) and fail what is pending."""
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
        self._fail(self._queue, VerifierUnavailableError("the server is shutting down"))
