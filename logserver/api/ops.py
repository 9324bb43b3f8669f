"""Operations routes: /metrics, /healthz, /readyz, /openapi.yaml."""
from __future__ import annotations

import asyncio
import time
from importlib.resources import files
from importlib.resources.abc import Traversable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..cosigning import WitnessedPublisher
from ..http.responses import NO_STORE, json_response
from .keys import ADMISSION, CONFIG, METRICS, PUBLISHER, READER, SEQUENCER, STATIC, STORE


def openapi_path() -> Traversable:
    """The package's openapi.yaml: package data in a wheel; in a checkout (and an editable
    install) `logserver/openapi.yaml` is a symlink to the top-level file (CONTRIBUTING.md)."""
    return files("logserver") / "openapi.yaml"


# /metrics asks the database for SELECT 1 this long at most (logserver_database_up): well
# inside Prometheus's default scrape timeout (10 s). A pool exhausted for longer also reads as 0.
DATABASE_PROBE_TIMEOUT_S = 1.0


async def database_answers(app: web.Application, timeout_s: float) -> bool:
    """True if the database answers SELECT 1 within `timeout_s` (acquiring a connection included)."""
    try:
        async with asyncio.timeout(timeout_s):
            await app[STORE].pool.fetchval("SELECT 1")
    except Exception:  # asyncpg, OSError, TimeoutError: all mean "not answering now"
        return False
    return True


async def get_metrics(request: web.Request) -> web.Response:
    app = request.app
    m = app[METRICS]
    reader = app[READER]
    cp = reader.latest
    if cp is not None:
        m.tree_size.set(cp.tree_size)
        m.checkpoint_timestamp.set(cp.signed_at_ms / 1000)
        m.checkpoint_age.set(max(0.0, time.time() - cp.signed_at_ms / 1000))
    m.pending.set(app[SEQUENCER].pending)
    m.sequencer_halted.set(1 if app[SEQUENCER].halted else 0)
    m.database_up.set(1 if await database_answers(app, DATABASE_PROBE_TIMEOUT_S) else 0)
    m.tile_cache_bytes.set(reader.tile_cache_bytes)
    m.tile_cache_limit.set(reader.max_tile_cache_bytes)
    m.bundle_cache_bytes.set(reader.bundle_cache_bytes)
    m.bundle_cache_limit.set(reader.max_bundle_cache_bytes)
    static = app[STATIC]
    if static is not None:
        static.update_metrics()
    pool = app[STORE].pool
    m.pool_size.set(pool.get_size())
    m.pool_idle.set(pool.get_idle_size())
    m.pool_max.set(pool.get_max_size())
    body = generate_latest(m.registry)
    return web.Response(body=body, headers={"Cache-Control": NO_STORE, "Content-Type": CONTENT_TYPE_LATEST})


async def get_healthz(request: web.Request) -> web.Response:
    """Liveness: the process is serving requests."""
    return json_response({"status": "ok"})


async def get_readyz(request: web.Request) -> web.Response:
    """Readiness: the database answers, the sequencer may sign and submissions can be checked."""
    app = request.app
    halted = app[SEQUENCER].halted
    retry = {"Retry-After": str(app[CONFIG].limits.retry_after_s)}
    if halted:
        return json_response({"status": "halted", "reason": halted}, status=503, headers=retry)
    if not app[ADMISSION].ready:
        reason = (f"no admission process is running (verify_processes = {app[ADMISSION].processes}); "
                  "submissions get 503 until one has started (see the server log)")
        return json_response({"status": "admission_unavailable", "reason": reason}, status=503, headers=retry)
    if not getattr(app[SEQUENCER], "connected", True):  # a `serve --workers` forwarder
        return json_response({"status": "sequencer_unavailable"}, status=503, headers=retry)
    try:
        await app[STORE].pool.fetchval("SELECT 1", timeout=2)
    except Exception:
        return json_response({"status": "database_unavailable"}, status=503, headers=retry)
    publisher = app[PUBLISHER]
    if isinstance(publisher, WitnessedPublisher) and publisher.quorum_met is False \
            and not app[CONFIG].witnessing.fail_open:
        # Fail closed: submissions wait max_wait_s, then get 503 witness_quorum_unavailable.
        return json_response({"status": "witness_quorum_unavailable", "reason": publisher.quorum_reason},
                             status=503, headers=retry)
    static = app[STATIC]
    behind = static.behind(app[CONFIG].publication.max_lag_s) if static is not None else []
    if behind:
        return json_response({"status": "publication_behind", "reason": "; ".join(behind)},
                             status=503, headers=retry)
    latest = app[READER].latest
    return json_response({"status": "ok", "tree_size": latest.tree_size if latest else None})


async def get_openapi(request: web.Request) -> web.Response:
    path = openapi_path()
    if not path.is_file():
        return json_response({"error": {"code": "not_found", "message": "openapi.yaml is not installed"}}, status=404)
    return web.Response(body=path.read_bytes(), content_type="application/yaml",
                        headers={"Cache-Control": "public, max-age=300"})
