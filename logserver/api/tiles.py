"""The C2SP tlog-tiles read path: /checkpoint, hash tiles and entry bundles."""
from __future__ import annotations

import gzip

from aiohttp import web

from ..merkle import TilePathError
from ..merkle.tiles import TILE_WIDTH, EntriesTileID, parse_tile_path
from ..tree_reader import BeyondTreeError
from .errors import bad_request, not_found
from .keys import READER
from .params import query
from .published import published_latest
from .responses import IMMUTABLE

# A partial tile's bytes never change either (tiles only grow), but a log may
# stop serving it once the full tile exists, so it is cached for a short time only.
PARTIAL = "public, max-age=60"


async def get_checkpoint(request: web.Request) -> web.Response:
    query(request, set())
    cp = await published_latest(request.app)
    return web.Response(
        text=cp.note, content_type="text/plain", charset="utf-8",
        headers={"Cache-Control": "public, max-age=1"},
    )


async def get_tile(request: web.Request) -> web.Response:
    query(request, set())
    path = "tile/" + request.match_info["path"]
    try:
        tile = parse_tile_path(path)
    except TilePathError as e:
        raise bad_request(f"malformed tile path: {e}", code="bad_tile_path") from None
    reader = request.app[READER]
    try:
        if isinstance(tile, EntriesTileID):
            data = await reader.entry_bundle(tile)
        else:
            data = await reader.hash_tile(tile)
    except BeyondTreeError as e:
        raise not_found(str(e), code="tile_not_found") from None
    headers = {"Content-Type": "application/octet-stream",
               "Cache-Control": IMMUTABLE if tile.width == TILE_WIDTH else PARTIAL}
    if isinstance(tile, EntriesTileID):
        headers["Vary"] = "Accept-Encoding"
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            data = gzip.compress(data, compresslevel=6, mtime=0)
            headers["Content-Encoding"] = "gzip"
    return web.Response(body=data, headers=headers)
