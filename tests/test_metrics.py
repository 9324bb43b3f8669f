"""The request-latency histogram (api.metrics.RequestLatency) against prometheus_client's own.

RequestLatency replaces Histogram on the per-request path for speed; a scrape must
not be able to tell them apart (apart from Histogram's _created series)."""
from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from logserver.api.metrics import _LATENCY_BUCKETS, Metrics, RequestLatency

NAME, HELP = "logserver_http_request_seconds", "HTTP request latency per route."


def test_the_exposition_equals_prometheus_clients_histogram():
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    histogram = Histogram(NAME, HELP, ["route", "method", "status"], buckets=_LATENCY_BUCKETS, registry=theirs)
    latency = RequestLatency(NAME, HELP, _LATENCY_BUCKETS, registry=ours)
    rng = random.Random(7)
    labels = [("/v1/bundles", "POST", 201), ("/tile/{path}", "GET", 200), ("/v1/log", "GET", 503)]
    # Every bound itself (le is inclusive), zero, values between and beyond the buckets.
    values = [*_LATENCY_BUCKETS, 0.0, 1e-9, 11.0, 1e6] + [rng.expovariate(200) for _ in range(3000)]
    for value in values:
        route, method, status = rng.choice(labels)
        histogram.labels(route, method, str(status)).observe(value)
        latency.observe((route, method, status), value)
    want = [line for line in generate_latest(theirs).decode().splitlines() if "_created" not in line]
    got = generate_latest(ours).decode().splitlines()
    assert got == want
    assert len(got) == 2 + len(labels) * (len(_LATENCY_BUCKETS) + 1 + 2)


def test_metrics_count_requests_by_route_method_and_status():
    m = Metrics()
    m.observe_http("/checkpoint", "GET", 200, 0.002)
    m.observe_http("/checkpoint", "GET", 200, 0.7)
    m.observe_http("/checkpoint", "BREW", 405, 0.001)  # an unknown method is counted as "other"
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(m.registry).decode())}
    samples = {(s.name, s.labels.get("method"), s.labels.get("le")): s.value
               for s in families[NAME].samples if s.labels.get("route") == "/checkpoint"}
    assert samples[(NAME + "_count", "GET", None)] == 2
    assert samples[(NAME + "_sum", "GET", None)] == 0.702
    assert samples[(NAME + "_bucket", "GET", "0.0025")] == 1
    assert samples[(NAME + "_bucket", "GET", "1.0")] == 2
    assert samples[(NAME + "_count", "other", None)] == 1
