"""Shared helpers for the client and monitor tests (no tests here).

Named test_client_* so it sits with the files it serves; tests/ is on sys.path.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from bundle_factory import Authorities, default_authorities
from logserver.bundle import Envelope
from logserver.client import TrustPolicy
from logserver.client.policy import authorities_toml

JSON = {"Content-Type": "application/json"}


def write_trust_policy(directory: Path, log_vkey: str, *, authorities: Authorities | None = None,
                       extra_policy: str = "", quorum: str = "none", name: str = "trust.toml") -> Path:
    """Write PEMs, a tlog-policy and a trust TOML file naming them; return the TOML path."""
    directory.mkdir(parents=True, exist_ok=True)
    auth = authorities or default_authorities()
    (directory / "signer.pub.pem").write_bytes(auth.signer.public_pem)
    (directory / "countersigner.pub.pem").write_bytes(auth.countersigner.public_pem)
    policy_name = name.replace(".toml", ".policy")
    (directory / policy_name).write_text(f"log {log_vkey}\n{extra_policy}quorum {quorum}\n")
    path = directory / name
    path.write_text(f'tlog_policy = "{policy_name}"\n\n' + authorities_toml([
        (auth.signer.name, "signer", ["signer.pub.pem"]),
        (auth.countersigner.name, "countersigner", ["countersigner.pub.pem"]),
    ]))
    return path


async def log_vkey(session) -> str:
    async with session.get("/v1/log") as resp:
        assert resp.status == 200
        return (await resp.json())["verifier_key"]


async def trust_policy_for(server, directory: Path, **kwargs) -> tuple[TrustPolicy, Path]:
    path = write_trust_policy(directory, await log_vkey(server.session), **kwargs)
    return TrustPolicy.load(path), path


async def submit(session, envelope: Envelope | bytes) -> dict:
    body = envelope if isinstance(envelope, bytes) else envelope.to_json()
    async with session.post("/v1/bundles", data=body, headers=JSON) as resp:
        payload = await resp.json()
        assert resp.status in (200, 201), payload
        return payload


async def submit_many(session, envelopes: list[Envelope], concurrency: int = 64) -> list[dict]:
    """Submit concurrently (bounded); receipts in input order."""
    limit = asyncio.Semaphore(concurrency)

    async def one(env: Envelope) -> dict:
        async with limit:
            return await submit(session, env)

    return list(await asyncio.gather(*(one(e) for e in envelopes)))


def dump(obj: object) -> bytes:
    return json.dumps(obj).encode()


Rule = tuple[Callable[[str], bool], Callable[[bytes], bytes]]


class Proxy:
    """Forwards GETs to the log, passing each body through the matching rules."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.rules: list[Rule] = []
        self.server: TestServer | None = None
        self.session: ClientSession | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        self.session = ClientSession()
        self.url = str(self.server.make_url("")).rstrip("/")
        return self.url

    async def handle(self, request: web.Request) -> web.Response:
        assert self.session is not None
        async with self.session.get(self.upstream + request.path_qs) as resp:
            body = await resp.read()
            status, content_type = resp.status, resp.content_type
        for match, mutate in self.rules:
            if match(request.path):
                body = mutate(body)
        return web.Response(status=status, body=body, content_type=content_type)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.server is not None:
            await self.server.close()
