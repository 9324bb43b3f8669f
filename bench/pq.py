"""Section 8 ("pq"): what ML-DSA-44 costs (issue 21 §5), side by side in one run.

1. **Checkpoint signing**: `LogKey.sign_checkpoint` with the Ed25519 key alone (the
   signed-note and cosignature/v1 lines) and with the ML-DSA-44 subtree/v1 line too;
   the note's size each way.
2. **Submissions per second** on a real `logserver serve`: Ed25519 authorities with
   the log's ML-DSA-44 checkpoint signature off and on (alternating rounds, each on a
   fresh database: the ratio on/off is the issue's >= 0.95 target), and ML-DSA-44
   authorities (signer and countersigner) with it on; the verify-only ceiling
   (bench/ceiling.py) for both authority algorithms beside them.
3. **Receipts**: one receipt from each server (a bundle POSTed after the load), its
   size in bytes (JSON, and the checkpoint note in it), and the time `verify_receipt`
   takes offline with a trust policy pinning the Ed25519 log key only, or both log
   keys with `require_log_mldsa44`.
"""
from __future__ import annotations

import json
import shutil
import statistics
import time
import urllib.request
from datetime import UTC, datetime

from logserver.bundle import load_authority_key_pem
from logserver.client import TrustPolicy, verify_receipt
from logserver.keys.log_key import LogKey

from .bundles import bundle_file, first_body
from .env import ORIGIN, BenchEnv, ceiling_process, serve_process


def _log_key(env: BenchEnv, mldsa44: bool) -> LogKey:
    return LogKey.load(env.log_key(), ORIGIN, mldsa44_path=env.mldsa44_log_key() if mldsa44 else None)


def _ratio_of_means(runs: list[dict]) -> float | None:
    """Mean req/s with the log's ML-DSA-44 signature on over the mean with it off (Ed25519
    authorities): beside the ratio of medians, which one slow round moves more."""
    def mean(pq_log: bool) -> float:
        rates = [r["server"]["ok_rps"] for r in runs if r["algorithm"] == "ed25519" and r["log_mldsa44"] == pq_log]
        return statistics.fmean(rates) if rates else 0.0
    return round(mean(True) / mean(False), 3) if mean(False) else None


def _per_call_us(fn, n: int) -> dict:
    """Median and mean microseconds per call of `fn` over `n` calls (after one untimed)."""
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e6)
    return {"calls": n, "median_us": round(statistics.median(times), 1), "mean_us": round(statistics.fmean(times), 1)}


def run_signing(env: BenchEnv, n: int) -> dict:
    out = {}
    for label, pq in (("ed25519", False), ("ed25519+ml-dsa-44", True)):
        key = _log_key(env, pq)
        sizes = iter(range(1000, 1000 + n + 1))
        out[label] = _per_call_us(lambda k=key, it=sizes: k.sign_checkpoint(next(it), b"\x42" * 32, 1_800_000_000_000),
                                  n)
        out[label]["note_bytes"] = len(key.sign_checkpoint(1_000_000, b"\x42" * 32, 1_800_000_000_000).encode())
    return out


