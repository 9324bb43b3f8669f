"""Prometheus metrics of the monitor, on a registry of its own, and the HTTP endpoint."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from .alerts import ALL_KINDS


class MonitorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.entries_verified = Counter(
            "logserver_monitor_entries_verified", "Entries whose signatures and tree position were verified",
            registry=r)
        self.alerts = Counter("logserver_monitor_alerts", "Alerts raised, by kind", ["kind"], registry=r)
        for kind in ALL_KINDS:
            self.alerts.labels(kind)  # export zeroes, so rate() works from the start
        self.errors = Counter("logserver_monitor_errors", "Polls that failed to reach the log or read it", registry=r)
        self.tree_size = Gauge("logserver_monitor_tree_size", "Size of the latest verified checkpoint", registry=r)
        self.verified_size = Gauge("logserver_monitor_verified_size", "Entries verified so far", registry=r)
        self.lag_entries = Gauge("logserver_monitor_lag_entries", "Entries in the log not yet verified", registry=r)
        self.checkpoint_age = Gauge(
            "logserver_monitor_checkpoint_age_seconds", "Age of the log's latest checkpoint (its signed time)",
            registry=r)
        self.witnesses = Gauge(
            "logserver_monitor_checkpoint_witnesses", "Verified witness cosignatures on the latest checkpoint",
            registry=r)
        self.checkpoints_seen = Counter(
            "logserver_monitor_checkpoints_seen", "Distinct checkpoints served by the log and verified", registry=r)
        self.checkpoints_quorum = Counter(
            "logserver_monitor_checkpoints_quorum", "Of those, checkpoints whose cosignatures met the quorum",
            registry=r)
        self.checkpoints_cosigned = Counter(
            "logserver_monitor_checkpoints_cosigned", "Of those, checkpoints each witness cosigned", ["witness"],
            registry=r)
        self.witness_coverage = Gauge(
            "logserver_monitor_witness_coverage", "Fraction of the checkpoints seen that each witness cosigned",
            ["witness"], registry=r)

        # Fleet heads (monitor/heads.py): alert rules on these, or on
        # logserver_monitor_alerts_total{kind=~"heads_mismatch|heads_missing"}.
        self.heads_checked = Counter(
            "logserver_monitor_heads_leaves_checked",
            "HEADS leaves compared with the heads table folded from the bundles, by result (match, mismatch)",
            ["result"], registry=r)
        for result in ("match", "mismatch"):
            self.heads_checked.labels(result)
        self.heads_fleets = Gauge(
            "logserver_monitor_heads_fleets", "Rows (fleets) of the heads table folded from the bundles", registry=r)
        self.heads_check = Gauge(
            "logserver_monitor_heads_check_enabled",
            "1 if the monitor folds the heads table and checks HEADS leaves; 0 with a state from before the fold",
            registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def serve_metrics(metrics: MonitorMetrics, host: str, port: int) -> web.AppRunner:
    """Serve GET /metrics on host:port; returns the runner (call `cleanup()` to stop)."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
