"""`LogClient`: an async HTTP client for a logserver log (aiohttp).

Two read paths, each with its own base URL:

* the C2SP tlog-tiles path, under the **tiles URL**: `checkpoint`, hash tiles
  `tile/<L>/<N>[.p/<W>]` and entry bundles `tile/entries/<N>[.p/<W>]`. That is the
  server itself, or a static copy of its tree (nginx, an S3 bucket's public URL with
  its path prefix, e.g. `http://host/bucket/prefix`). Proofs and roots can be computed
  from tiles alone (`tile_inclusion_proof`, `tile_consistency_proof`, `tile_root`);
* the JSON API, under the **log's URL** (the server): `/v1/log`, `/v1/proof/inclusion`,
  `/v1/proof/consistency`, `/v1/entries`, `/v1/fleets/<id>`. A client made with a tiles
  URL only (a monitor of a static copy) has none: those methods raise `NoApiError`.

Every URL is built absolute, the base URL's path kept (`{base}/{path}`).

`checked_inclusion_proof` / `checked_consistency_proof` fetch a proof both ways and
raise `ProofMismatchError` if they differ: RFC 6962 proofs for given sizes are unique,
so two different answers mean the log (or something in between) is wrong.

Nothing here *verifies* signatures or proofs against checkpoints: that is the job of
`verify_receipt`, the client state and the monitor. This module only guarantees
well-formed answers (strict JSON, 32-byte hashes, tile lengths, size limits).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from ..formats.fleet_head import MAX_FLEET_HEAD_PROOF_BYTES
from ..formats.strict import hex_hash, strict_json
from ..merkle import (
    HASH_SIZE,
    TILE_WIDTH,
    EntriesTileID,
    MerkleError,
    TileID,
    consistency_plan,
    decode_entry_bundle,
    frontier_ids,
    hashes_from_tiles,
    inclusion_plan,
    rehash,
    tile_path,
    tiles_for_nodes,
)
from ..merkle.compact import CompactRange

MAX_CHECKPOINT_BYTES = 1 << 20
MAX_TILE_BYTES = TILE_WIDTH * HASH_SIZE
MAX_BUNDLE_BYTES = TILE_WIDTH * (2 + 0xFFFF)
MAX_JSON_BYTES = 64 << 20


class LogClientError(Exception):
    """The log could not be reached or gave an unusable answer."""


class HTTPStatusError(LogClientError):
    """The log answered with an unexpected HTTP status."""

    def __init__(self, url: str, status: int, body: str) -> None:
        super().__init__(f"GET {url}: HTTP {status}: {body[:300]}")
        self.url = url
        self.status = status
        self.body = body


class MalformedResponseError(LogClientError):
    """The log's answer is not in the expected format."""


class ProofMismatchError(LogClientError):
    """The proof computed from tiles differs from the one the JSON API served."""


class NoApiError(LogClientError):
    """A JSON-API method was called on a client that has only a tiles URL."""


class TilesBehindError(LogClientError):
    """The checkpoint the tiles URL serves is older than one the client already holds
    (a receipt's, a stored one), and no newer one could be had in time: a static copy
    or cache that has not caught up with the log. Not a verification failure: retry
    later, or ask the log's API."""

    def __init__(self, message: str, *, tiles_url: str, tiles_size: int, want_size: int, waited_s: float) -> None:
        super().__init__(message)
        self.tiles_url = tiles_url
        self.tiles_size = tiles_size
        self.want_size = want_size
        self.waited_s = waited_s


# A missing object: 404 from the server, nginx and most S3 servers; a public S3 bucket
# that does not grant s3:ListBucket answers 403 for a key that does not exist.
_STATIC_MISSING = frozenset({403, 404})


