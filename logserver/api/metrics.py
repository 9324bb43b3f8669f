"""Prometheus metrics. Each app owns a registry, so several apps can live in one process (tests)."""
from __future__ import annotations

from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

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
        self._submission_children: dict[str, Counter] = {}
        self.http_seconds = RequestLatency(
            "logserver_http_request_seconds", "HTTP request latency per route.", _LATENCY_BUCKETS, registry=r)
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
        # Set when /metrics is scraped (api/ops.py): the states an operator must act on
        # (deploy/prometheus/alerts.yml, docs/operations.md "Alerts").
        self.sequencer_halted = Gauge(
            "logserver_sequencer_halted", "1 while the sequencer refuses to sign because stored tiles did not "
            "reproduce the last signed root (integrity check failed; /readyz says halted), else 0.", registry=r)
        self.database_up = Gauge(
            "logserver_database_up", "1 if the database answered SELECT 1 within DATABASE_PROBE_TIMEOUT_S when "
            "/metrics was scraped, else 0.", registry=r)
        self.checkpoint_interval = Gauge(
            "logserver_checkpoint_interval_seconds", "The configured bound between checkpoints "
            "(sequencer.checkpoint_interval_s): one is signed at least this often, even when idle.", registry=r)
        self.tile_cache_bytes = Gauge(
            "logserver_tile_cache_bytes", "Bytes held by the in-memory hash tile cache (tiles and expansions).",
            registry=r)
        self.tile_cache_limit = Gauge(
            "logserver_tile_cache_limit_bytes", "Bound of the in-memory hash tile cache.", registry=r)
        self.bundle_cache_bytes = Gauge(
            "logserver_entry_bundle_cache_bytes", "Bytes held by the in-memory cache of full entry bundles.",
            registry=r)
        self.bundle_cache_limit = Gauge(
            "logserver_entry_bundle_cache_limit_bytes", "Bound of the in-memory entry bundle cache.", registry=r)
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
        """The request's latency in logserver_http_request_seconds{route, method, status}."""
        if method not in _METHODS:  # any token is a valid method: keep the label set bounded
            method = "other"
        self.http_seconds.observe((route, method, status), seconds)


class RequestLatency:
    """A histogram labelled (route, method, status), kept in plain lists and exported when
    scraped (a prometheus_client custom collector: same series and exposition as its
    Histogram). It runs on every request: observe() is a dict lookup, a bisect and two
    additions, about a fifth of Histogram.labels(...).observe(), which takes a lock and
    walks the buckets. Not thread-safe: only the event loop observes and collects."""

    LABELS = ("route", "method", "status")

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...], registry: CollectorRegistry):
        self.name, self.documentation = name, documentation
        self._bounds = tuple(float(b) for b in buckets)
        self._le = [floatToGoString(b) for b in self._bounds] + ["+Inf"]
        # labels -> [count per bucket (not cumulative; the last is above every bound), sum]
        self._series: dict[tuple[str, str, int], list] = {}
        registry.register(self)

    def observe(self, labels: tuple[str, str, int], seconds: float) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = [[0] * (len(self._bounds) + 1), 0.0]
        # The first bucket whose bound is >= seconds, as Histogram (le is inclusive).
        series[0][bisect_left(self._bounds, seconds)] += 1
        series[1] += seconds

    def describe(self):
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.LABELS)]

    def collect(self):
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.LABELS)
        for (route, method, status), (counts, total) in list(self._series.items()):
            cumulative, running = [], 0
            for le, count in zip(self._le, counts, strict=True):  # one count per bound, and +Inf
                running += count
                cumulative.append((le, running))
            family.add_metric([route, method, str(status)], cumulative, total)
        yield family
