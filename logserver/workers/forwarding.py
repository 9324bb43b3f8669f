"""Forwarding verified submissions from HTTP workers to the one sequencer worker.

With `logserver serve --workers N` every worker verifies signatures (the CPU-bound
part of a submission) and exactly one of them, worker 0, runs the Sequencer. The
other workers hand each verified entry to it over a Unix socket in a private
(0700) directory of the data dir, and get back what the sequencer decided.

Wire format (all integers big-endian), one frame per message, frames written
back to back and flushed once per event-loop iteration (so a burst of
submissions costs one write):

    frame    = length:u32 body
    hello    = token (32 bytes: the supervisor's per-run secret; first frame only)
    request  = id:u64 sequence:u64 leaf_hash:32 payload_digest:32 fleet_len:u8 fleet leaf
    response = id:u64 kind:u8 rest
      kind 0 (appended):  index:u64 leaf_hash:32 cp_id:u64 tree_size:u64 root:32
                          signed_at_ms:u64 proof_len:u16 proof:32*proof_len note(utf-8)
      kind 1 (duplicate): index:u64 leaf_hash:32
      kind 2 (refused):   status:u16 code_len:u8 code message(utf-8)

The socket is an internal trust boundary: whatever arrives on it is appended
without signature checks, so it is reachable only by the server's user (0700
directory) and a connection must first present the supervisor's token.

Fork-proofing does not depend on any of this: the sequencer still takes the
log_state row lock and compare-and-swaps the size, so independent servers
sharing a database stay linear whatever the workers do.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import os
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..storage import CheckpointRow
from ..write.outcomes import Appended, Duplicate, OverloadedError, SequencerError, UnavailableError
from ..write.sequencer import Sequencer

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

TOKEN_BYTES = 32
MAX_FRAME = 1 << 20  # a leaf is at most 64 KiB; a receipt's note and proof far less

_LEN = struct.Struct(">I")
_REQ = struct.Struct(">QQ32s32s?B")  # id, sequence, leaf hash, payload digest, retired, fleet length
_RESP = struct.Struct(">QB")
_APPENDED = struct.Struct(">Q32sQQ32sQH")
_DUPLICATE = struct.Struct(">Q32s")
_REFUSED = struct.Struct(">HB")


class ForwardedError(SequencerError):
    """A refusal from the sequencer worker, with its HTTP status and code."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code


class IntegrityHaltedError(ForwardedError):
    """The sequencer worker halted (pre-sign check failed): this worker reports it too."""


# --- encoding ---------------------------------------------------------------------------


def encode_request(rid: int, leaf: bytes, leaf_hash: bytes, fleet_id: str, sequence: int,
                   payload_digest: bytes, retired: bool = False) -> bytes:
    fleet = fleet_id.encode("ascii")
    body = _REQ.pack(rid, sequence, leaf_hash, payload_digest, retired, len(fleet)) + fleet + leaf
    return _LEN.pack(len(body)) + body


def decode_request(body: bytes) -> tuple[int, bytes, bytes, str, int, bytes, bool]:
    """(id, leaf, leaf_hash, fleet_id, sequence, payload_digest, retired)."""
    rid, sequence, leaf_hash, digest, retired, fleet_len = _REQ.unpack_from(body)
    start = _REQ.size + fleet_len
    return rid, body[start:], leaf_hash, body[_REQ.size:start].decode("ascii"), sequence, digest, retired


def encode_result(rid: int, result: object) -> bytes:
    if isinstance(result, Appended):
        cp = result.checkpoint
        body = (_RESP.pack(rid, 0)
                + _APPENDED.pack(result.index, result.leaf_hash, cp.id, cp.tree_size, cp.root, cp.signed_at_ms,
                                 len(result.inclusion_proof))
                + b"".join(result.inclusion_proof) + cp.note.encode())
    elif isinstance(result, Duplicate):
        body = _RESP.pack(rid, 1) + _DUPLICATE.pack(result.index, result.leaf_hash)
    elif isinstance(result, SequencerError):
        code = result.code.encode()
        body = _RESP.pack(rid, 2) + _REFUSED.pack(result.status, len(code)) + code + str(result).encode()
    else:
        raise TypeError(f"cannot forward a result of type {type(result).__name__}")
    return _LEN.pack(len(body)) + body


