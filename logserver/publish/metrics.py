"""Static publication metrics (docs/deployment.md; alerts: deploy/prometheus/alerts.yml)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class PublicationMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.published_size = Gauge(
            "logserver_publication_tree_size", "Tree size of the checkpoint published on the target",
            ["target"], registry=registry)
        self.lag_entries = Gauge(
            "logserver_publication_lag_entries", "Entries the log serves that the target's checkpoint lacks",
            ["target"], registry=registry)
        self.lag_seconds = Gauge(
            "logserver_publication_lag_seconds",
            "Seconds since the oldest checkpoint not yet on the target was seen (0: up to date)",
            ["target"], registry=registry)
        self.objects = Counter(
            "logserver_publication_objects_total",
            "Tiles and entry bundles written to the target (outcome: created, or existed with the same bytes)",
            ["target", "outcome"], registry=registry)
        self.fleet_heads = Counter(
            "logserver_publication_fleet_heads_total",
            "Fleet-head proofs written to the target (docs/fleet-heads.md, \"Static publication\")",
            ["target"], registry=registry)
        self.checkpoints = Counter(
            "logserver_publication_checkpoints_total",
            "Checkpoint publications (outcome: published, current: the target had it or a newer one, "
            "lost_race: another publisher changed it first, then retried)",
            ["target", "outcome"], registry=registry)
        self.failures = Counter(
            "logserver_publication_failures_total", "Publication passes that failed (target or database down)",
            ["target"], registry=registry)
        self.conflicts = Counter(
            "logserver_publication_conflicts_total",
            "Objects found on the target with other bytes than the log's (publishing to it halts)",
            ["target"], registry=registry)
        self.halted = Gauge(
            "logserver_publication_halted", "1 while publishing to the target is halted by a conflict",
            ["target"], registry=registry)
        self.max_lag_seconds = Gauge(
            "logserver_publication_max_lag_seconds",
            "The configured bound publication.max_lag_s: a target further behind makes /readyz answer 503",
            registry=registry)
        self.pass_seconds = Histogram(
            "logserver_publication_pass_seconds", "Time to publish one checkpoint with its objects",
            ["target"], registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
