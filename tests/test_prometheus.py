"""The alert rules and the dashboard, checked by real Prometheus (issue 22 §2).

* `promtool check rules` and `promtool check config` accept deploy/prometheus/;
  `promtool test rules` runs alerts_test.yml, where every alert fires on synthetic series
  (and no alert goes untested: the test below compares the two files).
* Every alert has a summary and a runbook annotation naming a section of
  docs/operations.md that exists.
* A real Prometheus, configured from deploy/prometheus/prometheus.yml with the alert rules,
  scrapes a running `logserver serve` (with a witness policy and a publication target), its
  `logserver witness` and `logserver monitor --metrics-listen`. After two submissions,
  every metric named by an alert rule or a dashboard query exists there, every dashboard
  query parses, every rule evaluates without error, and none fires (or is pending) on
  this healthy log. Then two alerts are made to fire from the processes' real metrics:
  a witness keeping evidence against the log, and the sequencer halted.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime

import aiohttp
import asyncpg
import pytest
import yaml
from cryptography.hazmat.primitives import serialization

import pg
from bundle_factory import BundleFactory
from logserver.formats import AddCheckpointRequest
from logserver.keys.log_key import LogKey, generate_log_key_pem
from logserver.witness import load_witness_config
from logserver.witness.cosigner import Cosigner
from prometheus_harness import ALERTS, ALERTS_TEST, CONFIG, DASHBOARD, REPO, Prometheus, promtool, scrape_config
from promql_names import grafana_expr, metric_names
from server_harness import ORIGIN, ServerProcess, free_port, write_config
from test_client_support import JSON, write_trust_policy
from witness_harness import WitnessProcess, write_witness_config

OPERATIONS = REPO / "docs" / "operations.md"


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expression) of every query of the dashboard, rows' nested panels included."""
    out = []

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                out.append((panel["title"], target["expr"]))
            walk(panel.get("panels", []))

    walk(json.loads(DASHBOARD.read_text())["panels"])
    return out


def used_metric_names() -> dict[str, set[str]]:
    """Each metric name used by an alert or a dashboard query -> where (alert or panel)."""
    used: dict[str, set[str]] = {}
    for rule in alert_rules():
        for name in metric_names(rule["expr"]):
            used.setdefault(name, set()).add(f"alert {rule['alert']}")
    for title, expr in dashboard_queries():
        for name in metric_names(grafana_expr(expr)):
            used.setdefault(name, set()).add(f"panel {title!r}")
    return used


# --- the files, with promtool ------------------------------------------------------------


def test_promtool_checks_the_rules_and_the_config():
    rules = promtool("check", "rules", str(ALERTS))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in rules.stdout, rules.stdout
    config = promtool("check", "config", str(CONFIG))
    assert config.returncode == 0, config.stdout + config.stderr


