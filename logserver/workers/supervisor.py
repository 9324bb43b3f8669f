"""`logserver serve --workers N`: N server processes on one port, one sequencer.

The supervisor (the process the operator started) starts or joins the embedded
PostgreSQL, picks the port, makes a private socket directory and a per-run secret,
and spawns N workers (`serve --worker-index i`). Each worker binds the port with
SO_REUSEPORT, so the kernel spreads connections over them, and serves every
route; worker 0 also runs the sequencer, the others forward verified entries to
it (logserver/workers/forwarding.py). Nothing else is shared between workers but the
database.

Failures (docs/architecture.md, "Workers"):
* a worker that exits is restarted; while a worker is gone, connections go to
  the others (the kernel only balances over live sockets);
* while worker 0 is gone, the other workers answer submissions with 503 and
  Retry-After (reads keep working), and the entries they had forwarded but not
  yet seen answered get 503 too: each may or may not have committed, and a retry
  is idempotent (a committed entry comes back as a duplicate with its receipt);
* a worker that exits before its first start-up finished (a refused start-up: bad
  config, stale database, ...) stops the whole server with its exit status; each
  worker reports "started" on a pipe once its start-up checks passed;
* more than MAX_RESTARTS restarts within RESTART_WINDOW_S stop the server (exit 1);
* SIGTERM/SIGINT stop the forwarding workers first (their in-flight submissions
  are still answered by worker 0), then worker 0.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from ..config import ENV_LISTEN, Config
from ..storage import resolve_database_url
from .forwarding import ENV_WORKER_READY_FD, ENV_WORKER_SOCKET, ENV_WORKER_TOKEN

log = logging.getLogger(__name__)

MAX_RESTARTS = 10
RESTART_WINDOW_S = 60.0
STOP_TIMEOUT_S = 20.0
_SUN_PATH_MAX = 100  # sockaddr_un.sun_path is 108 bytes on Linux; keep a margin


def _die_with_parent() -> None:
    """Run in the child before exec: get SIGTERM when the supervisor dies (Linux)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _socket_dir(config: Config) -> Path:
    """A directory only this user can enter, for the forwarding socket."""
    d = config.data_dir / "workers"
    if len(str(d / "sequencer.sock")) > _SUN_PATH_MAX:
        return Path(tempfile.mkdtemp(prefix="logserver-workers-"))
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    return d


def _concrete_port(host: str, port: int) -> int:
    if port:
        return port
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Supervisor:
    def __init__(self, config_path: Path, config: Config, workers: int):
        if workers < 2:
            raise ValueError("the supervisor is for 2 or more workers")
        self.config_path = config_path
        self.config = config
        self.count = workers
        self.procs: dict[int, subprocess.Popen] = {}
        self.ready_pipes: dict[int, int] = {}  # read ends, until the worker reports it started
        self.ever_ready: set[int] = set()
        self.restarts: list[float] = []
        self.stopping = False

    def _env(self, socket_path: Path, token: bytes) -> dict[str, str]:
        host, port = self.config.host_port
        env = dict(os.environ)
        env[ENV_LISTEN] = f"{host}:{_concrete_port(host, port)}"
        env[ENV_WORKER_SOCKET] = str(socket_path)
        env[ENV_WORKER_TOKEN] = token.hex()
        return env

    def _spawn(self, index: int) -> None:
        argv = [sys.executable, "-m", "logserver.cli", "serve", "--config", str(self.config_path),
                "--workers", str(self.count), "--worker-index", str(index)]
        r, w = os.pipe()
        os.set_blocking(r, False)
        env = dict(self.env, **{ENV_WORKER_READY_FD: str(w)})
        try:
            self.procs[index] = subprocess.Popen(argv, env=env, preexec_fn=_die_with_parent, pass_fds=(w,))
        finally:
            os.close(w)
        old = self.ready_pipes.pop(index, None)
        if old is not None:
            os.close(old)
        self.ready_pipes[index] = r
        log.info("worker %d (%s) started, pid %d", index, "sequencer" if index == 0 else "forwarder",
                 self.procs[index].pid)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        # Start (or join) the embedded PostgreSQL once, before the workers join it.
        resolve_database_url(self.config.database_url, self.config.data_dir)
        socket_dir = _socket_dir(self.config)
        self.env = self._env(socket_dir / "sequencer.sock", secrets.token_bytes(32))
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info("serving on http://%s with %d workers", self.env[ENV_LISTEN], self.count)
        for i in range(self.count):
            self._spawn(i)
        try:
            while not self.stopping:
                status = self._check_children()
                if status is not None:
                    return status
                time.sleep(0.1)
            return 0
        finally:
            self._stop_all()

    def _poll_ready(self, index: int) -> None:
        r = self.ready_pipes.get(index)
        if r is None:
            return
        try:
            data = os.read(r, 1)
        except BlockingIOError:
            return
        if data:
            self.ever_ready.add(index)
        os.close(r)  # reported, or exited without reporting (EOF)
        del self.ready_pipes[index]

    def _check_children(self) -> int | None:
        now = time.monotonic()
        for index, proc in list(self.procs.items()):
            self._poll_ready(index)
            code = proc.poll()
            if code is None:
                continue
            self._poll_ready(index)
            if index not in self.ever_ready:
                log.error("worker %d exited with %d during start-up; stopping the server", index, code)
                return code or 1
            self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW_S] + [now]
            if len(self.restarts) > MAX_RESTARTS:
                log.error("%d worker restarts within %.0f s; stopping the server", len(self.restarts),
                          RESTART_WINDOW_S)
                return 1
            log.warning("worker %d exited with %d; restarting it", index, code)
            self._spawn(index)
        return None

    def _stop_all(self) -> None:
        # Forwarders first: their in-flight submissions still need worker 0 to answer.
        for group in ([i for i in self.procs if i != 0], [0]):
            for i in group:
                if self.procs[i].poll() is None:
                    self.procs[i].send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            for i in group:
                try:
                    self.procs[i].wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.error("worker %d did not stop in time; killing it", i)
                    self.procs[i].kill()
                    self.procs[i].wait()
