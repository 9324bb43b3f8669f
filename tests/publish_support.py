"""Helpers for the static publication tests: submitting, waiting for a target, and
reading a static tree back (tests/test_publish_*.py)."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import ClientSession
from bundle_factory import BundleFactory

from logserver.merkle import entries_tiles_for_size, tile_path, tiles_for_size

JSON = {"Content-Type": "application/json"}


async def submit(session: ClientSession, base: str, envelopes: list[bytes]) -> list[dict]:
    """POST each envelope (concurrently, so batches hold several); every answer must be 201."""
    async def one(body: bytes) -> dict:
        async with session.post(base + "/v1/bundles", data=body, headers=JSON) as resp:
            assert resp.status == 201, await resp.text()
            return await resp.json()
    return await asyncio.gather(*(one(b) for b in envelopes))


def envelopes(n: int, fleet: str) -> list[bytes]:
    factory = BundleFactory(fleet_id=fleet)
    return [factory.envelope_json() for _ in range(n)]


async def wait_for(what: str, check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    """Poll `check` until it is true; fail naming `what` after `timeout_s` (a deadline, not a timing)."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.05)


def tree_paths(size: int) -> list[str]:
    """Every tile and entry bundle path a checkpoint of `size` needs."""
    return [tile_path(t) for t in (*tiles_for_size(size), *entries_tiles_for_size(size))]


def read_file(root: Path, path: str) -> bytes | None:
    try:
        return (root / path).read_bytes()
    except FileNotFoundError:
        return None


class Load:
    """Submitters that keep going across restarts, remembering every 201."""

    def __init__(self, url: str, clients: int = 6, fleet: str = "load-fleet"):
        self.url = url
        self.clients = clients
        self.fleet = fleet
        self.acknowledged: dict[str, int] = {}  # leaf hash -> index
        self.refused: list[int] = []  # statuses other than 201 from a server that answered
        self._stop = asyncio.Event()

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            await asyncio.gather(*(self._client(session, i) for i in range(self.clients)))

    async def _client(self, session: aiohttp.ClientSession, n: int) -> None:
        pending = envelopes(400, f"{self.fleet}-{n}")
        while pending and not self._stop.is_set():
            try:
                async with session.post(self.url + "/v1/bundles", data=pending[0], headers=JSON) as resp:
                    if resp.status in (200, 201):
                        receipt = await resp.json()
                        self.acknowledged[receipt["leaf_hash"]] = receipt["index"]
                        pending.pop(0)
                        continue
                    self.refused.append(resp.status)
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(0.02)  # the server is down or restarting: retry the same envelope

    def stop(self) -> None:
        self._stop.set()