def test_promtool_unit_tests_of_every_alert_pass():
    result = promtool("test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def test_every_alert_has_a_firing_unit_test_and_a_quiet_one():
    cases = [case for group in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
             for case in group.get("alert_rule_test", [])]
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names)), f"alert names repeat: {names}"
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert set(names) - fires == set(), f"alerts with no unit test where they fire: {set(names) - fires}"
    assert set(names) - quiet == set(), f"alerts with no unit test where they stay quiet: {set(names) - quiet}"
    unknown = (fires | quiet) - set(names)
    assert unknown == set(), f"unit tests of alerts that do not exist: {unknown}"


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings: lower case, punctuation dropped, spaces to '-'."""
    return {re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            for m in re.finditer(r"^#+ (.+)$", markdown, re.MULTILINE)}


def test_every_alert_has_a_summary_and_a_runbook_section():
    anchors = _anchors(OPERATIONS.read_text())
    for rule in alert_rules():
        ann = rule.get("annotations", {})
        assert ann.get("summary"), f"{rule['alert']}: no summary annotation"
        runbook = ann.get("runbook", "")
        path, _, anchor = runbook.partition("#")
        assert path == "docs/operations.md", f"{rule['alert']}: runbook: want docs/operations.md#..., got {runbook!r}"
        assert anchor == rule["alert"].lower(), f"{rule['alert']}: runbook anchor: got {anchor!r}"
        assert anchor in anchors, f"{rule['alert']}: docs/operations.md has no section {anchor!r}"
        assert rule.get("labels", {}).get("severity") in ("critical", "warning"), rule


def test_metric_names_are_found_in_expressions():
    # The lexer the existence checks below rely on, on the constructs the files use.
    assert metric_names('sum by (job, instance) (rate(a_total{route="/v1/bundles", x=~"by|on"}[5m]))'
                        ' / on (job) group_left (target) b > bool 3 and c offset 5m') == {"a_total", "b", "c"}
    assert metric_names('histogram_quantile(0.99, sum without (le) (rate(h_bucket[1m:10s])))') == {"h_bucket"}
    assert metric_names('{__name__="by_name", job="x"} unless max(m) by (le)') == {"by_name", "m"}
    assert metric_names("3 * logserver_x + 30 > Inf") == {"logserver_x"}
    assert grafana_expr("rate(x[$__rate_interval])") == "rate(x[1m])"
    with pytest.raises(ValueError):
        grafana_expr('x{instance="$instance"}')


def test_the_dashboard_covers_what_an_operator_watches():
    dash = json.loads(DASHBOARD.read_text())
    titles = " | ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("submissions", "latency", "tree size", "checkpoint age", "cosign", "cache", "publication lag"):
        assert topic in titles, f"no panel about {topic!r}: {titles}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), ids
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["targets"] and p["datasource"]["uid"] == "${datasource}", p["title"]
    used = used_metric_names()
    assert all(name == "up" or name.startswith("logserver_") for name in used), sorted(used)


# --- a real Prometheus scraping a log, its witness and its monitor --------------------------


@dataclass
class Stack:
    prometheus: Prometheus
    log: ServerProcess
    witness: WitnessProcess
    log_key: LogKey
    database_url: str


@pytest.fixture(scope="module")
async def stack(pg_admin_url, database_url, tmp_path_factory):
    """The log (witness policy, a directory publication target), one witness, the monitor
    and Prometheus: each a process of its own, stopped by its pid at the end."""
    base = tmp_path_factory.mktemp("prometheus")
    pem = generate_log_key_pem()
    log_key = LogKey(ORIGIN, serialization.load_pem_private_key(pem, None))
    log_vkey = log_key.vkey
    witness_db = await pg.create_database(pg_admin_url, "t_prometheus_witness")
    witness_config = write_witness_config(base / "witness", "witness.test/w1", witness_db, [log_vkey])
    loaded = load_witness_config(witness_config, environ={})
    witness_vkey = Cosigner.load(loaded.keys, loaded.name, time.time).vkey
    witness = WitnessProcess(witness_config, free_port())
    log = monitor = prometheus = None
    try:
        await witness.start()
        policy = f"witness w1 {witness_vkey} {witness.url}\n"
        (base / "log").mkdir()
        (base / "log" / "witnesses.policy").write_text(policy + "quorum w1\n")
        extra = ('witness_policy = "witnesses.policy"\n\n[sequencer]\ncheckpoint_interval_s = 0.5\n\n'
                 '[[publication.targets]]\nname = "public"\ntype = "directory"\npath = "public"\n')
        log = ServerProcess(write_config(base / "log", database_url, extra=extra, key_pem=pem), database_url)
        await log.start()

        factory = BundleFactory(fleet_id="prometheus-fleet")
        async with aiohttp.ClientSession() as session:
            for sequence in (1, 2):
                async with session.post(log.url + "/v1/bundles", headers=JSON,
                                        data=factory.envelope_json(sequence=sequence)) as resp:
                    assert resp.status == 201, await resp.text()

        trust = write_trust_policy(base / "monitor", log_vkey, extra_policy=policy, quorum="w1")
        monitor_port = free_port()
        with open(base / "monitor.log", "ab") as monitor_log:  # the child keeps its own descriptor
            monitor = subprocess.Popen(
                [sys.executable, "-m", "logserver.cli", "monitor", "--log", log.url, "--policy", str(trust),
                 "--state", str(base / "monitor" / "state"), "--interval", "0.5",
                 "--metrics-listen", f"127.0.0.1:{monitor_port}"],
                stdout=monitor_log, stderr=subprocess.STDOUT, cwd=base)

        config = scrape_config({"logserver": [f"127.0.0.1:{log.port}"],
                                "logserver-witness": [f"127.0.0.1:{witness.port}"],
                                "logserver-monitor": [f"127.0.0.1:{monitor_port}"]})
        (base / "prom").mkdir()
        prometheus = Prometheus(base / "prom", config, free_port())
        await prometheus.start()
        yield Stack(prometheus, log, witness, log_key, database_url)
    finally:
        if prometheus is not None:
            prometheus.stop()
        if monitor is not None and monitor.poll() is None:
            monitor.terminate()
            try:
                monitor.wait(20)
            except subprocess.TimeoutExpired:
                monitor.kill()
                monitor.wait()
        if log is not None:
            await log.stop()
        witness.stop()
        await pg.drop_database(pg_admin_url, witness_db)


async def _missing_series(prom: Prometheus, session: aiohttp.ClientSession, names: set[str]) -> set[str]:
    missing = set()
    for name in sorted(names):
        status, body = await prom.api(session, "query", query=f'count({{__name__="{name}"}})')
        assert status == 200 and body["status"] == "success", (name, body)
        if not body["data"]["result"]:
            missing.add(name)
    return missing


async def _wait_for_series(prom: Prometheus, names: set[str], within_s: float = 60.0) -> set[str]:
    """Poll until every name has a series (or the time is up): what is still missing."""
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as session:
        while True:
            missing = await _missing_series(prom, session, names)
            if not missing or time.monotonic() > deadline:
                return missing
            await asyncio.sleep(0.5)


async def test_prometheus_scrapes_the_log_the_witness_and_the_monitor(stack):
    prom = stack.prometheus
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while True:
            _, body = await prom.api(session, "targets")
            active = body["data"]["activeTargets"]
            health = {t["labels"]["job"]: t["health"] for t in active}
            if len(active) == 3 and set(health.values()) == {"up"}:
                break
            assert time.monotonic() < deadline, f"targets not all up: {active}"
            await asyncio.sleep(0.5)
    assert health == {"logserver": "up", "logserver-witness": "up", "logserver-monitor": "up"}


async def test_every_series_of_the_alerts_and_the_dashboard_exists(stack):
    used = used_metric_names()
    missing = await _wait_for_series(stack.prometheus, set(used))
    assert not missing, "series named but not exported: " + "; ".join(
        f"{name} (by {', '.join(sorted(used[name]))})" for name in sorted(missing))


async def test_every_dashboard_query_parses_and_answers(stack):
    async with aiohttp.ClientSession() as session:
        for title, expr in dashboard_queries():
            status, body = await stack.prometheus.api(session, "query", query=grafana_expr(expr))
            assert status == 200 and body["status"] == "success", (title, expr, body)


async def test_the_rules_evaluate_cleanly_and_none_fires_on_a_healthy_log(stack):
    prom = stack.prometheus
    await _wait_for_series(prom, set(used_metric_names()))  # every series scraped at least once
    async with aiohttp.ClientSession() as session:
        # Rules are evaluated every second (scrape_config): wait for one evaluation after the
        # series exist, so that each rule has run on them.
        deadline = time.monotonic() + 30
        started = time.time()
        while True:
            _, body = await prom.api(session, "rules", type="alert")
            rules = [r for g in body["data"]["groups"] for r in g["rules"]]
            evaluated = [r for r in rules if r.get("lastEvaluation", "").startswith("2")
                         and _rfc3339(r["lastEvaluation"]) > started]
            if len(evaluated) == len(rules):
                break
            assert time.monotonic() < deadline, f"rules not evaluated: {rules}"
            await asyncio.sleep(0.5)
        assert sorted(r["name"] for r in rules) == sorted(r["alert"] for r in alert_rules())
        bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
        assert not bad, bad
        # Not even pending: on this log no rule's condition holds, whatever its `for:`.
        _, body = await prom.api(session, "alerts")
        assert body["data"]["alerts"] == [], body["data"]["alerts"]


def _rfc3339(text: str) -> float:
    """Seconds since the epoch of Prometheus's RFC 3339 timestamps (nanoseconds cut to micro)."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


