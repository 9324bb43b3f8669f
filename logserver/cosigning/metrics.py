"""Prometheus metrics of cosigning, registered in the log's own registry."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class CosigningMetrics:
    def __init__(self, registry: CollectorRegistry):
        r = registry
        self.request_seconds = Histogram(
            "logserver_cosigning_request_seconds", "Time for one witness to cosign a checkpoint "
            "(409 follow-ups included), by witness and outcome.", ["witness", "outcome"], buckets=_BUCKETS,
            registry=r)
        self.failures = Counter(
            "logserver_cosigning_failures_total", "Cosignature requests that produced no cosignature, "
            "by witness and reason.", ["witness", "reason"], registry=r)
        self.cosigned_size = Gauge(
            "logserver_cosigning_witness_tree_size", "Largest tree size each witness has cosigned.",
            ["witness"], registry=r)
        self.quorum_met = Gauge(
            "logserver_cosigning_quorum_met", "1 if the latest cosigning round met the policy quorum, else 0.",
            registry=r)
        self.published_size = Gauge(
            "logserver_published_tree_size", "Size of the latest published (cosigned) checkpoint.", registry=r)
        self.rounds = Counter(
            "logserver_cosigning_rounds_total", "Cosigning rounds by result (published, quorum_missing, "
            "superseded).", ["result"], registry=r)
