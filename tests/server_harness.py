"""Running a real logserver app (real PostgreSQL, real port) inside a test."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from bundle_factory import Authorities, default_authorities
from logserver.api import create_app
from logserver.config import Config, load_config
from logserver.log_key import LogKey, generate_log_key_pem

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
[[authorities]]
name = "{authorities.signer.name}"
role = "signer"
keys = ["signer.pem"]

[[authorities]]
name = "{authorities.countersigner.name}"
role = "countersigner"
keys = ["countersigner.pem"]
""")
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