def decode_result(body: bytes) -> tuple[int, object]:
    """(id, Appended | Duplicate | ForwardedError)."""
    rid, kind = _RESP.unpack_from(body)
    pos = _RESP.size
    if kind == 0:
        index, lh, cp_id, size, root, signed_at_ms, n = _APPENDED.unpack_from(body, pos)
        pos += _APPENDED.size
        proof = [body[i:i + 32] for i in range(pos, pos + 32 * n, 32)]
        note = body[pos + 32 * n:].decode()
        return rid, Appended(index, lh, CheckpointRow(cp_id, size, root, signed_at_ms, note), proof)
    if kind == 1:
        index, lh = _DUPLICATE.unpack_from(body, pos)
        return rid, Duplicate(index, lh)
    if kind == 2:
        status, code_len = _REFUSED.unpack_from(body, pos)
        pos += _REFUSED.size
        code = body[pos:pos + code_len].decode()
        message = body[pos + code_len:].decode()
        cls = IntegrityHaltedError if code == "integrity_check_failed" else ForwardedError
        return rid, cls(status, code, message)
    raise ValueError(f"forwarded result kind: got {kind}, want 0..2")


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (n,) = _LEN.unpack(await reader.readexactly(_LEN.size))
    if n > MAX_FRAME:
        raise ValueError(f"frame of {n} bytes, want <= {MAX_FRAME}")
    return await reader.readexactly(n)


class _Batcher:
    """Coalesces frames written in one event-loop iteration into a single write."""

    def __init__(self, writer: asyncio.StreamWriter):
        self.writer = writer
        self._buf: list[bytes] = []

    def send(self, frame: bytes) -> None:
        if not self._buf:
            asyncio.get_running_loop().call_soon(self._flush)
        self._buf.append(frame)

    def _flush(self) -> None:
        data, self._buf = b"".join(self._buf), []
        if not self.writer.is_closing():
            self.writer.write(data)


# --- the sequencer worker's side ---------------------------------------------------------


