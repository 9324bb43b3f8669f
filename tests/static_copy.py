"""A static copy of a log's tlog-tiles tree, served under a path prefix (no tests here).

Until the log publishes to static targets itself (issue 19), a test builds the copy:
it fetches `checkpoint` and every hash tile and entry bundle that checkpoint's tree has
from a running server, writes them into a directory laid out as the URL paths, and
serves that directory from a tiny aiohttp server under `/bucket/prefix`, the shape of an
S3 bucket's public URL. Like a real static target, the copy keeps what it was given:
the partial tiles of every size published stay until deleted, full ones never change,
and the checkpoint is written last. Missing objects answer 404 (nginx, SeaweedFS) or,
with `missing_status=403`, 403 (an S3 bucket without s3:ListBucket); `gzip_bundles`
compresses entry bundles with Content-Encoding: gzip, as nginx does.
"""
from __future__ import annotations

import gzip
from pathlib import Path

from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from logserver.formats import parse_checkpoint, parse_note
from logserver.merkle import entries_tiles_for_size, tile_path, tiles_for_size

PREFIX = "/bucket/prefix"


class StaticCopy:
    def __init__(self, directory: Path, *, gzip_bundles: bool = False, missing_status: int = 404) -> None:
        self.root = directory
        self.root.mkdir(parents=True, exist_ok=True)
        self.gzip_bundles = gzip_bundles
        self.missing_status = missing_status
        self.requests: list[str] = []
        self.server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url(PREFIX))

    def checkpoint_reads(self) -> int:
        return self.requests.count(PREFIX + "/checkpoint")

    async def start(self) -> StaticCopy:
        app = web.Application()
        app.router.add_get(PREFIX + "/{tail:.*}", self._handle)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        rel = request.match_info["tail"]
        file = (self.root / rel).resolve()
        if not file.is_relative_to(self.root.resolve()) or not file.is_file():
            return web.Response(status=self.missing_status, text="NoSuchKey")
        body = file.read_bytes()
        headers = {"Content-Type": "text/plain; charset=utf-8" if rel == "checkpoint" else "application/octet-stream"}
        accepts_gzip = "gzip" in request.headers.get("Accept-Encoding", "")
        if self.gzip_bundles and rel.startswith("tile/entries/") and accepts_gzip:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

    def path(self, rel: str) -> Path:
        return self.root / rel

    async def publish(self, source: str, *, checkpoint: bool = True) -> int:
        """Copy the tree of `source`'s current checkpoint (tiles and bundles first, the
        checkpoint last unless `checkpoint` is False); returns its size."""
        async with ClientSession() as session:
            note = await _get(session, f"{source}/checkpoint")
            size = parse_checkpoint(parse_note(note.decode()).text).size
            for tile in [*tiles_for_size(size), *entries_tiles_for_size(size)]:
                rel = tile_path(tile)
                if tile.is_full and self.path(rel).exists():
                    continue  # immutable
                self._write(rel, await _get(session, f"{source}/{rel}"))
        if checkpoint:
            self._write("checkpoint", note)
        return size

    def _write(self, rel: str, data: bytes) -> None:
        target = self.path(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)

    def flip(self, rel: str, position: int) -> None:
        data = bytearray(self.path(rel).read_bytes())
        data[position] ^= 0x40
        self.path(rel).write_bytes(bytes(data))


async def _get(session: ClientSession, url: str) -> bytes:
    async with session.get(url) as resp:
        assert resp.status == 200, (url, resp.status)
        return await resp.read()
