"""Witness servers and a scripted log for witness tests (real PostgreSQL, real ports)."""
from __future__ import annotations

import asyncio
import hashlib
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey

import merkle_reference as ref
from logserver.formats import AddCheckpointRequest
from logserver.keys.log_key import LogKey, generate_log_key_pem
from logserver.witness import create_witness_app, load_witness_config
from logserver.witness.cosigner import Cosigner


class ScriptedLog:
    """A log under the test's control: leaves in memory, checkpoints signed with its key,
    consistency proofs from the naive RFC 6962 reference. It can lie (another tree)."""

    def __init__(self, origin: str, key: Ed25519PrivateKey | None = None):
        self.key = LogKey(origin, key or Ed25519PrivateKey.generate())
        self.leaves: list[bytes] = []

    @property
    def origin(self) -> str:
        return self.key.origin

    @property
    def vkey(self) -> str:
        return self.key.vkey

    def append(self, n: int, tag: bytes = b"") -> int:
        start = len(self.leaves)
        self.leaves += [tag + b"leaf %d" % i for i in range(start, start + n)]
        return len(self.leaves)

    def root(self, size: int, leaves: list[bytes] | None = None) -> bytes:
        return ref.mth((leaves or self.leaves)[:size])

    def checkpoint(self, size: int, leaves: list[bytes] | None = None) -> str:
        return self.key.sign_checkpoint(size, self.root(size, leaves), int(time.time() * 1000))

    def proof(self, old: int, new: int, leaves: list[bytes] | None = None) -> tuple[bytes, ...]:
        if old == 0 or old == new:
            return ()
        return tuple(ref.proof(old, (leaves or self.leaves)[:new]))

    def request(self, old: int, new: int, leaves: list[bytes] | None = None) -> str:
        return AddCheckpointRequest(old, self.proof(old, new, leaves), self.checkpoint(new, leaves)).format()


def write_witness_config(directory: Path, name: str, database_url: str, log_vkeys: list[str], *,
                         prefix: str = "", algorithms: tuple[str, ...] = ("ed25519",),
                         monitoring_prefix: str | None = None) -> Path:
    """A witness config in `directory`, with one key file per algorithm ("ed25519",
    "ml-dsa-44"), each made on first use."""
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for algorithm in algorithms:
        key = directory / ("witness.key" if algorithm == "ed25519" else f"witness-{algorithm}.key")
        if not key.exists():
            if algorithm == "ed25519":
                pem = generate_log_key_pem()
            else:
                pem = MLDSA44PrivateKey.generate().private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            key.write_bytes(pem)
            key.chmod(0o600)
        files.append(key.name)
    logs = "".join(f'\n[[logs]]\nvkey = "{v}"\n' for v in log_vkeys)
    monitoring = "" if monitoring_prefix is None else f'monitoring_prefix = "{monitoring_prefix}"\n'
    key_value = f'"{files[0]}"' if len(files) == 1 else "[" + ", ".join(f'"{f}"' for f in files) + "]"
    path = directory / "witness.toml"
    path.write_text(f'name = "{name}"\nkey = {key_value}\ndatabase_url = "{database_url}"\n'
                    f'listen = "127.0.0.1:0"\nprefix = "{prefix}"\n{monitoring}{logs}')
    return path


@dataclass
class RunningWitness:
    config_path: Path
    server: TestServer
    session: ClientSession
    cosigner: Cosigner
    prefix: str = ""
    monitoring_prefix: str = ""
    statuses: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def submission_url(self) -> str:
        return self.url + self.prefix

    @property
    def vkey(self) -> str:
        return self.cosigner.vkey

    async def add_checkpoint(self, body: str | bytes) -> tuple[int, str, str]:
        """POST add-checkpoint: (status, content type, body text)."""
        async with self.session.post(self.submission_url + "/add-checkpoint", data=body) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), await resp.text()

    async def sign_subtree(self, body: str | bytes) -> tuple[int, str, str]:
        """POST sign-subtree: (status, content type, body text)."""
        async with self.session.post(self.submission_url + "/sign-subtree", data=body) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), await resp.text()

    async def monitored_checkpoint(self, origin: str) -> tuple[int, str, str]:
        """GET <monitoring prefix>/<lowercase hex SHA-256 of origin>/checkpoint."""
        origin_hash = hashlib.sha256(origin.encode()).hexdigest()
        async with self.session.get(f"{self.url}{self.monitoring_prefix}/{origin_hash}/checkpoint") as resp:
            return resp.status, resp.headers.get("Content-Type", ""), await resp.text()

    async def get_json(self, path: str) -> dict:
        async with self.session.get(self.url + path) as resp:
            assert resp.status == 200, (resp.status, await resp.text())
            return await resp.json()

    async def close(self) -> None:
        await self.session.close()
        await self.server.close()


async def start_witness(config_path: Path, *, port: int | None = None, clock=time.time) -> RunningWitness:
    config = load_witness_config(config_path, environ={})
    cosigner = Cosigner.load(config.keys, config.name, clock)
    app = create_witness_app(config, cosigner=cosigner)
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    return RunningWitness(config_path, server, ClientSession(), cosigner, config.prefix, config.monitoring_prefix)


class WitnessProcess:
    """`logserver witness` as a child process, its output in a file."""

    def __init__(self, config: Path, port: int, *, nofile: int | None = None):
        self.config, self.port, self.nofile = config, port, nofile
        self.log_path = config.parent / "witness.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def start(self) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "logserver.cli", "witness", "--config", str(self.config),
                 "--listen", f"127.0.0.1:{self.port}"],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.config.parent,
                preexec_fn=None if self.nofile is None else (
                    lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))),
            )
        async with ClientSession() as s:
            for _ in range(600):
                assert self.proc.poll() is None, self.output()
                try:
                    async with s.get(self.url + "/readyz") as r:
                        if r.status == 200:
                            return
                except OSError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"witness not ready:\n{self.output()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def witness_process(directory: Path, database_url: str, port: int, *, nofile: int | None = None) -> WitnessProcess:
    """A `logserver witness` child process (not started) in `directory`, following one
    made-up log whose key it writes there."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "log.key").write_bytes(generate_log_key_pem())
    (directory / "log.key").chmod(0o600)
    vkey = LogKey.load(directory / "log.key", f"example.com/{directory.name}-log").vkey
    config = write_witness_config(directory, f"example.com/{directory.name}-witness", database_url, [vkey])
    return WitnessProcess(config, port, nofile=nofile)
