"""The aiohttp application factory.

Start-up (cleanup_ctx, in order): open the database (embedded or configured),
open the log in it (storage.open_log: migrations, the log identity, the first
checkpoint on a new log), refuse a stale or corrupted database, then start the sequencer and the
background tasks. Shutdown runs the same steps backwards.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..api import entries, heads, ops, status, submit, tiles
from ..api.compression import Gzipper
from ..api.keys import (
    ADMISSION,
    AUTHORITIES,
    CLOCK,
    COMMIT_DEADLINES,
    CONFIG,
    GZIPPER,
    HEADS,
    LOG_KEY,
    METRICS,
    PUBLISHER,
    READER,
    RESPONSE_BUDGET,
    SEQUENCER,
    STATIC,
    STORE,
    WITNESS_POLICY,
    WORKER,
)
from ..api.metrics import Metrics
from ..api.published import load_policy, start_publisher
from ..bundle import AuthoritySet, load_authority_key_pem
from ..config import Config, ConfigError
from ..cosigning import WitnessedPublisher
from ..http.budget import DEFAULT_RESPONSE_BUDGET, ByteBudget
from ..http.errors import exception_response, make_expect_handler, version_error
from ..integrity.checkpoint_file import SavedCheckpoint, save_checkpoint_file
from ..integrity.checks import check_not_stale, check_tiles
from ..keys.log_key import LogKey
from ..publish import LogKeyVerifiers, StaticPublisher, TargetPublisher
from ..publish.build import make_target
from ..publish.metrics import PublicationMetrics
from ..read.heads_reader import HeadsReader
from ..read.tile_file import FILE_NAME as TILE_FILE_NAME
from ..read.tile_file import TileFile, log_binding
from ..read.tree_reader import TreeReader
from ..storage import DATABASE_UNAVAILABLE, CheckpointRow, Store, create_pool, open_log, resolve_database_url
from ..storage.publication import PublicationStore
from ..workers.forwarding import RemoteSequencer, WorkerRole, serve_forwarding
from ..write.admission import AdmissionPool
from ..write.outcomes import Appended
from ..write.sequencer import Sequencer, SequencerStats

log = logging.getLogger(__name__)

LATEST_POLL_S = 0.5  # how often a process re-reads the latest checkpoint others may have signed


def load_authorities(config: Config) -> AuthoritySet:
    keys = []
    for i, a in enumerate(config.authorities):
        for path in a.keys:
            try:
                keys.append(load_authority_key_pem(path.read_bytes(), a.name, a.role))
            except (ValueError, OSError) as e:
                raise ConfigError(f"authorities[{i}].keys: {path}: {e}") from None
    try:
        return AuthoritySet(keys)
    except ValueError as e:
        raise ConfigError(f"authorities: {e}") from None


def create_app(
    config: Config,
    *,
    clock: Callable[[], float] = time.time,
    log_key: LogKey | None = None,
    worker: WorkerRole | None = None,
) -> web.Application:
    """Build the application. Raises ConfigError for a bad key or authority file.

    `worker` is this process's place under `serve --workers N`: worker 0 runs the
    sequencer and accepts the others' verified entries (logserver/workers/forwarding.py).
    """
    log_key = log_key or LogKey.from_config(config)
    if log_key.origin != config.origin:
        raise ConfigError(f"log_key: key is for origin {log_key.origin!r}, config says {config.origin!r}")
    metrics = Metrics()
    route_names: dict[Callable, str] = {}
    app = web.Application(
        client_max_size=config.limits.max_body_bytes,
        middlewares=[_api_middleware(metrics, config.limits.retry_after_s, route_names)],
    )
    app[CONFIG] = config
    app[LOG_KEY] = log_key
    app[AUTHORITIES] = load_authorities(config)
    app[METRICS] = metrics
    metrics.checkpoint_interval.set(config.sequencer.checkpoint_interval_s)
    app[CLOCK] = clock
    app[WITNESS_POLICY] = load_policy(config, log_key)
    app[WORKER] = worker
    app[STATIC] = None
    app[COMMIT_DEADLINES] = submit.commit_deadlines(config.sequencer.commit_timeout_s)
    app[GZIPPER] = Gzipper()
    app[RESPONSE_BUDGET] = ByteBudget(DEFAULT_RESPONSE_BUDGET, "responses")
    app[status.STATUS_CACHE] = status.StatusCache()
    app.on_cleanup.append(_close_deadlines)
    if worker is not None:
        app[METRICS].worker.labels(str(worker.index), worker.role).set(1)
    app.cleanup_ctx.append(_admission_ctx)
    app.cleanup_ctx.append(_storage_ctx)
    app.cleanup_ctx.append(_sequencer_ctx)

    r = app.router
    r.add_post("/v1/bundles", submit.post_bundle, expect_handler=make_expect_handler(config.limits.max_body_bytes))
    r.add_get("/v1/log", entries.get_log)
    r.add_get("/v1/proof/inclusion", entries.get_inclusion_proof)
    r.add_get("/v1/proof/consistency", entries.get_consistency_proof)
    r.add_get("/v1/entries", entries.get_entries)
    r.add_get("/v1/bundles/{leaf_hash}", entries.get_bundle)
    r.add_get("/v1/fleets/{fleet_id}", entries.get_fleet)
    r.add_get("/v1/fleets/{fleet_id}/head", heads.get_fleet_head)
    r.add_get("/checkpoint", tiles.get_checkpoint)
    # [\s\S], not ".": a percent-encoded newline in a tile path must reach the tile
    # parser (400 bad_tile_path), not fall through to the unrouted 404.
    r.add_get(r"/tile/{path:[\s\S]+}", tiles.get_tile)
    r.add_get("/metrics", ops.get_metrics)
    r.add_get("/healthz", ops.get_healthz)
    r.add_get("/readyz", ops.get_readyz)
    r.add_get("/openapi.yaml", ops.get_openapi)
    # The status page for people (docs/operations.md, "Status page").
    r.add_get("/", status.get_index)
    r.add_get("/status.js", status.get_script)
    r.add_get("/status.css", status.get_style)
    r.add_get("/v1/status", status.get_status)
    route_names.update(_route_names(r))
    return app


def _api_middleware(metrics: Metrics, retry_after_s: int, route_names: dict[Callable, str]) -> Middleware:
    """The one middleware: every error in the one JSON shape (errors.py), and the
    request's latency by route, method and status.

    It runs on every request, so what it needs is bound here once: the metrics, and
    the route of each handler (filled in by create_app once the routes are added).
    `handler` is the route's own handler (this is the only middleware, so the
    innermost), or aiohttp's stand-in that raises 404/405 ("unmatched")."""
    observe = metrics.observe_http

    @web.middleware
    async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 503
        try:
            try:
                refused = version_error(request)
                if refused is not None:
                    status = 400
                    return refused
                resp = await handler(request)
                status = resp.status
            except Exception as e:  # not CancelledError (a BaseException): the client left
                resp = exception_response(request, e, retry_after_s)
                status = resp.status
            return resp
        except web.HTTPException as e:  # below 400, re-raised by exception_response
            status = e.status
            raise
        finally:
            observe(route_names.get(handler, "unmatched"), request.method, status, time.perf_counter() - started)

    return api_middleware


