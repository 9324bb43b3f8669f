"""Prometheus metrics. Each app owns a registry, so several apps can live in one process (tests)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry or CollectorRegistry()
        self.submissions = Counter(
            "logserver_submissions_total", "Bundle submissions by outcome.", ["outcome"], registry=r)
        self.equivocations = Counter(
            "logserver_equivocations_total", "Submissions refused because the fleet/sequence was logged "
            "with a different payload.", registry=r)
        self.tree_size = Gauge("logserver_tree_size", "Size of the latest signed checkpoint.", registry=r)
        self.checkpoint_timestamp = Gauge(
            "logserver_checkpoint_timestamp_seconds", "Signing time of the latest checkpoint.", registry=r)
        self.checkpoint_age = Gauge(
            "logserver_checkpoint_age_seconds", "Age of the latest checkpoint this process knows.", registry=r)
        self.batch_size = Histogram(
            "logserver_batch_size", "Entries appended per sequencer batch.", buckets=_BATCH_BUCKETS, registry=r)
        self.integration_seconds = Histogram(
            "logserver_integration_seconds", "Time to integrate and commit one batch.",
            buckets=_LATENCY_BUCKETS, registry=r)
        self._http_children: dict[tuple[str, str, int], object] = {}
        self._submission_children: dict[str, object] = {}
        self.http_seconds = Histogram(
            "logserver_http_request_seconds", "HTTP request latency per route.", ["route", "method", "status"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.verify_seconds = Histogram(
            "logserver_signature_verification_seconds", "Time to check one submission (its envelope's "
            "signatures and payload), as the request sees it: including the wait for a frame and an admission "
            "process and the round trip to it (verify_processes > 0).",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.tile_file_warm = Gauge(
            "logserver_tile_file_warm", "1 once the background fill of the expanded-tile file "
            "(data_dir/cache) finished after start-up; 0 while it runs or if it failed (see the log).", registry=r)
        self.pending = Gauge("logserver_pending_submissions", "Submissions waiting for the sequencer.", registry=r)
        self.pool_size = Gauge("logserver_db_pool_connections", "Open database connections.", registry=r)
        self.pool_idle = Gauge("logserver_db_pool_idle_connections", "Idle database connections.", registry=r)
        self.pool_max = Gauge("logserver_db_pool_max_connections", "Pool size limit.", registry=r)
        self.worker = Gauge("logserver_worker_info", "This process's place under `serve --workers` "
                            "(index, role: sequencer or forwarder); absent for a single process.",
                            ["index", "role"], registry=r)

    def count_submission(self, outcome: str) -> None:
        """submissions.labels(outcome).inc(), the child looked up once per outcome.
        Outcomes are this code's own codes (a bounded set), never client text."""
        child = self._submission_children.get(outcome)
        if child is None:
            child = self._submission_children[outcome] = self.submissions.labels(outcome)
        child.inc()

    def observe_http(self, route: str, method: str, status: int, seconds: float) -> None:
        """http_seconds.labels(route, method, status).observe(seconds), with the labelled
        child looked up once per combination (labels() costs more than observe())."""
        if method not in _METHODS:  # any token is a valid method: keep the label set bounded
            method = "other"
        key = (route, method, status)
        child = self._http_children.get(key)
        if child is None:
            child = self._http_children[key] = self.http_seconds.labels(route, method, str(status))
        child.observe(seconds)
