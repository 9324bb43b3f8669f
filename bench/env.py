"""The bench's own world: its data directory, its embedded PostgreSQL, keys, configs
and `logserver serve` processes. Never the system PostgreSQL: every database lives
in the embedded server under the bench data directory (or DATABASE_URL's server
when the caller sets BENCH_DATABASE_URL explicitly)."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import psutil

from logserver.cli.keygen import make_authority_key
from logserver.client.policy import authorities_toml
from logserver.keys.log_key import generate_log_key_pem, generate_mldsa44_key_pem

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "bench.logserver.example/log"
ALGORITHMS = ("ed25519", "ecdsa-p256")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_database(url: str, database: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


class BenchEnv:
    """Owns the data directory: `pg/` (embedded server), `keys/`, `runs/`, `bundles/`."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o755)  # the embedded PostgreSQL runs as its own user when we are root
        self.keys = self.data_dir / "keys"
        self.keys.mkdir(exist_ok=True)
        self.runs = self.data_dir / "runs"
        self.runs.mkdir(exist_ok=True)
        self.admin_url = os.environ.get("BENCH_DATABASE_URL") or self._embedded()
        self.pg_version = asyncio.run(self._fetchval(self.admin_url, "SHOW server_version"))

    def _embedded(self) -> str:
        from logserver.storage.embedded import embedded_postgres_uri

        return embedded_postgres_uri(self.data_dir / "pg", database="postgres")

    @staticmethod
    async def _fetchval(url: str, sql: str, *args):
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    def database(self, name: str, *, fresh: bool = True) -> str:
        """URL of database `name` in the bench's server; dropped and recreated when `fresh`."""
        async def go():
            conn = await asyncpg.connect(self.admin_url)
            try:
                exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
                if exists and fresh:
                    await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
                    exists = False
                if not exists:
                    await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()
        asyncio.run(go())
        return with_database(self.admin_url, name)

    def drop_database(self, name: str) -> None:
        async def go():
            conn = await asyncpg.connect(self.admin_url)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()
        asyncio.run(go())

    # --- keys -----------------------------------------------------------------------

    def log_key(self) -> Path:
        path = self.keys / "log.key"
        if not path.exists():
            path.write_bytes(generate_log_key_pem())
            path.chmod(0o600)
        return path

    def mldsa44_log_key(self) -> Path:
        """The bench log's ML-DSA-44 key (`log_key_mldsa44`), made once."""
        path = self.keys / "log.mldsa44.key"
        if not path.exists():
            path.write_bytes(generate_mldsa44_key_pem())
            path.chmod(0o600)
        return path

    def authority(self, algorithm: str, role: str) -> tuple[Path, Path]:
        """(private key, public PEM) of the bench authority for `role`, made once."""
        key = self.keys / f"{role}-{algorithm}.key"
        if not key.exists():
            make_authority_key(key, algorithm, force=True)
        return key, key.with_suffix(".pub.pem")

    # --- configs and servers ----------------------------------------------------------

    def write_config(self, run_dir: Path, database_url: str, algorithm: str, *, extra: str = "",
                     mldsa44_log_key: bool = False) -> Path:
        run_dir.mkdir(parents=True, exist_ok=True)
        _, signer_pem = self.authority(algorithm, "signer")
        _, counter_pem = self.authority(algorithm, "countersigner")
        cfg = run_dir / "logserver.toml"
        cfg.write_text(f"""# written by the benchmark suite
origin = "{ORIGIN}"
log_key = "{self.log_key()}"
{f'log_key_mldsa44 = "{self.mldsa44_log_key()}"' if mldsa44_log_key else ""}
data_dir = "{run_dir / 'data'}"
database_url = "{database_url}"
listen = "127.0.0.1:0"
{extra}
""" + authorities_toml([("bench-signer", "signer", [signer_pem]),
                         ("bench-countersigner", "countersigner", [counter_pem])]))
        return cfg