def _route_names(router: web.UrlDispatcher) -> dict[Callable, str]:
    """Each route handler's resource (its canonical path, the metrics' route label).
    A handler serves one resource: the label must not depend on which one matched."""
    names: dict[Callable, str] = {}
    for resource in router.resources():
        for route in resource:
            if names.setdefault(route.handler, resource.canonical) != resource.canonical:
                raise AssertionError(f"{route.handler!r} serves {names[route.handler]} and {resource.canonical}")
    return names


async def _close_deadlines(app: web.Application) -> None:
    app[COMMIT_DEADLINES].close()


async def _admission_ctx(app: web.Application) -> AsyncIterator[None]:
    app[ADMISSION] = pool = AdmissionPool(app[AUTHORITIES], app[CONFIG].verify_processes)
    await pool.start()
    try:
        yield
    finally:
        await pool.close()


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    config, key = app[CONFIG], app[LOG_KEY]
    url, embedded = await asyncio.to_thread(resolve_database_url, config.database_url, config.data_dir)
    log.info("database: %s", "embedded PostgreSQL in " + str(config.data_dir) if embedded else "configured server")
    pool = await create_pool(url)
    reader = None
    try:
        store = await open_log(pool, key, clock=app[CLOCK])
        reader = TreeReader(store)
        await check_not_stale(reader, config.checkpoint_file, key.verifiers())
        latest = await check_tiles(reader)
        _save_checkpoint(config, latest)
        # Only after the start-up checks, which must read the database itself.
        if config.tile_file:
            reader.tile_file = await _open_tile_file(config, store, key)
        app[STORE] = store
        app[READER] = reader
        app[HEADS] = HeadsReader(store, reader)  # built on first use (a fleet-head proof)
        yield
    finally:
        if reader is not None and reader.tile_file is not None:
            reader.tile_file.close()
        await pool.close()