def check_base_url(url: str, what: str = "URL") -> str:
    """`url` checked as a base URL (http or https, a host, no query or fragment) and
    without its trailing slashes. Raises ValueError naming `what`."""
    if not isinstance(url, str):
        raise ValueError(f"{what}: got {type(url).__name__}, want a URL string")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise ValueError(f"{what}: got {url!r}, which is no URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"{what}: want an http:// or https:// URL with a host, got {url!r}")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError(f"{what}: want a base URL without a query or fragment, got {url!r}")
    return url.rstrip("/")


def _hex_hashes(value: Any, what: str) -> list[bytes]:
    if not isinstance(value, list) or len(value) > 128:
        raise MalformedResponseError(f"{what}: want a list of hex hashes")
    return [hex_hash(h, what, MalformedResponseError) for h in value]


def _checkpoint_text(body: bytes, url: str) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedResponseError(f"{url}: invalid UTF-8 at byte {exc.start}") from None


def _tree_size(size: int, tree_size: int | None) -> int:
    if tree_size is None:
        return size
    if type(tree_size) is not int or tree_size < size:
        raise ValueError(f"tree_size: got {tree_size!r}, want an int >= {size} (the tiles must cover the proof)")
    return tree_size


def _echo(obj: Any, name: str, want: int) -> None:
    got = obj.get(name) if isinstance(obj, dict) else None
    if type(got) is not int or got != want:
        raise MalformedResponseError(f"response {name}: got {got!r}, want {want}")


class LogClient:
    """Async client of one log: its JSON API at `api_url` (e.g. "http://127.0.0.1:8080")
    and its tlog-tiles tree at `tiles_url` (default: `api_url`, the server itself).

    `LogClient(url)` reads both from the server; `LogClient(url, tiles_url=static)`
    reads the checkpoint, tiles and entry bundles from a static copy and asks the
    server only what the JSON API answers; `LogClient(tiles_url=static)` has no API at
    all (its JSON-API methods raise `NoApiError`). A bad URL is a ValueError.

    Use as `async with LogClient(url) as client: ...`, or pass an existing aiohttp
    `session` (which the client then does not close). At most `concurrency` requests
    run at once.
    """

    def __init__(
        self,
        api_url: str | None = None,
        *,
        tiles_url: str | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 30.0,
        concurrency: int = 16,
    ) -> None:
        if api_url is None and tiles_url is None:
            raise ValueError("LogClient: want the log's URL, a tiles URL, or both")
        self.api_url: str | None = None if api_url is None else check_base_url(api_url, "log URL")
        tiles = self.api_url if tiles_url is None else check_base_url(tiles_url, "tiles URL")
        assert tiles is not None  # one of the two was given
        self.tiles_url: str = tiles
        self._own_session = session is None
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._limit = asyncio.Semaphore(concurrency)

    async def __aenter__(self) -> LogClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def has_api(self) -> bool:
        """True when the client knows the log's JSON API (it was given the log's URL)."""
        return self.api_url is not None

    @property
    def base_url(self) -> str:
        """The log's URL, or the tiles URL of a client without one (for messages)."""
        return self.api_url or self.tiles_url

    def api_url_of(self, path: str) -> str:
        """The absolute URL of `path` in the JSON API; `NoApiError` without one."""
        if self.api_url is None:
            raise NoApiError(
                f"GET {path}: this client reads only the tiles at {self.tiles_url}, which have no JSON API; "
                "give the log's URL too (LogClient(log_url, tiles_url=...), or --log URL)")
        return f"{self.api_url}/{path.lstrip('/')}"

    def tiles_url_of(self, path: str) -> str:
        """The absolute URL of a tlog-tiles resource (`checkpoint`, `tile/...`)."""
        return f"{self.tiles_url}/{path.lstrip('/')}"

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    # --- raw access ---------------------------------------------------------------------

    async def get(self, path: str, params: dict[str, Any] | None = None, *, max_bytes: int,
                  not_found_ok: bool = False) -> bytes | None:
        """GET `path` relative to the log's (API) URL; the body, at most `max_bytes` after
        decompression. A 404 returns None when `not_found_ok`, any other non-200 raises.
        `NoApiError` when the client has only a tiles URL."""
        return await self._get(self.api_url_of(path), params, max_bytes=max_bytes,
                               missing=frozenset({404}) if not_found_ok else frozenset())

    async def get_static(self, path: str, *, max_bytes: int, not_found_ok: bool = False) -> bytes | None:
        """GET a tlog-tiles resource relative to the tiles URL; as `get`, except that a
        403 counts as missing too when `not_found_ok` (an S3 bucket's answer for a key it
        does not have). The body may arrive gzip-encoded (nginx) or not (S3): aiohttp
        decodes `Content-Encoding`, and `max_bytes` bounds the decoded body."""
        return await self._get(self.tiles_url_of(path), None, max_bytes=max_bytes,
                               missing=_STATIC_MISSING if not_found_ok else frozenset())

    async def _get(self, url: str, params: dict[str, Any] | None, *, max_bytes: int,
                   missing: frozenset[int]) -> bytes | None:
        async with self._limit:
            try:
                async with self._http().get(url, params=params, timeout=self._timeout) as resp:
                    if resp.status in missing:
                        return None
                    body = await self._read(resp, url, max_bytes)
                    if resp.status != 200:
                        raise HTTPStatusError(str(resp.url), resp.status, body.decode("utf-8", "replace"))
                    return body
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise LogClientError(f"GET {url}: {type(exc).__name__}: {exc}") from None

    @staticmethod
    async def _read(resp: aiohttp.ClientResponse, url: str, max_bytes: int) -> bytes:
        chunks, total = [], 0
        async for chunk in resp.content.iter_chunked(1 << 16):
            total += len(chunk)
            if total > max_bytes:
                raise MalformedResponseError(f"GET {url}: body over {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def get_json(self, path: str, params: dict[str, Any] | None = None, *,
                       max_bytes: int = MAX_JSON_BYTES, not_found_ok: bool = False) -> Any:
        """GET a JSON document, decoded strictly (`logserver.formats.strict.strict_json`:
        UTF-8, no duplicate keys, no NaN/Infinity, nothing after the value)."""
        body = await self.get(path, params, max_bytes=max_bytes, not_found_ok=not_found_ok)
        if body is None:
            return None
        return strict_json(body, f"GET {path}", MalformedResponseError)

    # --- tlog-tiles read path -----------------------------------------------------------

    async def checkpoint(self) -> str:
        """The latest checkpoint note, as served (not verified)."""
        body = await self.get_static("checkpoint", max_bytes=MAX_CHECKPOINT_BYTES)
        assert body is not None
        return _checkpoint_text(body, self.tiles_url_of("checkpoint"))

    async def tile(self, tile: TileID) -> bytes:
        """A hash tile of exactly `tile.width` hashes. For a partial tile that is missing,
        falls back to the full tile and returns its first `width` hashes (tlog-tiles
        "Partial Tiles": a static copy holds the partial tiles only of the sizes it
        published, and may delete them once the full tile exists)."""
        want = tile.width * HASH_SIZE
        data = await self.get_static(tile_path(tile), max_bytes=MAX_TILE_BYTES, not_found_ok=not tile.is_full)
        if data is None:
            full_path = tile_path(TileID(tile.level, tile.index))
            full = await self._fallback(full_path, tile_path(tile), MAX_TILE_BYTES)
            if len(full) != MAX_TILE_BYTES:
                raise MalformedResponseError(
                    f"{self.tiles_url_of(full_path)}: got {len(full)} bytes, want {MAX_TILE_BYTES}")
            return full[:want]
        if len(data) != want:
            raise MalformedResponseError(f"{self.tiles_url_of(tile_path(tile))}: got {len(data)} bytes, want {want}")
        return data

    async def _fallback(self, full_path: str, partial_path: str, max_bytes: int) -> bytes:
        """The full tile or bundle standing in for a missing partial one."""
        try:
            full = await self.get_static(full_path, max_bytes=max_bytes)
        except HTTPStatusError as exc:
            raise HTTPStatusError(exc.url, exc.status,
                                  f"{exc.body[:200]} (fetched because {partial_path} is missing)") from None
        assert full is not None
        return full

    async def tiles(self, tiles: Iterable[TileID]) -> dict[TileID, bytes]:
        """Fetch several hash tiles concurrently."""
        wanted = list(dict.fromkeys(tiles))
        data = await asyncio.gather(*(self.tile(t) for t in wanted))
        return dict(zip(wanted, data, strict=True))  # gather: one result per awaitable

    async def entry_bundle_bytes(self, bundle: EntriesTileID) -> bytes:
        """An entry bundle's raw bytes (partial bundle, or the full one if it is gone)."""
        data = await self.get_static(tile_path(bundle), max_bytes=MAX_BUNDLE_BYTES, not_found_ok=not bundle.is_full)
        if data is None:
            data = await self._fallback(tile_path(EntriesTileID(bundle.index)), tile_path(bundle), MAX_BUNDLE_BYTES)
        return data

    async def entry_bundle(self, bundle: EntriesTileID) -> list[bytes]:
        """The `bundle.width` entries (leaves) of an entry bundle, decoded strictly."""
        data = await self.entry_bundle_bytes(bundle)
        try:
            entries = decode_entry_bundle(data)
        except MerkleError as exc:
            raise MalformedResponseError(f"{self.tiles_url_of(tile_path(bundle))}: {exc}") from None
        if len(entries) < bundle.width or (len(entries) != bundle.width and len(entries) != TILE_WIDTH):
            raise MalformedResponseError(
                f"{self.tiles_url_of(tile_path(bundle))}: got {len(entries)} entries, want {bundle.width}")
        return entries[: bundle.width]

    async def _node_hashes(self, ids: list[tuple[int, int]], tree_size: int) -> list[bytes]:
        tiles = await self.tiles(tiles_for_nodes(ids, tree_size))
        try:
            return hashes_from_tiles(ids, tree_size, tiles)
        except MerkleError as exc:
            raise MalformedResponseError(f"tiles of {self.tiles_url} for size {tree_size}: {exc}") from None

    # A proof between sizes up to N reads only complete nodes of the tree of those
    # sizes, which are complete in the tree of N as well: `tree_size` (default: the
    # proof's own largest size) says whose tiles to read. A static copy holds the
    # partial tiles only of the sizes it published, so a client reads the tiles of
    # the copy's own checkpoint, not those of an older size it has no tiles for.

    async def tile_inclusion_proof(self, index: int, size: int, *, tree_size: int | None = None) -> list[bytes]:
        """The inclusion proof of leaf `index` at `size`, computed from the hash tiles
        of the tree of `tree_size` (>= `size`; default `size`)."""
        plan = inclusion_plan(index, size)
        at = _tree_size(size, tree_size)
        return rehash(plan, await self._node_hashes(list(plan.ids), at)) if plan.ids else []

    async def tile_consistency_proof(self, first: int, second: int, *, tree_size: int | None = None) -> list[bytes]:
        """The consistency proof from `first` to `second`, computed from the hash tiles
        of the tree of `tree_size` (>= `second`; default `second`)."""
        plan = consistency_plan(first, second)
        at = _tree_size(second, tree_size)
        return rehash(plan, await self._node_hashes(list(plan.ids), at)) if plan.ids else []

    async def tile_root(self, size: int, *, tree_size: int | None = None) -> bytes:
        """The root hash of the tree of `size` leaves, computed from the hash tiles of
        the tree of `tree_size` (>= `size`; default `size`)."""
        ids = frontier_ids(size)
        at = _tree_size(size, tree_size)
        return CompactRange(size, await self._node_hashes(ids, at) if ids else []).root()

    # --- JSON API -----------------------------------------------------------------------

    async def log_info(self) -> dict[str, Any]:
        """GET /v1/log: origin, verifier_key, public_key, tree_size, checkpoint."""
        info = await self.get_json("v1/log", max_bytes=MAX_CHECKPOINT_BYTES + 65536)
        if not isinstance(info, dict) or not isinstance(info.get("checkpoint"), str):
            raise MalformedResponseError("/v1/log: want an object with a checkpoint")
        return info

    async def api_checkpoint(self) -> str:
        """The checkpoint the log's API publishes now (`checkpoint` of GET /v1/log), as
        served (not verified): what a client asks when the tiles it reads are behind."""
        note: str = (await self.log_info())["checkpoint"]
        return note

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """GET /v1/proof/inclusion?tree_size=&index=: the proof hashes."""
        obj = await self.get_json("v1/proof/inclusion", {"tree_size": size, "index": index}, max_bytes=65536)
        _echo(obj, "index", index)
        _echo(obj, "tree_size", size)
        return _hex_hashes(obj.get("proof"), "inclusion proof")

    async def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """GET /v1/proof/consistency?first=&second=: the proof hashes."""
        obj = await self.get_json("v1/proof/consistency", {"first": first, "second": second}, max_bytes=65536)
        _echo(obj, "first", first)
        _echo(obj, "second", second)
        return _hex_hashes(obj.get("proof"), "consistency proof")

    async def entries(self, start: int, end: int) -> list[dict[str, Any]]:
        """GET /v1/entries, following pages, for indexes [start, end)."""
        out: list[dict[str, Any]] = []
        while start + len(out) < end:
            page = await self.get_json("v1/entries", {"start": start + len(out), "end": end})
            items = page.get("entries") if isinstance(page, dict) else None
            if not isinstance(items, list) or not items:
                raise MalformedResponseError("/v1/entries: want a non-empty entries list")
            for item in items:
                if not isinstance(item, dict) or item.get("index") != start + len(out):
                    raise MalformedResponseError(f"/v1/entries: want entry {start + len(out)} next")
                out.append(item)
        return out[: end - start]

    async def fleet(self, fleet_id: str) -> dict[str, Any] | None:
        """GET /v1/fleets/<id>: the fleet's latest logged entry with its receipt, or
        None if the log says it has none (404).

        `.` and `..` are refused before any request: as a path segment they are dot
        segments (RFC 3986 §5.2.4), which URL normalisation removes, so the request
        would go to another route (`/v1/fleets/..` is `/v1/`). No such fleet can be
        logged (the log refuses them at admission: `reserved_fleet_id`)."""
        if fleet_id in (".", "..") or not fleet_id or "/" in fleet_id:
            raise LogClientError(f"fleet id {fleet_id!r} cannot name a fleet: it is not a single path segment "
                                 "other than a dot segment")
        obj = await self.get_json(f"v1/fleets/{quote(fleet_id, safe='')}", max_bytes=4 << 20, not_found_ok=True)
        if obj is not None and not isinstance(obj, dict):
            raise MalformedResponseError(f"/v1/fleets/{fleet_id}: want an object")
        return obj

    async def fleet_head(self, fleet_id: str, *, static: bool | None = None) -> bytes | None:
        """The fleet's fleet-head proof (docs/fleet-heads.md), as served, not verified:
        from the static tree (`<tiles URL>/fleet-head/<id>`) when `static` (default: when
        the client has no API), else `GET /v1/fleets/<id>/head`. None when the static tree
        has no object for the fleet (it publishes proofs of logged fleets only; the API
        proves an absence). Refuses "." and ".." as `fleet` does."""
        if fleet_id in (".", "..") or not fleet_id or "/" in fleet_id:
            raise LogClientError(f"fleet id {fleet_id!r} cannot name a fleet: it is not a single path segment "
                                 "other than a dot segment")
        name = quote(fleet_id, safe="")
        if static if static is not None else not self.has_api:
            return await self.get_static(f"fleet-head/{name}", max_bytes=MAX_FLEET_HEAD_PROOF_BYTES,
                                         not_found_ok=True)
        return await self.get(f"v1/fleets/{name}/head", max_bytes=MAX_FLEET_HEAD_PROOF_BYTES)

    # --- cross-checked proofs -----------------------------------------------------------

    async def checked_inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """The inclusion proof from the JSON API, required to equal the tile-computed one."""
        served, computed = await asyncio.gather(
            self.inclusion_proof(index, size), self.tile_inclusion_proof(index, size)
        )
        if served != computed:
            raise ProofMismatchError(
                f"inclusion proof of {index} at size {size}: the JSON API and the tiles give different proofs"
            )
        return served

    async def checked_consistency_proof(self, first: int, second: int) -> list[bytes]:
        """The consistency proof from the JSON API, required to equal the tile-computed one."""
        served, computed = await asyncio.gather(
            self.consistency_proof(first, second), self.tile_consistency_proof(first, second)
        )
        if served != computed:
            raise ProofMismatchError(
                f"consistency proof from {first} to {second}: the JSON API and the tiles give different proofs"
            )
        return served
