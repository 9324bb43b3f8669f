"""POST /v1/bundles: admission of dual-signed bundles."""
from __future__ import annotations

import asyncio
import time

from aiohttp import web

from ..bundle import BundleError
from ..formats.receipt import build_receipt, receipt_json
from ..http.errors import ApiError
from ..http.params import query
from ..http.responses import json_response, raw_json_response
from ..merkle import leaf_hash
from ..write.admission import AdmissionUnavailableError
from ..write.deadlines import Deadlines
from ..write.outcomes import Appended, Duplicate, SequencerError
from .entries import entry_json
from .keys import ADMISSION, CLOCK, COMMIT_DEADLINES, CONFIG, METRICS, READER, SEQUENCER
from .published import published_covering, receipt_checkpoint


class CommitTimeoutError(Exception):
    """A submission was not committed within `sequencer.commit_timeout_s`."""


def commit_deadlines(timeout_s: float) -> Deadlines:
    return Deadlines(timeout_s, CommitTimeoutError)


async def post_bundle(request: web.Request) -> web.Response:
    app = request.app
    metrics = app[METRICS]
    limits = app[CONFIG].limits
    try:
        query(request, set())  # like every other API route: unknown query parameters are refused
    except ApiError:
        metrics.count_submission("bad_request")
        raise
    if request.content_type != "application/json":
        metrics.count_submission("unsupported_media_type")
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Type: want application/json, got {request.content_type or 'none'}")
    if request.content_length is not None and request.content_length > limits.max_body_bytes:
        metrics.count_submission("too_large")
        raise ApiError(413, "too_large",
                       f"body is {request.content_length} bytes; the limit is {limits.max_body_bytes}")
    try:
        # client_max_size enforces the size limit even without Content-Length; the
        # timeout stops a slow or stalled body from holding a connection forever.
        # A body that has fully arrived (the usual case) is read without waiting, so
        # no timer is armed for it.
        if request.content.is_eof():
            body = await request.read()
        else:
            async with asyncio.timeout(limits.request_timeout_s):
                body = await request.read()
    except TimeoutError:
        metrics.count_submission("request_timeout")
        raise ApiError(408, "request_timeout",
                       f"the request body did not arrive within {limits.request_timeout_s:g}s") from None
    sequencer, admission = app[SEQUENCER], app[ADMISSION]
    pending = sequencer.pending + admission.pending
    if pending >= sequencer.max_pending:
        # Shed before checking: under overload, two signature checks per refused request
        # would starve the server (and the sequencer and the readers with it).
        metrics.count_submission("overloaded")
        raise ApiError(503, "overloaded", f"{pending} submissions are already pending; retry later")
    started = time.perf_counter()
    try:
        admitted = await admission.admit(body, app[CLOCK]())  # in an admission process: a second core
    except BundleError as e:
        metrics.count_submission(e.code)
        raise ApiError(e.http_status, e.code, str(e)) from None
    except AdmissionUnavailableError as e:
        metrics.count_submission("unavailable")
        raise ApiError(503, "unavailable", str(e)) from None
    finally:
        metrics.verify_seconds.observe(time.perf_counter() - started)
    leaf = admitted.leaf
    lh = leaf_hash(leaf)
    try:
        future = sequencer.submit(leaf, lh, admitted.fleet_id, admitted.sequence, admitted.payload_digest,
                                  retired=admitted.retired)
        # commit_timeout_s: the deadline fails the future (one timer for all requests,
        # logserver/write/deadlines.py). The sequencer skips an entry whose future is done,
        # unless its batch is already being written: a retry is then a duplicate.
        app[COMMIT_DEADLINES].add(future)
        result = await future
    except CommitTimeoutError:
        metrics.count_submission("timeout")
        raise ApiError(503, "commit_timeout",
                       "the entry was not committed in time; retry (retries are idempotent)") from None
    except SequencerError as e:
        metrics.count_submission(e.code)
        raise ApiError(e.status, e.code, str(e)) from None

    if isinstance(result, Appended):
        metrics.count_submission("appended")
        cp, proof = await receipt_checkpoint(app, result.index, result.checkpoint, result.inclusion_proof)
        return raw_json_response(receipt_json(result.index, lh, cp.tree_size, cp.note, proof, duplicate=False),
                                 status=201)
    assert isinstance(result, Duplicate), result
    metrics.count_submission("duplicate")
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
