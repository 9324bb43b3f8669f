"""JSON and text responses with explicit caching."""
from __future__ import annotations

import json

from aiohttp import web

from ..merkle import HASH_SIZE

# Proofs and tiles addressed by tree size never change: clients and CDNs may keep them.
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=1"
NO_STORE = "no-store"
# A fleet-head proof (docs/fleet-heads.md): valid forever at the checkpoint it names, but
# only *current* until the fleet's next bundle, and only *fresh* for the client's max_age,
# so caches keep it briefly (the route and every static target send the same).
FLEET_HEAD_CACHE = "public, max-age=5"


def json_response(obj: object, *, status: int = 200, cache: str = NO_STORE,
                  headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(obj, separators=(",", ":")).encode(),
        content_type="application/json",
        headers={"Cache-Control": cache, **(headers or {})},
    )


def raw_json_response(body: bytes, *, status: int = 200, cache: str = NO_STORE) -> web.Response:
    """A response whose JSON the caller already encoded (hot routes build it with %-formatting)."""
    return web.Response(status=status, body=body, headers={"Content-Type": "application/json", "Cache-Control": cache})


def hex_list(hashes: list[bytes]) -> bytes:
    """A JSON array of the lowercase hex of 32-byte hashes (no escaping needed), e.g. a proof.

    One hex() call for all of them, a comma after every 32 bytes, then the commas become
    '","' (three times faster than one hex() per hash: it runs on every proof request)."""
    if not hashes:
        return b"[]"
    return b'["' + b"".join(hashes).hex(",", -HASH_SIZE).encode().replace(b",", b'","') + b'"]'
