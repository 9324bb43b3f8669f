"""JSON and text responses with explicit caching."""
from __future__ import annotations

import json

from aiohttp import web

# Proofs and tiles addressed by tree size never change: clients and CDNs may keep them.
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=1"
NO_STORE = "no-store"


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
    return web.Response(status=status, body=body, content_type="application/json", headers={"Cache-Control": cache})


def hex_list(hashes) -> bytes:
    """A JSON array of lowercase hex strings (no escaping needed), e.g. a proof."""
    return b"[" + b",".join(b'"' + h.hex().encode() + b'"' for h in hashes) + b"]"