def _post(url: str, body: bytes) -> dict:
    req = urllib.request.Request(url + "/v1/bundles", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _serve_once(env: BenchEnv, mode, loadgen, tag: str, algorithm: str, pq_log: bool, log) -> tuple[dict, dict, bytes]:
    """One load run on a fresh server; then one receipt (the requests' first bundle, a duplicate by then)."""
    requests = bundle_file(env, algorithm, mode.bundles)
    name = f"bench_pq_{tag}"
    url = env.database(name, fresh=True)
    run_dir = env.runs / f"pq-{tag}"
    if run_dir.exists():  # a fresh database needs a fresh data_dir (its latest-checkpoint file)
        shutil.rmtree(run_dir)
    cfg = env.write_config(run_dir, url, algorithm, mldsa44_log_key=pq_log)
    c = max(mode.connections)
    log(f"pq: submissions, {algorithm} authorities, log ML-DSA-44 signature {'on' if pq_log else 'off'}, "
        f"{c} connections")
    with serve_process(cfg, url, run_dir / "server.log").start() as server:
        res = loadgen.run(server.url, requests, connections=c, duration_s=mode.duration_s, server=server)
        body = first_body(requests)
        receipt = _post(server.url, body)
    env.drop_database(name)
    return res, receipt, body


def _policy(env: BenchEnv, algorithm: str, pq: bool) -> TrustPolicy:
    keys = []
    for role in ("signer", "countersigner"):
        _, pem = env.authority(algorithm, role)
        keys.append(load_authority_key_pem(pem.read_bytes(), f"bench-{role}", role))
    key = _log_key(env, True)
    tlog = f"log {key.vkey}\n" + (f"log {key.mldsa44_vkey}\n" if pq else "") + "quorum none\n"
    return TrustPolicy.from_parts(keys, tlog, require_log_mldsa44=pq)


def run_pq(env: BenchEnv, mode, loadgen, log) -> dict:
    tiny = mode.name == "tiny"
    log("pq: checkpoint signing")
    signing = run_signing(env, 20 if tiny else 500)
    rounds = 1 if tiny else 3
    c = max(mode.connections)
    ceilings = {}
    for algorithm in ("ed25519", "ml-dsa-44"):
        log(f"pq: ceiling, {algorithm} authorities, {c} connections")
        requests = bundle_file(env, algorithm, mode.bundles)
        with ceiling_process(env, algorithm, env.runs / f"ceiling-pq-{algorithm}.log").start() as ceiling:
            ceilings[algorithm] = loadgen.run(ceiling.url, requests, connections=c, duration_s=mode.duration_s,
                                              server=ceiling)
    runs = []
    receipts: dict[str, tuple[dict, bytes]] = {}
    # Off and on alternate, so that a drift of the machine during the run hits both alike.
    plan = [("ed25519", False), ("ed25519", True)] * rounds + [("ml-dsa-44", True)]
    for i, (algorithm, pq_log) in enumerate(plan):
        res, receipt, body = _serve_once(env, mode, loadgen, f"{i}", algorithm, pq_log, log)
        runs.append({"algorithm": algorithm, "log_mldsa44": pq_log, "connections": c, "server": res})
        receipts[f"{algorithm}/{'on' if pq_log else 'off'}"] = (receipt, body)

    def median_rps(algorithm: str, pq_log: bool) -> float:
        return statistics.median(r["server"]["ok_rps"] for r in runs
                                 if r["algorithm"] == algorithm and r["log_mldsa44"] == pq_log)

    def median_per_cpu(pq_log: bool) -> float:
        # Requests per second of server CPU: on a shared machine the server's CPU share
        # moves from run to run, and its throughput with it; this divides that out.
        return statistics.median(r["server"]["ok_rps"] / r["server"]["server_cpu_cores"] for r in runs
                                 if r["algorithm"] == "ed25519" and r["log_mldsa44"] == pq_log
                                 and r["server"].get("server_cpu_cores"))

    off, on = median_rps("ed25519", False), median_rps("ed25519", True)
    try:
        per_cpu = round(median_per_cpu(True) / median_per_cpu(False), 3)
    except (statistics.StatisticsError, ZeroDivisionError):
        per_cpu = None
    now = datetime.now(UTC)
    verification = []
    n = 20 if tiny else 300
    for label, (receipt, body), algorithm, pq in (
        ("Ed25519 authorities, Ed25519 log signature only", receipts["ed25519/off"], "ed25519", False),
        ("Ed25519 authorities, both log signatures, ML-DSA-44 required", receipts["ed25519/on"], "ed25519", True),
        ("ML-DSA-44 authorities, both log signatures, ML-DSA-44 required", receipts["ml-dsa-44/on"],
         "ml-dsa-44", True),
    ):
        policy = _policy(env, algorithm, pq)
        result = verify_receipt(body, receipt, policy, now=now)
        row = _per_call_us(lambda: verify_receipt(body, receipt, policy, now=now), n)  # noqa: B023 (timed now)
        row.update(label=label, receipt_bytes=len(json.dumps(receipt, separators=(",", ":")).encode()),
                   checkpoint_bytes=len(receipt["checkpoint"].encode()), envelope_bytes=len(body),
                   log_signatures=list(result.checkpoint.log_signatures))
        verification.append(row)
    return {
        "signing": signing,
        "ceiling": ceilings,
        "submissions": runs,
        "log_mldsa44_ratio": round(on / off, 3) if off else None,
        "log_mldsa44_ratio_per_cpu": per_cpu,
        "log_mldsa44_ratio_of_means": _ratio_of_means(runs),
        "ml_dsa_44_authorities_ratio": round(median_rps("ml-dsa-44", True) / on, 3) if on else None,
        "receipts": verification,
    }
