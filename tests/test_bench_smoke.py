"""The benchmark suite keeps working: its tiniest run end to end, and the result files'
structure. Nothing here times anything or asserts on speed (benchmarks measure; tests don't)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

ROOT = Path(__file__).resolve().parent.parent
LOAD_FIELDS = {"tool", "connections", "duration_s", "requests", "ok", "statuses", "rps", "ok_rps",
               "latency_ms", "socket_errors", "ran_out_of_requests", "loadgen_cpu_cores"}


def _check_load(result: dict, *, server: bool = True) -> None:
    assert result.keys() >= LOAD_FIELDS, result
    assert result["requests"] > 0, result
    assert result["ok"] == sum(v for k, v in result["statuses"].items() if k.startswith("2"))
    assert set(result["latency_ms"]) == {"mean", "p50", "p90", "p99", "max"}
    assert 0 <= result["latency_ms"]["p50"] <= result["latency_ms"]["p99"] <= result["latency_ms"]["max"]
    if server:
        assert result["server_cpu_cores"] >= 0


async def _drop_bench_databases(admin_url: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        for name in await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'bench\\_%'"):
            await conn.execute(f'DROP DATABASE "{name["datname"]}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def tiny_run(pg_admin_url, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-results")
    data = tmp_path_factory.mktemp("bench-data")
    env = dict(os.environ, BENCH_DATABASE_URL=pg_admin_url)
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--loadgen", "python", "--data-dir", str(data), "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    await _drop_bench_databases(pg_admin_url)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text()), proc.stdout


def test_tiny_run_writes_json_markdown_and_plots(tiny_run):
    out, results, _ = tiny_run
    meta = results["meta"]
    assert meta["mode"] == "tiny" and meta["loadgen"] == "python"
    machine = meta["machine"]
    for key in ("cpu_model", "cpus_usable", "load_average", "python", "postgresql", "memory_mb"):
        assert machine[key], key
    assert len(machine["load_average"]) == 3 and len(meta["load_before"]) == 3
    md = (out / "results.md").read_text()
    for heading in ("## Targets (issue 6)", "## 1. Submissions", "## 2. serve --workers N", "## 3. Reads",
                    "## 5. Merkle core vs pymerkle", "## 6. Static publication", "## 7. Fleet heads"):
        assert heading in md, heading
    assert results["plots"], "matplotlib is in the bench extra: plots are expected"
    for name in results["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"]({name})" in md


def test_tiny_run_submissions_compare_server_and_ceiling(tiny_run):
    _, results, _ = tiny_run
    subs = results["submissions"]
    assert {r["algorithm"] for r in subs} == {"ed25519", "ecdsa-p256"}
    for r in subs:
        _check_load(r["server"])
        _check_load(r["ceiling"])
        # Real submissions were appended (201), and the ceiling verified real signatures (201).
        assert r["server"]["statuses"].get("201", 0) > 0, r["server"]
        assert r["ceiling"]["statuses"].get("201", 0) > 0, r["ceiling"]
        assert r["ratio"] == pytest.approx(r["server"]["ok_rps"] / r["ceiling"]["ok_rps"], rel=1e-2)
    assert {lat["algorithm"] for lat in results["latency"]} == {"ed25519", "ecdsa-p256"}
    for lat in results["latency"]:
        _check_load(lat["result"])
        assert lat["result"]["delay_ms"] > 0


def test_tiny_run_workers_reads_and_merkle(tiny_run):
    _, results, _ = tiny_run
    assert [w["workers"] for w in results["workers"]] == [1, 2]
    for w in results["workers"]:
        assert "error" not in w, w.get("error")
        _check_load(w["server"])
        assert w["server"]["statuses"].get("201", 0) > 0
    (row,) = results["reads"]
    assert row["size"] == 600
    assert set(row["kinds"]) == {"hello", "inclusion", "consistency", "tile", "entries"}
    for kind, r in row["kinds"].items():
        _check_load(r)
        assert r["statuses"] == {"200": r["requests"]}, (kind, r["statuses"])
    assert row["startup_s"] > 0 and row["rss_after_reads"]["peak_rss_mb"] > 0
    # The minimal handler answered bodies as long as the server's proof and tile answers.
    assert row["body_bytes"]["tile"] == 32 * 256  # a full level-0 tile
    assert row["body_bytes"]["inclusion"] > 100
    assert set(row["same_size"]) == {"inclusion", "tile"}
    for kind, r in row["same_size"].items():
        _check_load(r)
        assert r["statuses"] == {"200": r["requests"]}, (kind, r["statuses"])
        assert row["vs_same_size"][kind] == pytest.approx(row["kinds"][kind]["ok_rps"] / r["ok_rps"], rel=1e-2)
    # The hello-world was measured before and after the server's runs; the ratios use the mean.
    _check_load(row["hello_after"])
    assert row["hello_after"]["statuses"] == {"200": row["hello_after"]["requests"]}
    mean = (row["kinds"]["hello"]["ok_rps"] + row["hello_after"]["ok_rps"]) / 2
    assert row["hello_rps"] == pytest.approx(mean)
    for kind in ("inclusion", "consistency", "tile", "entries"):
        assert row["vs_hello"][kind] == pytest.approx(row["kinds"][kind]["ok_rps"] / mean, rel=1e-2)
    assert all(w["server"]["machine_cpu_busy_cores"] > 0 for w in results["workers"])
    inline = results["workers_one_process_each"]
    assert [w["workers"] for w in inline] == [1, 2]
    for w in inline:
        assert "error" not in w, w.get("error")
        _check_load(w["server"])
        assert w["server"]["statuses"].get("201", 0) > 0
    ops = {r["operation"] for r in results["merkle"]["rows"]}
    assert ops == {"append", "inclusion proof", "consistency proof", "verify (inclusion + consistency)"}
    assert results["merkle"]["rounds"] == 3
    assert all(r["logserver_per_s"] > 0 and r["pymerkle_per_s"] > 0 for r in results["merkle"]["rows"])
    statuses = {t["status"] for t in results["targets"]}
    assert statuses <= {"met", "missed", "not measured"}
    assert any(t["target"].startswith("Merkle core append") for t in results["targets"])


def test_tiny_run_static_publication(tiny_run):
    """Section 6 ran with the real nginx and SeaweedFS: reads from both servers, the lag
    at a paced rate, submissions with publishing on and off, reads during an outage."""
    _, results, _ = tiny_run
    static = results["static"]
    (row,) = static["reads"]
    assert row["size"] == 600 and row["publication_s"] > 0
    assert row["published"]["objects"] >= 2 * (600 // 256)  # full tiles and entry bundles at least
    assert {(r["server"], r["what"]) for r in row["runs"]} == {("logserver", "tile"), ("logserver", "checkpoint"),
                                                                ("nginx", "same"), ("nginx", "tile"),
                                                                ("nginx", "checkpoint")}
    for r in row["runs"]:
        _check_load(r)
        assert r["statuses"] == {"200": r["requests"]}, r["statuses"]
    nginx_tiles = [r["ok_rps"] for r in row["runs"] if (r["server"], r["what"]) == ("nginx", "tile")]
    assert row["mean_rps"]["nginx tile"] == pytest.approx(sum(nginx_tiles) / len(nginx_tiles), rel=1e-3)
    m = row["mean_rps"]
    assert row["tiles_vs_same"] == pytest.approx(m["nginx tile"] / m["nginx same"], rel=1e-2)
    assert row["nginx_vs_logserver"] == pytest.approx(m["nginx tile"] / m["logserver tile"], rel=1e-2)
    lag = static["lag"]
    assert lag["load"]["acknowledged"] > 0 and lag["load"]["statuses"]["201"] == lag["load"]["acknowledged"]
    for target in ("directory", "s3"):
        # Every acknowledged entry was seen covered by each target's checkpoint.
        assert lag[target]["entries"] == lag["load"]["acknowledged"] and lag[target]["not_covered"] == 0
        assert 0 <= lag[target]["lag_ms"]["p50"] <= lag[target]["lag_ms"]["p99"] <= lag[target]["lag_ms"]["max"]
    subs = static["submissions"]
    assert [r["targets"] for r in subs["runs"]] == ["none", "both", "directory", "none", "both", "s3", "none"]
    for r in subs["runs"]:
        _check_load(r)
        assert r["statuses"].get("201", 0) > 0
        assert ("catch_up_s" in r) == (r["targets"] != "none")
    assert set(subs["alone_vs_off"]) == {"directory", "s3"}
    assert subs["ratio"] == pytest.approx(subs["on_rps"] / subs["off_rps"], rel=1e-2)
    outage = static["outage"]
    assert outage["readyz_during"] == 503  # the log saw its database go
    assert 0 < outage["pg_down_at_s"] < outage["pg_up_at_s"] < outage["read_duration_s"]
    for origin in ("nginx", "s3"):
        r = outage["reads"][origin]
        _check_load(r, server=False)
        assert r["non_2xx"] == r["requests"] - r["ok"]
    names = [t["target"] for t in results["targets"] if t["target"].startswith("static: ")]
    assert len(names) == 7, names  # 2 read ratios, 2 lags, on/off, 2 origins in the outage
    assert "static.png" in results["plots"]


def test_tiny_run_fleet_heads(tiny_run):
    """Section 7 ran: proofs built, verified and sized at every (size, fleets) case of
    the tiny mode, and submissions with HEADS leaves on and off on real servers, the
    "off" log without a HEADS leaf (its tree size is its bundles alone)."""
    _, results, _ = tiny_run
    heads = results["heads"]
    cases = {(r["size"], r["fleets"]) for r in heads["proofs"]}
    assert cases == {(s, f) for s in (10_000, 2**23, 10_000_000) for f in (10, 100)}
    for r in heads["proofs"]:
        assert r["proofs"] == 10 and r["build_per_s"] > 0 and r["verify_ms"]["mean"] > 0
        assert r["hashes"]["min"] <= r["hashes"]["max"]
        # hashes, the HEADS leaf, then the entry: the row (its id and 49 bytes) and its
        # next fleet id (every id of the run is as long as fleet-00000).
        assert r["binary_bytes"]["max"] == (r["hashes"]["max"] * 32 + 49 + 1 + len("fleet-00000") + 49
                                            + 1 + len("fleet-00000"))
        assert r["json_bytes_without_witness"]["max"] < r["json_bytes"]["max"]
    subs = heads["submissions"]
    assert [r["heads"] for r in subs["runs"]] == ["off", "on"]
    for r in subs["runs"]:
        _check_load(r)
        assert r["statuses"].get("201", 0) > 0
    off, on = subs["runs"]
    assert not off["ends_with_heads_leaf"] and on["ends_with_heads_leaf"]
    assert on["tree_size"] > on["statuses"]["201"]  # each batch's HEADS leaf on top of its bundles
    assert subs["ratio"] == pytest.approx(subs["on_rps"] / subs["off_rps"], rel=1e-2)
    known = heads["submissions_known_fleets"]
    assert known["load"] == "known fleets" and [r["heads"] for r in known["runs"]] == ["off", "on"]
    for r in known["runs"]:
        _check_load(r)
        assert r["statuses"].get("201", 0) > 0
    assert [r["ends_with_heads_leaf"] for r in known["runs"]] == [False, True]
    names = [t["target"] for t in results["targets"] if t["target"].startswith("heads: submissions")]
    assert len(names) == 2, names  # the throughput ratio of each load (the CPU ratios are "heads: server CPU")


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (the suite installs it when run)")
def test_wrk_replay_script_reports_statuses(tmp_path):
    """The wrk path the real runs use: the Lua replay script and its JSON report."""
    sys.path.insert(0, str(ROOT))
    from bench.env import Process, free_port
    from bench.loadgen import LoadGenerator

    (tmp_path / "reqs.tsv").write_text("".join("GET\t/hello\n" for _ in range(50)) + "GET\t/missing\n" * 10)
    port = free_port()
    app = Process([sys.executable, "-c", (
        "from aiohttp import web\n"
        "app = web.Application()\n"
        "app.router.add_get('/hello', lambda r: web.Response(text='hi'))\n"
        f"web.run_app(app, host='127.0.0.1', port={port}, print=None)\n")], port, tmp_path / "app.log")
    with app.start(ready_path="/hello"):
        result = LoadGenerator("wrk").run(app.url, tmp_path / "reqs.tsv", connections=2, duration_s=1, server=app)
    _check_load(result)
    # 60 lines, each sent once, then the thread stops; wrk drops the answers still in
    # flight on the other connections then (at most one per connection).
    assert set(result["statuses"]) == {"200", "404"}
    assert 48 <= result["statuses"]["200"] <= 50 and 8 <= result["statuses"]["404"] <= 10
    assert result["requests"] >= 60 - 2
    assert result["ran_out_of_requests"]


def test_tiny_run_pq_costs(tiny_run):
    """Section 7 (bench/pq.py): signing both ways, submissions with the log's ML-DSA-44
    signature off and on and with ML-DSA-44 authorities, the ceilings, receipts."""
    out, results, _ = tiny_run
    pq = results["pq"]
    assert set(pq["signing"]) == {"ed25519", "ed25519+ml-dsa-44"}
    assert pq["signing"]["ed25519+ml-dsa-44"]["note_bytes"] > pq["signing"]["ed25519"]["note_bytes"] + 3000
    assert {(r["algorithm"], r["log_mldsa44"]) for r in pq["submissions"]} == {
        ("ed25519", False), ("ed25519", True), ("ml-dsa-44", True)}
    for r in pq["submissions"]:
        _check_load(r["server"])
    for algorithm in ("ed25519", "ml-dsa-44"):
        _check_load(pq["ceiling"][algorithm])
        assert pq["ceiling"][algorithm]["ok"] > 0, algorithm  # the ceiling verifies ML-DSA-44 bundles too
    assert pq["log_mldsa44_ratio"] is not None
    sigs = [r["log_signatures"] for r in pq["receipts"]]
    assert sigs == [["ed25519", "ed25519-cosignature"]] + [["ed25519", "ed25519-cosignature", "ml-dsa-44"]] * 2
    assert pq["receipts"][1]["checkpoint_bytes"] > pq["receipts"][0]["checkpoint_bytes"] + 3000
    [t] = [t for t in results["targets"] if "ML-DSA-44 checkpoint signature" in t["target"]]
    assert t["status"] in ("met", "missed")
    assert "## 8. ML-DSA-44" in (out / "results.md").read_text()
