"""Running a real logserver app (real PostgreSQL, real port) inside a test."""
from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from bundle_factory import Authorities, default_authorities
from logserver.client.policy import authorities_toml
from logserver.config import Config, load_config
from logserver.keys.log_key import generate_log_key_pem
from logserver.server import create_app

ORIGIN = "test.logserver.example/log"


def write_config(directory: Path, database_url: str, authorities: Authorities | None = None, *,
                 origin: str = ORIGIN, extra: str = "", key_pem: bytes | None = None) -> Path:
    """Write a log key, the authorities' PEMs and a config file; return the config path."""
    directory.mkdir(parents=True, exist_ok=True)
    authorities = authorities or default_authorities()
    key_path = directory / "log.key"
    if not key_path.exists():
        key_path.write_bytes(key_pem or generate_log_key_pem())
        key_path.chmod(0o600)
    (directory / "signer.pem").write_bytes(authorities.signer.public_pem)
    (directory / "countersigner.pem").write_bytes(authorities.countersigner.public_pem)
    cfg = directory / "logserver.toml"
    cfg.write_text(f"""
origin = "{origin}"
log_key = "log.key"
data_dir = "data"
database_url = "{database_url}"
listen = "127.0.0.1:0"
{extra}
""" + authorities_toml([(authorities.signer.name, "signer", ["signer.pem"]),
                         (authorities.countersigner.name, "countersigner", ["countersigner.pem"])]))
    return cfg


@dataclass
class RunningServer:
    config: Config
    server: TestServer
    session: ClientSession

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def app(self):
        return self.server.app

    async def close(self) -> None:
        await self.session.close()
        await self.server.close()


async def start_server(config_path: Path, **app_kwargs) -> RunningServer:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    config = load_config(config_path, environ=env)
    app = create_app(config, **app_kwargs)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    session = ClientSession(base_url=str(server.make_url("")))
    return RunningServer(config, server, session)


# --- subprocess servers ------------------------------------------------------------------
# `python -m logserver.cli serve` in a child process: for tests that need several
# processes on one database, a restart, or the exit status of a refused start-up.

READY_TIMEOUT_S = 60.0


def free_port() -> int:
    """A TCP port that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(config_path: Path) -> list[str]:
    return [sys.executable, "-m", "logserver.cli", "serve", "--config", str(config_path)]


def server_env(database_url: str, port: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url
    if port is not None:
        env["LOGSERVER_LISTEN"] = f"127.0.0.1:{port}"
    return env


async def wait_ready(proc: subprocess.Popen, url: str, output: Callable[[], str],
                     timeout_s: float = READY_TIMEOUT_S) -> None:
    """Wait until the server `proc` answers 200 on `url`/readyz. RuntimeError, with
    `output()` (its log), if it exits first or is not ready within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    async with ClientSession() as session:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{output()}")
            try:
                async with session.get(url + "/readyz") as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {timeout_s}s:\n{output()}")
            await asyncio.sleep(0.05)


def _limit_files(n: int):
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return preexec


class ServerProcess:
    """One `logserver serve` child process; its output goes to `log_path`."""

    def __init__(self, config_path: Path, database_url: str, *, port: int | None = None,
                 log_path: Path | None = None, nofile: int | None = None, extra_env: dict[str, str] | None = None):
        self.config_path = config_path
        self.extra_env = extra_env or {}  # e.g. PYTHONPATH of an older release (tests/test_upgrade.py)
        self.nofile = nofile  # RLIMIT_NOFILE (soft and hard) for the process, if set
        self.database_url = database_url
        self.port = port or free_port()
        self.log_path = log_path or config_path.parent / f"server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def start(self, timeout_s: float = READY_TIMEOUT_S) -> ServerProcess:
        """Start the process and wait until /readyz answers 200 (or fail with its output)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                server_command(self.config_path), env={**server_env(self.database_url, self.port), **self.extra_env},
                stdout=out, stderr=subprocess.STDOUT, cwd=self.config_path.parent,
                preexec_fn=None if self.nofile is None else _limit_files(self.nofile),
            )
        try:
            await wait_ready(self.proc, self.url, self.output, timeout_s)
        except RuntimeError:
            await self.stop()
            raise
        return self

    async def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int | None:
        """Send `sig` and wait; kill if it does not exit in time. Returns the exit status."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(sig)
        try:
            return await asyncio.to_thread(proc.wait, timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            return await asyncio.to_thread(proc.wait)

    def kill_now(self) -> None:
        """Teardown of last resort: SIGKILL this process (only this one) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def run_server_to_exit(config_path: Path, database_url: str, timeout_s: float = 60.0) -> tuple[int, str]:
    """Run `logserver serve` expecting it to refuse to start: (exit status, output)."""
    proc = await asyncio.create_subprocess_exec(
        *server_command(config_path), env=server_env(database_url, free_port()),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=config_path.parent,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"server did not exit within {timeout_s}s (it should have refused to start)") from None
    return proc.returncode, out.decode(errors="replace")


def rss_bytes(pid: int) -> int:
    """A process's resident set size (VmRSS in /proc/<pid>/status), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")