async def test_the_state_gauges_say_what_the_healthy_log_is(stack):
    """The series added for the alerts carry the running log's state and configuration."""
    prom = stack.prometheus
    want = {
        "logserver_sequencer_halted": 0.0,           # integrity check passed
        "logserver_database_up": 1.0,                # SELECT 1 answered
        "logserver_checkpoint_interval_seconds": 0.5,  # [sequencer] checkpoint_interval_s
        "logserver_publication_max_lag_seconds": 60.0,  # the default publication.max_lag_s
        "logserver_cosigning_quorum_met": 1.0,       # the one witness cosigns
    }
    await _wait_for_series(prom, set(want) | {"logserver_witness_evidence_total", "logserver_tile_cache_bytes"})
    async with aiohttp.ClientSession() as session:
        for name, value in want.items():
            _, body = await prom.api(session, "query", query=name)
            got = [float(r["value"][1]) for r in body["data"]["result"]]
            assert got == [value], f"{name}: got {got}, want [{value}]"
        # The witness exports zero evidence of each kind for the log it follows.
        _, body = await prom.api(session, "query", query="logserver_witness_evidence_total")
        got = sorted((r["metric"]["origin"], r["metric"]["kind"], r["value"][1]) for r in body["data"]["result"])
        assert got == [(ORIGIN, "inconsistent_proof", "0"), (ORIGIN, "root_conflict", "0")], got
        # The tile cache holds the tiles of the two entries, within its bound.
        _, body = await prom.api(session, "query",
                                  query="logserver_tile_cache_bytes / logserver_tile_cache_limit_bytes")
        ratio = [float(r["value"][1]) for r in body["data"]["result"]]
        assert len(ratio) == 1 and 0 < ratio[0] <= 1, ratio