async def _warm_tile_file(reader: TreeReader, metrics: Metrics) -> None:
    """The background fill of the tile file. A failure is logged, never fatal (a
    cache: the proofs fill it lazily instead); the gauge then stays 0."""
    metrics.tile_file_warm.set(0)
    try:
        written = await reader.warm_tile_file()
    except DATABASE_UNAVAILABLE as e:
        log.warning("tile cache file not warmed (the database is unavailable): %r", e)
        return
    except Exception:
        log.error("tile cache file not warmed", exc_info=True)
        return
    if written:
        log.info("tile cache file: %d expanded tiles written", written)
    metrics.tile_file_warm.set(1)


async def _open_tile_file(config: Config, store: Store, key: LogKey) -> TileFile:
    """The expanded-tile cache file in the data directory, bound to this log: its
    origin, key and first checkpoint (which differs between logs started afresh)."""
    first = await store.checkpoints(0, 1)
    binding = log_binding(config.origin, key.public_key_bytes, first[0].note)
    return await asyncio.to_thread(TileFile, config.data_dir / TILE_FILE_NAME, binding)


def _save_checkpoint(config: Config, cp: CheckpointRow) -> None:
    save_checkpoint_file(config.checkpoint_file, SavedCheckpoint(cp.tree_size, cp.signed_at_ms, cp.note))


async def _sequencer_ctx(app: web.Application) -> AsyncIterator[None]:
    config, metrics, reader = app[CONFIG], app[METRICS], app[READER]
    s = config.sequencer
    worker = app[WORKER]
    if worker is not None and not worker.is_sequencer:
        async for _ in _forwarder_ctx(app, worker):
            yield
        return
    saver = _CheckpointSaver(config)
    publisher = await start_publisher(app)
    static = await _start_static(app)

    def on_commit(cp: CheckpointRow, written: dict) -> None:
        reader.remember_tiles(written)
        reader.set_latest(cp)
        saver.offer(cp)
        publisher.offer(cp)

    def on_batch(n: int, seconds: float) -> None:
        metrics.batch_size.observe(n)
        metrics.integration_seconds.observe(seconds)

    sequencer = Sequencer(
        app[STORE], app[LOG_KEY].sign_checkpoint,
        max_batch_size=s.max_batch_size, max_batch_delay_ms=s.max_batch_delay_ms, max_pending=s.max_pending,
        checkpoint_interval_s=s.checkpoint_interval_s, lock_timeout_ms=s.lock_timeout_ms,
        stall_timeout_ms=s.stall_timeout_ms,
        clock=app[CLOCK], on_commit=on_commit, publish_static=static.wake if static else None,
        stats=SequencerStats(on_batch=on_batch, on_equivocation=lambda *a: metrics.equivocations.inc()),
        arriving=lambda: app[ADMISSION].pending,
    )
    app[SEQUENCER] = sequencer
    tasks = [
        asyncio.create_task(sequencer.run(), name="sequencer"),
        asyncio.create_task(saver.run(), name="checkpoint-file"),
        asyncio.create_task(_poll_latest(reader), name="latest-poll"),
        asyncio.create_task(publisher.run(), name="publisher"),
        asyncio.create_task(_warm_tile_file(reader, metrics), name="tile-file-warm"),
    ]
    if static is not None:
        tasks.append(asyncio.create_task(static.run(), name="static-publisher"))
    forwarding = await serve_forwarding(sequencer, worker.socket, worker.token) if worker is not None else None
    yield
    if forwarding is not None:
        forwarding.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await saver.flush()
    if static is not None:
        await static.close()


