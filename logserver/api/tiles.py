"""The C2SP tlog-tiles read path: /checkpoint, hash tiles and entry bundles."""
from __future__ import annotations

from aiohttp import web

from ..http.budget import send_large
from ..http.errors import bad_request, not_found
from ..http.params import query
from ..http.responses import IMMUTABLE
from ..merkle import TilePathError
from ..merkle.tiles import TILE_WIDTH, EntriesTileID, TileID, parse_tile_coordinates
from ..read.tree_reader import BeyondTreeError
from .compression import accepts_gzip
from .keys import GZIPPER, READER, RESPONSE_BUDGET
from .published import published_latest

# A partial tile's bytes never change either (tiles only grow), but a log may
# stop serving it once the full tile exists, so it is cached for a short time only.
PARTIAL = "public, max-age=60"
_FULL_TILE = {"Content-Type": "application/octet-stream", "Cache-Control": IMMUTABLE}
_PARTIAL_TILE = {"Content-Type": "application/octet-stream", "Cache-Control": PARTIAL}


async def get_checkpoint(request: web.Request) -> web.Response:
    query(request, set())
    cp = await published_latest(request.app)
    return web.Response(
        text=cp.note, content_type="text/plain", charset="utf-8",
        headers={"Cache-Control": "public, max-age=1"},
    )


async def get_tile(request: web.Request) -> web.StreamResponse:
    query(request, set())
    try:
        level, index, width = parse_tile_coordinates("tile/" + request.match_info["path"])
    except TilePathError as e:
        raise bad_request(f"malformed tile path: {e}", code="bad_tile_path") from None
    reader = request.app[READER]
    if level is not None:
        data = reader.cached_hash_tile(level, index, width)
        if data is None:
            try:
                data = await reader.hash_tile(TileID(level, index, width))
            except BeyondTreeError as e:
                raise not_found(str(e), code="tile_not_found") from None
        return web.Response(body=data, headers=_FULL_TILE if width == TILE_WIDTH else _PARTIAL_TILE)
    try:
        data = await reader.entry_bundle(EntriesTileID(index, width))
    except BeyondTreeError as e:
        raise not_found(str(e), code="tile_not_found") from None
    headers = {"Content-Type": "application/octet-stream",
               "Cache-Control": IMMUTABLE if width == TILE_WIDTH else PARTIAL,
               "Vary": "Accept-Encoding"}
    if accepts_gzip(request.headers.get("Accept-Encoding", "")):
        gzipper = request.app[GZIPPER]
        data = await (gzipper.full_bundle(index, data) if width == TILE_WIDTH else gzipper.compress(data))
        headers["Content-Encoding"] = "gzip"
    return await send_large(request, data, headers, request.app[RESPONSE_BUDGET])
