"""POST /v1/bundles: admission of dual-signed bundles."""
from __future__ import annotations

import asyncio
import datetime as dt
import time

from aiohttp import web

from ..bundle import BundleError, accept_verified, encode_leaf, parse_envelope, select_signatures
from ..merkle import leaf_hash
from ..receipt import build_receipt
from ..sequencer import Appended, Duplicate, SequencerError
from ..signature_verifier import VerifierUnavailableError
from .errors import ApiError
from .keys import AUTHORITIES, CLOCK, CONFIG, METRICS, READER, SEQUENCER, VERIFIER
from .params import query
from .published import published_covering, receipt_checkpoint
from .responses import json_response
from .entries import entry_json


async def post_bundle(request: web.Request) -> web.Response:
    app = request.app
    metrics = app[METRICS]
    limits = app[CONFIG].limits
    try:
        query(request, set())  # like every other API route: unknown query parameters are refused
    except ApiError:
        metrics.submissions.labels("bad_request").inc()
        raise
    if request.content_type != "application/json":
        metrics.submissions.labels("unsupported_media_type").inc()
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Type: want application/json, got {request.content_type or 'none'}")
    if request.content_length is not None and request.content_length > limits.max_body_bytes:
        metrics.submissions.labels("too_large").inc()
        raise ApiError(413, "too_large",
                       f"body is {request.content_length} bytes; the limit is {limits.max_body_bytes}")
    try:
        # client_max_size enforces the size limit even without Content-Length; the
        # timeout stops a slow or stalled body from holding a connection forever.
        # (asyncio.timeout, not wait_for: no extra task per request on the hot path.)
        async with asyncio.timeout(limits.request_timeout_s):
            body = await request.read()
    except asyncio.TimeoutError:
        metrics.submissions.labels("request_timeout").inc()
        raise ApiError(408, "request_timeout",
                       f"the request body did not arrive within {limits.request_timeout_s:g}s") from None
    sequencer = app[SEQUENCER]
    if sequencer.pending >= sequencer.max_pending:
        # Shed before verifying: under overload, two signature checks per refused request
        # would starve the event loop (and the sequencer and the readers with it).
        metrics.submissions.labels("overloaded").inc()
        raise ApiError(503, "overloaded", f"{sequencer.pending} submissions are already pending; retry later")
    started = time.perf_counter()
    try:
        envelope = parse_envelope(body)
        checks = select_signatures(envelope, app[AUTHORITIES])
        await app[VERIFIER].verify(checks)  # in a verifier process: a second core
        verified = accept_verified(checks, dt.datetime.fromtimestamp(app[CLOCK](), dt.timezone.utc))
        leaf = encode_leaf(envelope)
    except BundleError as e:
        metrics.submissions.labels(e.code).inc()
        raise ApiError(e.http_status, e.code, str(e)) from None
    except VerifierUnavailableError as e:
        metrics.submissions.labels("unavailable").inc()
        raise ApiError(503, "unavailable", str(e)) from None
    finally:
        metrics.verify_seconds.observe(time.perf_counter() - started)
    bundle = verified.bundle
    lh = leaf_hash(leaf)
    try:
        future = sequencer.submit(leaf, lh, bundle.fleet_id, bundle.sequence, verified.payload_digest)
        async with asyncio.timeout(app[CONFIG].sequencer.commit_timeout_s):
            result = await asyncio.shield(future)  # a timeout must not withdraw the entry
    except asyncio.TimeoutError:
        metrics.submissions.labels("timeout").inc()
        raise ApiError(503, "commit_timeout", "the entry was not committed in time; retry (retries are idempotent)") from None
    except SequencerError as e:
        metrics.submissions.labels(e.code).inc()
        raise ApiError(e.status, e.code, str(e)) from None

    if isinstance(result, Appended):
        metrics.submissions.labels("appended").inc()
        cp, proof = await receipt_checkpoint(app, result.index, result.checkpoint, result.inclusion_proof)
        receipt = build_receipt(result.index, lh, cp.tree_size, cp.note, proof, duplicate=False)
        return json_response(receipt, status=201)
    assert isinstance(result, Duplicate), result
    metrics.submissions.labels("duplicate").inc()
    reader = app[READER]
    cp = await published_covering(app, result.index + 1)
    proof = await reader.inclusion_proof(result.index, cp.tree_size)
    receipt = build_receipt(result.index, result.leaf_hash, cp.tree_size, cp.note, proof, duplicate=True)
    if result.leaf_hash != lh:
        # Same payload, other signatures (ECDSA signatures differ on every signing): the
        # receipt is for the envelope the log holds, which is returned with it.
        entry = await entry_json(app, result.index, result.leaf_hash)
        receipt["envelope"] = entry["envelope"]
    return json_response(receipt, status=200)
