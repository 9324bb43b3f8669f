"""The status page for people: GET / (HTML), its script and style sheet, and the JSON
it reads besides GET /v1/log: GET /v1/status (docs/operations.md, "Status page").

The page is static package data (logserver/api/status_page/): no template, no data in
the HTML. Its script fetches /v1/log and /v1/status and fills the page in, so the JSON
API stays the one source of what it shows. It is served with a strict
Content-Security-Policy: scripts, styles and fetches from this origin only, nothing
inline, no frames, no forms.

/v1/status is public and costs a few bounded queries (storage/status.py); what it
reads from the database is kept for STATUS_TTL_S, so reloading pages cannot load the
database more than that.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import functools
from dataclasses import dataclass
from importlib.resources import files

from aiohttp import web

from ..cosigning import WitnessedPublisher
from ..formats import FormatError, parse_note, timestamp_of
from ..http.errors import ApiError
from ..http.params import query
from ..http.responses import json_response
from ..storage import CheckpointRow
from ..storage.status import FleetsPage, SizePoint, StatusStore, WitnessCosigned
from .keys import AUTHORITIES, CLOCK, LOG_KEY, PUBLISHER, READER, STORE, WITNESS_POLICY
from .published import published_latest

STATUS_TTL_S = 2.0      # how long the database part of /v1/status is reused
FLEETS_SHOWN = 100      # the most recently updated fleets listed (all are counted)
HISTORY_POINTS = 64     # stored checkpoints sampled for the tree-size plot
WITNESS_WINDOW = 10000  # a witness's last stored cosignature is looked for among this many newest checkpoints

# The page's files, served as they are: (package file, Content-Type).
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "status.js": "text/javascript; charset=utf-8",
    "status.css": "text/css; charset=utf-8",
}
ASSET_CACHE = "public, max-age=300"

# CSP Level 3: 'self' for the script, the style sheet and fetch(); nothing else may
# load, run inline, frame the page or be posted anywhere. `base-uri` and
# `form-action` do not fall back to default-src, so they are named.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                           "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@functools.cache
def asset(name: str) -> bytes:
    """A file of the page, read from the package once."""
    return (files("logserver") / "api" / "status_page" / name).read_bytes()


def _asset_response(name: str) -> web.Response:
    return web.Response(body=asset(name), headers={
        "Content-Type": ASSETS[name], "Cache-Control": ASSET_CACHE, **SECURITY_HEADERS})


async def get_index(request: web.Request) -> web.Response:
    """GET /: the page. Query parameters are ignored (a link may carry its own)."""
    return _asset_response("index.html")


async def get_script(request: web.Request) -> web.Response:
    return _asset_response("status.js")


async def get_style(request: web.Request) -> web.Response:
    return _asset_response("status.css")


# --- GET /v1/status ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Stored:
    """What /v1/status reads from the database."""

    fleets: FleetsPage
    history: list[SizePoint]
    witnesses: dict[str, WitnessCosigned]


class StatusCache:
    """The database part of /v1/status, shared for STATUS_TTL_S; concurrent misses wait
    for one read."""

    def __init__(self) -> None:
        self._value: _Stored | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def get(self, app: web.Application) -> _Stored:
        loop = asyncio.get_running_loop()
        if self._value is not None and loop.time() < self._expires:
            return self._value
        async with self._lock:
            if self._value is None or loop.time() >= self._expires:
                self._value = await _read(app)
                self._expires = loop.time() + STATUS_TTL_S
            return self._value


STATUS_CACHE = web.AppKey("status_cache", StatusCache)  # here, not in keys.py: only this module reads it


async def _read(app: web.Application) -> _Stored:
    store = StatusStore(app[STORE].pool)
    policy = app[WITNESS_POLICY]
    names = list(policy.witnesses) if policy is not None else []
    fleets = await store.fleets(FLEETS_SHOWN)
    history = await store.size_history(HISTORY_POINTS)
    witnesses = await store.witnesses_cosigned(names, WITNESS_WINDOW)
    return _Stored(fleets, history, witnesses)


def _time(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, as the other routes write times."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _checkpoint(cp: CheckpointRow, now: float) -> dict:
    return {"tree_size": cp.tree_size, "root": cp.root.hex(), "signed_at": _time(cp.signed_at_ms),
            "age_seconds": round(max(0.0, now - cp.signed_at_ms / 1000), 3)}


def _cosignature_times(app: web.Application, note: str) -> dict[str, int]:
    """Each policy witness whose cosignature is on the published note, with the
    timestamp it carries (tlog-cosignature: POSIX seconds). The log verified these
    lines before it published them (cosigning/requester.py)."""
    policy = app[WITNESS_POLICY]
    if policy is None:
        return {}
    try:
        signatures = parse_note(note).signatures
    except FormatError:  # the log's own published note: never, but the page must not fail on it
        return {}
    by_key = {(w.verifier.name, w.verifier.key_id): name for name, w in policy.witnesses.items()}
    times: dict[str, int] = {}
    for sig in signatures:
        name = by_key.get((sig.name, sig.key_id))
        if name is not None:
            try:
                times[name] = max(times.get(name, 0), timestamp_of(sig.signature))
            except FormatError:
                continue
    return times


def _witnesses(app: web.Application, stored: _Stored, published: CheckpointRow | None, now: float) -> dict | None:
    policy = app[WITNESS_POLICY]
    if policy is None:
        return None
    on_published = _cosignature_times(app, published.note) if published is not None else {}
    out = []
    for name, witness in policy.witnesses.items():
        # The newest of: its line on the published checkpoint (refreshes of the published
        # size are cosigned without a stored row, cosigning/publisher.py), its newest
        # stored cosignature.
        last: tuple[float, int] | None = None
        row = stored.witnesses.get(name)
        if row is not None:
            last = (row.received_at.timestamp(), row.tree_size)
        if name in on_published and published is not None and (last is None or on_published[name] >= last[0]):
            last = (float(on_published[name]), published.tree_size)
        out.append({
            "name": name,
            "url": witness.url,
            "verifier_key": witness.verifier.vkey,
            "on_published_checkpoint": name in on_published,
            "last_cosigned": None if last is None else {
                "tree_size": last[1], "at": _time(int(last[0] * 1000)),
                "age_seconds": round(max(0.0, now - last[0]), 3)},
        })
    return {"quorum": policy.quorum, "witnesses": out}


async def get_status(request: web.Request) -> web.Response:
    """GET /v1/status: what the status page shows beyond /v1/log."""
    query(request, set())
    app = request.app
    stored = await app[STATUS_CACHE].get(app)
    now = app[CLOCK]()
    key = app[LOG_KEY]
    signed = app[READER].latest
    try:
        published: CheckpointRow | None = await published_latest(app)
    except ApiError:  # witnessed, and no checkpoint has a quorum yet: the page says so
        published = None
    history = [{"tree_size": p.tree_size, "signed_at": _time(p.signed_at_ms)} for p in stored.history]
    if signed is not None and (not stored.history or signed.signed_at_ms > stored.history[-1].signed_at_ms):
        # An idle log re-signs its size without a stored row (migration 0003): the plot reaches now.
        history.append({"tree_size": signed.tree_size, "signed_at": _time(signed.signed_at_ms)})
    publisher = app[PUBLISHER]
    return json_response({
        "origin": key.origin,
        "verifier_key": key.vkey,
        "now": _time(int(now * 1000)),
        "signed": None if signed is None else _checkpoint(signed, now),
        "published": None if published is None else _checkpoint(published, now),
        "witnessed": isinstance(publisher, WitnessedPublisher),
        "authorities": [
            {"name": k.authority, "role": k.role, "algorithm": k.algorithm, "keyid": k.keyid}
            for k in sorted(app[AUTHORITIES].values(), key=lambda k: (k.role != "signer", k.authority, k.keyid))
        ],
        "witnesses": _witnesses(app, stored, published, now),
        "fleets": {
            "count": stored.fleets.count,
            "retired": stored.fleets.retired,
            "shown": [{"fleet_id": f.fleet_id, "sequence": f.sequence, "index": f.idx,
                       "status": "retired" if f.retired else "active"} for f in stored.fleets.latest],
        },
        "tree_sizes": history,
    })