async def serve_forwarding(sequencer: Sequencer, path: Path, token: bytes) -> asyncio.AbstractServer:
    """Accept forwarded entries on the Unix socket `path` and feed them to `sequencer`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        out = _Batcher(writer)
        try:
            hello = await _read_frame(reader)
            if not hmac.compare_digest(hello, token):
                log.warning("forwarding socket: a connection presented a wrong token; closed")
                return
            while True:
                body = await _read_frame(reader)
                rid, leaf, lh, fleet_id, sequence, digest, retired = decode_request(body)
                try:
                    fut = sequencer.submit(leaf, lh, fleet_id, sequence, digest, retired=retired)
                except SequencerError as e:
                    out.send(encode_result(rid, e))
                    continue

                def answer(f: asyncio.Future, rid: int = rid) -> None:
                    out.send(encode_result(rid, _outcome(f)))
                fut.add_done_callback(answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the worker went away; its entries still commit, their answers are dropped
        except Exception:
            log.exception("forwarding socket: bad frame; connection closed")
        finally:
            writer.close()

    path.unlink(missing_ok=True)
    server = await asyncio.start_unix_server(handle, path=str(path))
    path.chmod(0o600)
    return server


def _outcome(fut: asyncio.Future) -> object:
    if fut.cancelled():
        return UnavailableError("the sequencer is shutting down")
    e = fut.exception()
    if e is None:
        return fut.result()
    if isinstance(e, SequencerError):
        return e
    return UnavailableError("the sequencer failed; retry later")


# --- the other workers' side -------------------------------------------------------------


class RemoteSequencer:
    """Stands in for the Sequencer in a worker that does not sequence (same interface
    as the routes use: submit, pending, max_pending, halted)."""

    def __init__(self, path: Path, token: bytes, *, max_pending: int,
                 on_result: Callable[[object], None] = lambda r: None):
        self.path = path
        self.token = token
        self.max_pending = max_pending
        self.on_result = on_result
        self.halted: str | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._next_id = 0
        self._out: _Batcher | None = None
        self._connected = asyncio.Event()

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def connected(self) -> bool:
        """Whether worker 0 is reachable (else /readyz says sequencer_unavailable)."""
        return self._out is not None

    def submit(
        self, leaf: bytes, leaf_hash: bytes, fleet_id: str, sequence: int, payload_digest: bytes,
        *, retired: bool = False,
    ) -> asyncio.Future:
        if self._out is None:
            raise UnavailableError("the sequencer worker is not reachable (restarting?); retry later")
        if len(self._pending) >= self.max_pending:
            raise OverloadedError(f"{len(self._pending)} submissions are already pending; retry later")
        self._next_id += 1
        rid = self._next_id
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        self._out.send(encode_request(rid, leaf, leaf_hash, fleet_id, sequence, payload_digest, retired))
        return fut

    async def run(self) -> None:
        """Keep a connection to the sequencer worker; reconnect after it restarts."""
        delay = 0.05
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.path))
            except OSError:
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)
                continue
            delay = 0.05
            writer.write(_LEN.pack(len(self.token)) + self.token)
            self._out = _Batcher(writer)
            self._connected.set()
            log.info("connected to the sequencer worker at %s", self.path)
            try:
                while True:
                    rid, result = decode_result(await _read_frame(reader))
                    fut = self._pending.pop(rid, None)
                    if isinstance(result, IntegrityHaltedError):
                        self.halted = str(result)
                    if fut is not None and not fut.done():
                        if isinstance(result, Exception):
                            fut.set_exception(result)
                        else:
                            self.on_result(result)
                            fut.set_result(result)
            except (asyncio.IncompleteReadError, ConnectionError):
                log.warning("lost the sequencer worker; %d forwarded submissions get 503", len(self._pending))
            finally:
                self._out = None
                self._connected.clear()
                writer.close()
                # Ambiguous: each may or may not have committed. 503 tells the client to
                # retry, and a retry of a committed entry is answered as a duplicate.
                pending, self._pending = self._pending, {}
                for fut in pending.values():
                    if not fut.done():
                        fut.set_exception(UnavailableError(
                            "the sequencer worker went away before answering; retry (retries are idempotent)"))


# --- a worker's place among the workers ---------------------------------------------------

ENV_WORKER_SOCKET = "LOGSERVER_WORKER_SOCKET"
ENV_WORKER_TOKEN = "LOGSERVER_WORKER_TOKEN"
ENV_WORKER_READY_FD = "LOGSERVER_WORKER_READY_FD"


class WorkerRole:
    """Worker `index` of `count` (from `serve --workers`); worker 0 runs the sequencer."""

    def __init__(self, index: int, count: int, socket: Path, token: bytes, ready_fd: int | None = None):
        self.index, self.count, self.socket, self.token = index, count, socket, token
        self.ready_fd = ready_fd

    async def notify_started(self, app: web.Application) -> None:
        """aiohttp on_startup hook (after the start-up checks): tell the supervisor."""
        if self.ready_fd is not None:
            os.write(self.ready_fd, b"1")
            os.close(self.ready_fd)
            self.ready_fd = None

    @property
    def is_sequencer(self) -> bool:
        return self.index == 0

    @property
    def role(self) -> str:
        return "sequencer" if self.is_sequencer else "forwarder"

    @classmethod
    def from_environ(cls, index: int, count: int, environ: Mapping[str, str]) -> WorkerRole:
        try:
            fd = environ.get(ENV_WORKER_READY_FD)
            return cls(index, count, Path(environ[ENV_WORKER_SOCKET]), bytes.fromhex(environ[ENV_WORKER_TOKEN]),
                       int(fd) if fd else None)
        except (KeyError, ValueError) as e:
            raise RuntimeError(f"--worker-index is for processes started by `serve --workers`: {e!r}") from None
