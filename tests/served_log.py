"""A log in memory (fleet_head_vectors.MemoryLog: leaves, tree, heads table) served
over C2SP tlog-tiles by a tiny aiohttp app on 127.0.0.1: the checkpoint, the hash tiles
and the entry bundles of every size published, as a static copy of a log would hold
them. A test makes the log misbehave (a HEADS leaf that lies, a checkpoint that ends
with a bundle, an old or unwitnessed checkpoint) with the pure layers, publishes it,
and points a real monitor (or client) at the URL.
"""
from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from fleet_head_vectors import MemoryLog, VectorKeys
from logserver.merkle import (
    TILE_HEIGHT,
    TILE_WIDTH,
    encode_entry_bundle,
    entries_tiles_for_size,
    tile_path,
    tiles_for_size,
)


class ServedLog:
    def __init__(self, log: MemoryLog, keys: VectorKeys) -> None:
        self.log = log
        self.keys = keys
        self.objects: dict[str, bytes] = {}
        self.note = ""
        self.requests: list[str] = []
        self._server: TestServer | None = None
        self.url = ""

    def publish(self, **signing: Any) -> str:
        """Sign the log's current tree (VectorKeys.sign's arguments: times, a witness
        or not) and serve it, with the tiles and entry bundles of its size."""
        log = self.log
        size = log.size
        for tile in tiles_for_size(size):
            level = tile.level * TILE_HEIGHT
            first = tile.index * TILE_WIDTH
            self.objects[tile_path(tile)] = b"".join(log.node(level, first + i) for i in range(tile.width))
        for bundle in entries_tiles_for_size(size):
            first = bundle.index * TILE_WIDTH
            self.objects[tile_path(bundle)] = encode_entry_bundle(log.leaves[first:first + bundle.width])
        self.note = log.checkpoint(self.keys, **signing)
        self.objects["checkpoint"] = self.note.encode()
        return self.note

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.match_info["tail"]
        self.requests.append(path)
        body = self.objects.get(path)
        if body is None:
            return web.Response(status=404, text="not found")
        return web.Response(body=body, content_type="application/octet-stream")

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        self.url = str(self._server.make_url("")).rstrip("/")
        return self.url

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()