async def test_alerts_fire_from_the_real_metrics(stack):
    """Last in this module: it damages the log. Two alerts without `for:`, followed from
    the processes' own metrics to a firing alert with its rendered annotations: a witness
    keeping evidence (a checkpoint signed with the log's key, with another root at the
    size the witness cosigned), and the sequencer halted (a stored tile flipped, as by a
    disk error, then the pre-sign check)."""
    prom, log, witness = stack.prometheus, stack.log, stack.witness
    async with aiohttp.ClientSession() as session:
        async with session.get(witness.url + "/status") as resp:
            (state,) = [s for s in (await resp.json())["logs"] if s["origin"] == ORIGIN]
        size = state["tree_size"]
        forged = stack.log_key.sign_checkpoint(size, hashlib.sha256(b"another tree").digest(),
                                               int(time.time() * 1000))
        async with session.post(witness.url + "/add-checkpoint",
                                data=AddCheckpointRequest(size, (), forged).format().encode()) as resp:
            assert resp.status == 409, await resp.text()  # same size, other root: kept as evidence

        conn = await asyncpg.connect(stack.database_url)
        try:
            await conn.execute("SET session_replication_role = replica")  # the append-only triggers off
            status = await conn.execute("UPDATE tiles SET hashes = set_byte(hashes, 0, get_byte(hashes, 0) # 1) "
                                        "WHERE level = 0 AND idx = 0")
            assert status == "UPDATE 1", status
        finally:
            await conn.close()
        async with session.post(log.url + "/v1/bundles", headers=JSON,
                                data=BundleFactory(fleet_id="after-the-flip").envelope_json()) as resp:
            assert resp.status == 503, await resp.text()
            assert (await resp.json())["error"]["code"] == "integrity_check_failed"

        want = {
            "LogserverWitnessEvidence": (
                {"alertname": "LogserverWitnessEvidence", "severity": "critical", "job": "logserver-witness",
                 "instance": f"127.0.0.1:{witness.port}", "origin": ORIGIN, "kind": "root_conflict"},
                {"summary": f"witness 127.0.0.1:{witness.port} holds root_conflict evidence against log {ORIGIN}",
                 "runbook": "docs/operations.md#logserverwitnessevidence"}),
            "LogserverSequencerHalted": (
                {"alertname": "LogserverSequencerHalted", "severity": "critical", "job": "logserver",
                 "instance": f"127.0.0.1:{log.port}"},
                {"summary": f"logserver 127.0.0.1:{log.port} halted its sequencer: integrity check failed",
                 "runbook": "docs/operations.md#logserversequencerhalted"}),
        }
        deadline = time.monotonic() + 60
        while True:
            _, body = await prom.api(session, "alerts")
            firing = {a["labels"]["alertname"]: (a["labels"], a["annotations"])
                      for a in body["data"]["alerts"] if a["state"] == "firing"}
            if set(want) <= set(firing):
                break
            assert time.monotonic() < deadline, f"firing: {firing}, want {sorted(want)}"
            await asyncio.sleep(0.5)
        for name, expected in want.items():
            assert firing[name] == expected, (name, firing[name])
