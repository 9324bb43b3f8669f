"""The witness HTTP server (C2SP tlog-witness): add-checkpoint, evidence, status, ops.

    POST <prefix>/add-checkpoint   cosign a checkpoint consistent with the last one cosigned
    GET  /evidence                 refused log-signed requests that contradict the cosigned history
    GET  /status                   the witness's name, vkey and latest cosigned checkpoint per log
    GET  /metrics, /healthz, /readyz

Errors other than the protocol's 409 body use the log's JSON error shape
(api/errors.py), and the only 5xx is 503 with Retry-After.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from ..formats import (
    TLOG_SIZE_CONTENT_TYPE,
    FormatError,
    VerificationError,
    format_tlog_size,
    open_note,
    parse_add_checkpoint_request,
)
from ..formats.tlog_witness import MAX_ADD_CHECKPOINT_SIZE
from ..http.budget import DEFAULT_REQUEST_BUDGET, ByteBudget, receive_body
from ..http.errors import ApiError, make_error_middleware, make_expect_handler
from ..http.params import decimal, query
from ..http.responses import NO_STORE, json_response
from ..storage import create_pool
from .checks import BadProof, Conflict, Cosign, decide
from .config import WitnessConfig
from .cosigner import Cosigner
from .store import WitnessStore, migrate_witness, resolve_witness_database_url

log = logging.getLogger(__name__)

EVIDENCE_PAGE = 100


# The kinds of evidence a witness keeps (add_checkpoint below): a root at an unchanged
# size other than the cosigned one, and a consistency proof that does not verify.
EVIDENCE_KINDS = ("root_conflict", "inconsistent_proof")


class WitnessMetrics:
    def __init__(self, origins: tuple[str, ...] = ()) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("logserver_witness_add_checkpoint_total",
                                "add-checkpoint requests by log origin and HTTP status.", ["origin", "status"],
                                registry=r)
        self.cosigned_size = Gauge("logserver_witness_cosigned_tree_size",
                                   "Size of the latest checkpoint cosigned, per log origin.", ["origin"], registry=r)
        self.evidence = Counter("logserver_witness_evidence_total",
                                "Refused log-signed requests kept as evidence, by kind.", ["origin", "kind"],
                                registry=r)
        for origin in origins:  # zeroes for every followed log, so that increase() sees the first one
            for kind in EVIDENCE_KINDS:
                self.evidence.labels(origin, kind)


WITNESS_CONFIG = web.AppKey("witness_config", WitnessConfig)
WITNESS_STORE = web.AppKey("witness_store", WitnessStore)
COSIGNER = web.AppKey("cosigner", Cosigner)
WITNESS_METRICS = web.AppKey("witness_metrics", WitnessMetrics)
# Request bodies being received, all connections together: without it, 300 slow
# uploads of ~1 MiB each held 400 MiB (issue 23).
BODY_BUDGET = web.AppKey("body_budget", ByteBudget)


def create_witness_app(config: WitnessConfig, *, clock: Callable[[], float] = time.time,
                       cosigner: Cosigner | None = None) -> web.Application:
    """Build the witness application. Raises ConfigError for a bad key file."""
    cosigner = cosigner or Cosigner.load(config.key, config.name, clock)
    if cosigner.name != config.name:
        raise ValueError(f"cosigner name {cosigner.name!r} is not the configured name {config.name!r}")
    app = web.Application(
        client_max_size=MAX_ADD_CHECKPOINT_SIZE,
        middlewares=[make_error_middleware(config.retry_after_s)],
    )
    app[WITNESS_CONFIG] = config
    app[COSIGNER] = cosigner
    app[WITNESS_METRICS] = WitnessMetrics(tuple(origin for origin, _ in config.logs))
    app[BODY_BUDGET] = ByteBudget(DEFAULT_REQUEST_BUDGET, "request bodies")
    app.cleanup_ctx.append(_storage_ctx)
    r = app.router
    r.add_post(f"{config.prefix}/add-checkpoint", add_checkpoint,
               expect_handler=make_expect_handler(MAX_ADD_CHECKPOINT_SIZE))
    r.add_get("/evidence", get_evidence)
    r.add_get("/status", get_status)
    r.add_get("/metrics", get_metrics)
    r.add_get("/healthz", get_healthz)
    r.add_get("/readyz", get_readyz)
    return app


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    config, cosigner = app[WITNESS_CONFIG], app[COSIGNER]
    url, embedded = await asyncio.to_thread(resolve_witness_database_url, config.database_url, config.data_dir)
    log.info("witness database: %s", "embedded PostgreSQL in " + str(config.data_dir) if embedded else "configured")
    pool = await create_pool(url)
    try:
        async with pool.acquire() as conn:
            await migrate_witness(conn)
        store = WitnessStore(pool)
        await store.ensure_identity(cosigner.name, cosigner.public_key_bytes, cosigner.vkey)
        await store.ensure_logs(origin for origin, _ in config.logs)
        for state in await store.states():
            app[WITNESS_METRICS].cosigned_size.labels(state.origin).set(state.tree_size)
        app[WITNESS_STORE] = store
        log.info("witness %s following %d log(s)", cosigner.vkey, len(config.logs))
        yield
    finally:
        await pool.close()


async def add_checkpoint(request: web.Request) -> web.Response:
    """tlog-witness add-checkpoint. Checks in the spec's order: a well-formed body
    (400), a known origin (404), a verified log signature (403), then, under the
    log's row lock, the old size (409), the consistency proof (422) and the root at
    an unchanged size (409); the cosignature is made under that lock and returned
    once the new state is committed."""
    app = request.app
    config, metrics = app[WITNESS_CONFIG], app[WITNESS_METRICS]
    query(request, set())
    body = await receive_body(request, MAX_ADD_CHECKPOINT_SIZE, app[BODY_BUDGET], config.request_timeout_s)
    try:
        req = parse_add_checkpoint_request(body)
        checkpoint = req.parsed_checkpoint()
    except FormatError as e:
        metrics.requests.labels("", "400").inc()
        raise ApiError(400, "bad_request", str(e)) from None
    origin = checkpoint.origin
    verifiers = config.log_verifiers().get(origin)
    if verifiers is None:
        metrics.requests.labels("", "404").inc()
        raise ApiError(404, "unknown_log",
                       f"checkpoint origin: got {origin[:200]!r}, which this witness does not follow")
    try:
        open_note(req.checkpoint, verifiers)
    except VerificationError as e:
        # "If none of the signatures verify against a trusted public key ... 403";
        # a failing signature by a trusted key rejects the note as well.
        metrics.requests.labels(origin, "403").inc()
        raise ApiError(403, "bad_log_signature", f"checkpoint for {origin!r}: {e}") from None
    request_text = body.decode("utf-8")
    line: str | None = None  # the cosignature, made only for a Cosign decision
    async with app[WITNESS_STORE].locked(origin) as tx:
        stored = tx.state
        decision = decide(stored.tree_size, stored.root, req.old_size, checkpoint, req.consistency_proof)
        if isinstance(decision, Cosign):
            await tx.advance(checkpoint.size, checkpoint.root, req.checkpoint)
            # Stamped under the row lock: a cosignature says that "as of the specified
            # time" this is the largest tree the witness has observed (tlog-cosignature,
            # "Ed25519 signed message"), so it must not carry a time later than a
            # cosignature of a larger tree committed after this one.
            line = app[COSIGNER].cosign(checkpoint)
        elif isinstance(decision, BadProof):
            await tx.record_evidence("inconsistent_proof", req.old_size, checkpoint.size, request_text,
                                     decision.detail)
        elif decision.evidence:
            await tx.record_evidence("root_conflict", req.old_size, checkpoint.size, request_text, decision.detail)
    # Committed (durable) from here on.
    if isinstance(decision, Conflict):
        metrics.requests.labels(origin, "409").inc()
        if decision.evidence:
            metrics.evidence.labels(origin, "root_conflict").inc()
            log.warning("witness: %s: %s", origin, decision.detail)
        # "The response body MUST consist of the tree size of the latest cosigned
        # checkpoint in decimal, followed by a newline ... Content-Type text/x.tlog.size".
        return web.Response(status=409, body=format_tlog_size(decision.size).encode(),
                            headers={"Content-Type": TLOG_SIZE_CONTENT_TYPE, "Cache-Control": NO_STORE})
    if isinstance(decision, BadProof):
        metrics.requests.labels(origin, "422").inc()
        metrics.evidence.labels(origin, "inconsistent_proof").inc()
        log.warning("witness: %s: %s", origin, decision.detail)
        raise ApiError(422, "inconsistent_proof", decision.detail)
    assert line is not None, decision  # Cosign: Conflict returned and BadProof raised above
    metrics.requests.labels(origin, "200").inc()
    metrics.cosigned_size.labels(origin).set(checkpoint.size)
    return web.Response(text=line, content_type="text/plain", charset="utf-8", headers={"Cache-Control": NO_STORE})


async def get_evidence(request: web.Request) -> web.Response:
    """Evidence in id order: `?after=<id>` pages on, at most 100 per page."""
    q = query(request, set(), {"after"})
    after = decimal(q["after"], "after") if "after" in q else 0
    rows = await request.app[WITNESS_STORE].evidence(after, EVIDENCE_PAGE)
    items = [{
        "id": e.id,
        "origin": e.origin,
        "kind": e.kind,
        "old_size": e.old_size,
        "checkpoint_size": e.checkpoint_size,
        "cosigned_size": e.stored_size,
        "cosigned_checkpoint": e.stored_note,
        "request": e.request,
        "detail": e.detail,
        "received_at": e.received_at.isoformat().replace("+00:00", "Z"),
    } for e in rows]
    return json_response({"evidence": items, "next_after": rows[-1].id if rows else after})


async def get_status(request: web.Request) -> web.Response:
    query(request, set())
    app = request.app
    cosigner = app[COSIGNER]
    states = await app[WITNESS_STORE].states()
    followed = app[WITNESS_CONFIG].log_verifiers()
    return json_response({
        "name": cosigner.name,
        "vkey": cosigner.vkey,
        "submission_prefix": app[WITNESS_CONFIG].prefix,
        "logs": [{
            "origin": s.origin,
            "log_vkeys": [str(v.vkey) for v in followed[s.origin]],
            "tree_size": s.tree_size,
            "checkpoint": s.note,
        } for s in states if s.origin in followed],
    })


async def get_metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[WITNESS_METRICS].registry)
    return web.Response(body=body, headers={"Cache-Control": NO_STORE, "Content-Type": CONTENT_TYPE_LATEST})


async def get_healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def get_readyz(request: web.Request) -> web.Response:
    app = request.app
    try:
        await app[WITNESS_STORE].pool.fetchval("SELECT 1", timeout=2)
    except Exception:
        return json_response({"status": "database_unavailable"}, status=503,
                             headers={"Retry-After": str(app[WITNESS_CONFIG].retry_after_s)})
    return json_response({"status": "ok"})