class _PortTaken(Exception):
    """The child could not bind its port: another process took it first."""


@dataclass
class Process:
    """A child server process: `logserver serve` or the ceiling app."""

    argv: list[str]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    startup_s: float | None = None
    streak: int = 1  # consecutive 200s from the readiness path that mean "up"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str = "/readyz", timeout_s: float = 120.0, streak: int = 1) -> Process:
        """Spawn, then wait for `streak` consecutive 200s from `ready_path` (each on a new
        connection: with several workers on one port, each lands on any of them).

        The port was free when it was picked, but another process may take it before
        the child binds: then (the child exits with "address already in use", having
        perhaps let a stranger answer the readiness check) it retries on a new port."""
        for _attempt in range(5):
            try:
                return self._start_once(ready_path, timeout_s, max(streak, self.streak))
            except _PortTaken:
                self._move_to(free_port())
        raise RuntimeError(f"{self.argv}: could not find a free port")

    def _move_to(self, port: int) -> None:
        self.port = port
        if "--port" in self.argv:
            self.argv[self.argv.index("--port") + 1] = str(port)
        if "LOGSERVER_LISTEN" in self.env:
            self.env["LOGSERVER_LISTEN"] = f"127.0.0.1:{port}"

    def _start_once(self, ready_path: str, timeout_s: float, streak: int) -> Process:
        env = dict(os.environ, **self.env)
        started = time.perf_counter()
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)

        def exited() -> None:
            if self.proc.poll() is None:
                return
            with open(self.log_path, "rb") as f:
                f.seek(log_start)
                output = f.read().decode(errors="replace")
            if "address already in use" in output:
                raise _PortTaken()
            raise RuntimeError(f"{self.argv} exited with {self.proc.returncode}:\n{output[-4000:]}")

        deadline = time.monotonic() + timeout_s
        ok = 0
        while ok < streak:
            exited()
            try:
                with urllib.request.urlopen(self.url + ready_path, timeout=2) as resp:
                    ok = ok + 1 if resp.status == 200 else 0
                    continue
            except (OSError, urllib.error.URLError):
                ok = 0
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.argv} not ready after {timeout_s}s")
            time.sleep(0.02)
        self.startup_s = time.perf_counter() - started
        time.sleep(0.3)
        exited()  # the answers came from our child, not from a stranger on the port
        return self

    def processes(self) -> list[psutil.Process]:
        assert self.proc is not None
        p = psutil.Process(self.proc.pid)
        return [p, *p.children(recursive=True)]

    def cpu_seconds(self) -> float:
        """CPU time used so far by the process and its children (workers)."""
        total = 0.0
        for p in self.processes():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def rss_mb(self) -> dict[str, float]:
        """Resident set size now and at its peak (VmHWM), of the main process, in MB."""
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        values = {}
        for line in status.splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
        return {"rss_mb": round(values.get("VmRSS", 0), 1), "peak_rss_mb": round(values.get("VmHWM", 0), 1)}

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_process(config: Path, database_url: str, log_path: Path, *, workers: int | None = None) -> Process:
    port = free_port()
    argv = [sys.executable, "-m", "logserver.cli", "serve", "--config", str(config)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    return Process(argv, port, log_path, {"DATABASE_URL": database_url, "LOGSERVER_LISTEN": f"127.0.0.1:{port}"},
                   streak=1 if not workers or workers == 1 else 20 * workers)


def ceiling_process(env: BenchEnv, algorithm: str, log_path: Path, *, workers: int = 1) -> Process:
    port = free_port()
    _, signer_pem = env.authority(algorithm, "signer")
    _, counter_pem = env.authority(algorithm, "countersigner")
    argv = [sys.executable, "-m", "bench.ceiling", "--port", str(port), "--workers", str(workers),
            str(signer_pem), str(counter_pem)]
    return Process(argv, port, log_path)
