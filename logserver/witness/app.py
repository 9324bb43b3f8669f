"""The witness HTTP server (C2SP tlog-witness): add-checkpoint, sign-subtree, the
monitoring API, evidence, status, ops.

    POST <prefix>/add-checkpoint          cosign a checkpoint consistent with the last one cosigned
    POST <prefix>/sign-subtree            cosign a subtree of a checkpoint it cosigned (ML-DSA-44 key only)
    GET  <monitoring prefix>/<origin hash>/checkpoint
                                          the latest cosigned checkpoint of a log, with the cosignatures
    GET  /evidence                        refused log-signed requests that contradict the cosigned history
    GET  /status                          the witness's name, vkeys and latest cosigned checkpoint per log
    GET  /metrics, /healthz, /readyz

Errors other than the protocol's 409 body use the log's JSON error shape
(api/errors.py), and the only 5xx is 503 with Retry-After.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from ..formats import (
    TLOG_SIZE_CONTENT_TYPE,
    FormatError,
    MLDSA44CosignatureVerifier,
    Note,
    UnverifiedNoteError,
    VerificationError,
    format_tlog_size,
    parse_add_checkpoint_request,
    parse_note,
    parse_sign_subtree_request,
    verify_note,
)
from ..formats.tlog_witness import MAX_ADD_CHECKPOINT_SIZE
from ..http.budget import DEFAULT_REQUEST_BUDGET, ByteBudget, receive_body
from ..http.errors import ApiError, make_error_middleware, make_expect_handler
from ..http.params import decimal, query
from ..http.responses import NO_STORE, json_response
from ..merkle import MerkleError, verify_subtree_consistency
from ..storage import create_pool
from .checks import BadProof, Conflict, Cosign, KnownCheckpoint, NothingCosigned, check_reference, decide
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
        self.subtrees = Counter("logserver_witness_sign_subtree_total",
                                "sign-subtree requests by log origin and HTTP status.", ["origin", "status"],
                                registry=r)
        self.monitoring = Counter("logserver_witness_monitoring_requests_total",
                                  "Monitoring API requests (GET <origin hash>/checkpoint) by HTTP status.",
                                  ["status"], registry=r)
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
# The monitoring API's <origin hash> (lowercase hex SHA-256) of each followed origin.
ORIGIN_HASHES = web.AppKey("origin_hashes", dict[str, str])


def create_witness_app(config: WitnessConfig, *, clock: Callable[[], float] = time.time,
                       cosigner: Cosigner | None = None) -> web.Application:
    """Build the witness application. Raises ConfigError for a bad key file."""
    cosigner = cosigner or Cosigner.load(config.keys, config.name, clock)
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
    app[ORIGIN_HASHES] = {hashlib.sha256(origin.encode("utf-8")).hexdigest(): origin for origin, _ in config.logs}
    app.cleanup_ctx.append(_storage_ctx)
    r = app.router
    r.add_post(f"{config.prefix}/add-checkpoint", add_checkpoint,
               expect_handler=make_expect_handler(MAX_ADD_CHECKPOINT_SIZE))
    if cosigner.subtree_signers:
        # "It is OPTIONAL for a witness to support this API": only an ML-DSA-44 key can
        # cosign a subtree (the Ed25519 cosignature signs checkpoints only), so a witness
        # without one has no such route (404).
        r.add_post(f"{config.prefix}/sign-subtree", sign_subtree,
                   expect_handler=make_expect_handler(MAX_ADD_CHECKPOINT_SIZE))
    r.add_get(config.monitoring_prefix + "/{origin_hash:[0-9a-f]{64}}/checkpoint", get_monitored_checkpoint)
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
        added = await store.ensure_keys(cosigner.name, cosigner.public_keys())
        for vkey in added:
            log.info("witness key recorded: %s", vkey)
        await store.ensure_logs(origin for origin, _ in config.logs)
        for state in await store.states():
            app[WITNESS_METRICS].cosigned_size.labels(state.origin).set(state.tree_size)
        app[WITNESS_STORE] = store
        log.info("witness %s following %d log(s)", ", ".join(cosigner.vkeys), len(config.logs))
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
        opened = verify_note(parse_note(req.checkpoint), verifiers)
    except VerificationError as e:
        # "The witness MUST respond with a 403 Forbidden HTTP status code if either no
        # signature from a trusted key for the origin is present, or a signature line's
        # key name and ID match a trusted key but the signature itself fails to verify".
        metrics.requests.labels(origin, "403").inc()
        raise ApiError(403, "bad_log_signature", f"checkpoint for {origin!r}: {e}") from None
    if not app[COSIGNER].signers_for(checkpoint):
        metrics.requests.labels(origin, "400").inc()
        raise ApiError(400, "unsupported_checkpoint",
                       f"checkpoint: got {len(checkpoint.extensions)} extension line(s), which an ML-DSA-44 "
                       "cosignature does not cover, and this witness has no Ed25519 key")
    request_text = body.decode("utf-8")
    lines: str | None = None  # the cosignature lines, made only for a Cosign decision
    async with app[WITNESS_STORE].locked(origin) as tx:
        stored = tx.state
        decision = decide(stored.tree_size, stored.root, req.old_size, checkpoint, req.consistency_proof)
        if isinstance(decision, Cosign):
            # Stamped under the row lock: a cosignature says that "as of the specified
            # time" this is the largest tree the witness has observed (tlog-cosignature,
            # both signed messages), so it must not carry a time later than a
            # cosignature of a larger tree committed after this one.
            ours = app[COSIGNER].cosign(checkpoint)
            # What the monitoring API serves: the log's verified signatures and ours.
            cosigned = Note(opened.text, opened.verified + ours).format()
            await tx.advance(checkpoint.size, checkpoint.root, cosigned)
            lines = "".join(sig.line() for sig in ours)
        elif isinstance(decision, BadProof) and decision.evidence:
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
        if decision.evidence:
            metrics.evidence.labels(origin, "inconsistent_proof").inc()
            log.warning("witness: %s: %s", origin, decision.detail)
        raise ApiError(422, "inconsistent_proof", decision.detail)
    assert lines is not None, decision  # Cosign: Conflict returned and BadProof raised above
    metrics.requests.labels(origin, "200").inc()
    metrics.cosigned_size.labels(origin).set(checkpoint.size)
    return web.Response(text=lines, content_type="text/plain", charset="utf-8", headers={"Cache-Control": NO_STORE})


async def sign_subtree(request: web.Request) -> web.Response:
    """tlog-witness sign-subtree. Checks: a well-formed body with start < end <= the
    reference checkpoint's size and a valid subtree (400), a known origin (404), every
    signature by a key this witness knows verifies (403: the log's keys and its own on
    the reference checkpoint, its own and the log's ML-DSA-44 keys on the subtree
    cosignature lines; others are ignored), the reference checkpoint is one this witness
    cosigned (409 with the latest it cosigned, or 403 when it cosigned none), the
    subtree consistency proof verifies (422); then 200 with one timestamp-0 `subtree/v1`
    line per ML-DSA-44 key. Nothing is written: sign-subtree only reads the state."""
    app = request.app
    config, metrics, cosigner = app[WITNESS_CONFIG], app[WITNESS_METRICS], app[COSIGNER]
    query(request, set())
    body = await receive_body(request, MAX_ADD_CHECKPOINT_SIZE, app[BODY_BUDGET], config.request_timeout_s)
    try:
        req = parse_sign_subtree_request(body)
        reference = req.parsed_checkpoint()
        subtree = req.subtree()
    except FormatError as e:
        metrics.subtrees.labels("", "400").inc()
        raise ApiError(400, "bad_request", str(e)) from None
    origin = reference.origin
    log_verifiers = config.log_verifiers().get(origin)
    if log_verifiers is None:
        metrics.subtrees.labels("", "404").inc()
        raise ApiError(404, "unknown_log",
                       f"checkpoint origin: got {origin[:200]!r}, which this witness does not follow")
    own = cosigner.verifiers()
    cosigned_by_witness = False
    note = req.reference_note()
    if note is not None:
        try:
            opened = verify_note(note, [*log_verifiers, *own])
            cosigned_by_witness = any(opened.signature_by(v) is not None for v in own)
        except UnverifiedNoteError:
            pass  # only unknown keys signed: the stateful check below decides
        except VerificationError as e:
            metrics.subtrees.labels(origin, "403").inc()
            raise ApiError(403, "bad_signature", f"reference checkpoint for {origin!r}: {e}") from None
    # "Witnesses MUST ignore subtree cosignatures from unknown keys"; a line by a known
    # ML-DSA-44 key must "encode a valid cosignature on the subtree".
    subtree_keys = {(v.name, v.key_id): v for v in [*own, *log_verifiers]
                    if isinstance(v, MLDSA44CosignatureVerifier)}
    for line in req.cosignatures:
        verifier = subtree_keys.get((line.name, line.key_id))
        if verifier is None:
            continue
        try:
            verifier.verify_subtree(subtree, line.signature)
        except VerificationError as e:
            metrics.subtrees.labels(origin, "403").inc()
            raise ApiError(403, "bad_signature", f"subtree cosignature: {e}") from None
    state = await app[WITNESS_STORE].state(origin)
    assert state is not None, origin  # every followed log has a row (ensure_logs)
    decision = check_reference(cosigned_by_witness, state.tree_size, state.root, state.note, reference)
    if isinstance(decision, NothingCosigned):
        metrics.subtrees.labels(origin, "403").inc()
        raise ApiError(403, "unknown_checkpoint", decision.detail)
    if not isinstance(decision, KnownCheckpoint):
        metrics.subtrees.labels(origin, "409").inc()
        return web.Response(status=409, text=decision.note, content_type="text/plain", charset="utf-8",
                            headers={"Cache-Control": NO_STORE})
    try:
        verify_subtree_consistency(req.start, req.end, reference.size, req.subtree_hash, reference.root,
                                   req.consistency_proof)
    except MerkleError as e:
        # "If the Merkle Consistency Proof doesn't verify, ... 422".
        metrics.subtrees.labels(origin, "422").inc()
        raise ApiError(422, "inconsistent_proof", f"subtree [{req.start}, {req.end}): {e}") from None
    lines = "".join(sig.line() for sig in cosigner.sign_subtree(subtree))
    metrics.subtrees.labels(origin, "200").inc()
    return web.Response(text=lines, content_type="text/plain", charset="utf-8", headers={"Cache-Control": NO_STORE})


async def get_monitored_checkpoint(request: web.Request) -> web.Response:
    """The monitoring API: `GET <monitoring prefix>/<origin hash>/checkpoint`, the origin
    hash being the lowercase hex SHA-256 of the log's origin. 200 with the latest cosigned
    checkpoint (the log's verified signatures and this witness's cosignature lines),
    committed before its cosignatures were returned, so it is never behind them; 404 for
    a log this witness does not follow or has not cosigned yet."""
    app = request.app
    query(request, set())
    origin_hash = request.match_info["origin_hash"]
    origin = app[ORIGIN_HASHES].get(origin_hash)
    state = None if origin is None else await app[WITNESS_STORE].state(origin)
    if state is None or state.note is None:
        app[WITNESS_METRICS].monitoring.labels("404").inc()
        raise ApiError(404, "unknown_log", f"origin hash {origin_hash}: no cosigned checkpoint of such a log")
    app[WITNESS_METRICS].monitoring.labels("200").inc()
    return web.Response(text=state.note, content_type="text/plain", charset="utf-8",
                        headers={"Cache-Control": NO_STORE})


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
        "vkeys": list(cosigner.vkeys),
        "submission_prefix": app[WITNESS_CONFIG].prefix,
        "monitoring_prefix": app[WITNESS_CONFIG].monitoring_prefix,
        "sign_subtree": bool(cosigner.subtree_signers),
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