async def _start_static(app: web.Application) -> StaticPublisher | None:
    """The static publisher of the process that sequences (step 9): every configured
    target checked (a TargetError, one line, stops start-up) and its progress loaded.
    It publishes what the routes serve: the witness-cosigned checkpoint under a policy."""
    config, reader, key = app[CONFIG], app[READER], app[LOG_KEY]
    if not config.publication.targets:
        return None
    publisher = app[PUBLISHER]
    if isinstance(publisher, WitnessedPublisher):
        witnessed = publisher

        def source() -> CheckpointRow | None:
            return witnessed.published
    else:
        def source() -> CheckpointRow | None:
            return reader.latest
    metrics = PublicationMetrics(app[METRICS].registry)
    metrics.max_lag_seconds.set(config.publication.max_lag_s)
    verifiers = LogKeyVerifiers.of(key)
    progress = PublicationStore(app[STORE].pool)
    targets = [make_target(t) for t in config.publication.targets]
    static = StaticPublisher([
        TargetPublisher(t, reader=reader, progress=progress, source=source, verifiers=verifiers, metrics=metrics,
                        clock=app[CLOCK], min_interval_s=config.publication.min_interval_ms / 1000,
                        heads=app[HEADS] if config.publication.fleet_heads_interval_s > 0 else None,
                        heads_interval_s=config.publication.fleet_heads_interval_s)
        for t in targets])
    try:
        for t in targets:
            await t.check()
            log.info("publishing the static tree to target %r: %s", t.name, t.describe())
        await static.load()
    except BaseException:
        await static.close()
        raise
    if isinstance(publisher, WitnessedPublisher):
        publisher.listeners.append(static.wake)
    app[STATIC] = static
    return static


async def _forwarder_ctx(app: web.Application, worker: WorkerRole) -> AsyncIterator[None]:
    """A worker other than 0: verified entries go to worker 0's sequencer over its socket."""
    reader = app[READER]
    publisher = await start_publisher(app)  # serves (and polls) what the sequencer worker publishes

    def on_result(result: object) -> None:
        if isinstance(result, Appended):
            reader.set_latest(result.checkpoint)

    remote = RemoteSequencer(worker.socket, worker.token, max_pending=app[CONFIG].sequencer.max_pending,
                             on_result=on_result)
    app[SEQUENCER] = remote  # the same interface for the routes
    tasks = [
        asyncio.create_task(remote.run(), name="forwarding"),
        asyncio.create_task(_poll_latest(reader), name="latest-poll"),
        asyncio.create_task(publisher.run(), name="publisher"),
    ]
    yield
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _poll_latest(reader: TreeReader) -> None:
    """Pick up checkpoints signed by other processes sharing the database."""
    while True:
        await asyncio.sleep(LATEST_POLL_S)
        try:
            await reader.refresh_latest()
        except Exception as e:  # an outage: keep serving what we have
            log.debug("latest checkpoint poll failed: %r", e)


class _CheckpointSaver:
    """Writes the newest committed checkpoint to the data directory, off the event loop.

    Only ever after the commit (a file ahead of the database would wrongly look
    like a stale restore); coalesces bursts so at most one write is in flight.
    """

    def __init__(self, config: Config):
        self.config = config
        self._newest: CheckpointRow | None = None
        self._event = asyncio.Event()

    def offer(self, cp: CheckpointRow) -> None:
        # By size and time, not id: an idle re-sign keeps its size's row id.
        newest = self._newest
        if newest is None or (cp.tree_size, cp.signed_at_ms) > (newest.tree_size, newest.signed_at_ms):
            self._newest = cp
            self._event.set()

    async def run(self) -> None:
        while True:
            await self._event.wait()
            self._event.clear()
            await self.flush()

    async def flush(self) -> None:
        cp = self._newest
        if cp is not None:
            try:
                await asyncio.to_thread(_save_checkpoint, self.config, cp)
            except OSError as e:
                log.error("could not save the latest checkpoint to %s: %s", self.config.checkpoint_file, e)
