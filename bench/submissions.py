"""Sections 1 and 2: POST /v1/bundles against the verify-only ceiling, and worker scaling."""
from __future__ import annotations

import time

from .bundles import bundle_file, tail_of
from .env import BenchEnv, ceiling_process, serve_process

# Sequencer settings for the benchmark server: the defaults of README "Configuration".
SERVER_EXTRA = ""


def _serve(env: BenchEnv, tag: str, algorithm: str, workers: int | None = None, extra: str = SERVER_EXTRA):
    name = f"bench_{tag}"
    url = env.database(name, fresh=True)
    run_dir = env.runs / tag
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    cfg = env.write_config(run_dir, url, algorithm, extra=extra)
    return serve_process(cfg, url, run_dir / "server.log", workers=workers), name


def run_submissions(env: BenchEnv, mode, loadgen, algorithms, log) -> list[dict]:
    rows = []
    for algorithm in algorithms:
        requests = bundle_file(env, algorithm, mode.bundles)
        for c in mode.connections:
            log(f"submissions {algorithm}: ceiling, {c} connections")
            with ceiling_process(env, algorithm, env.runs / f"ceiling-{algorithm}.log").start() as ceiling:
                ceil = loadgen.run(ceiling.url + "", requests, connections=c, duration_s=mode.duration_s,
                                   server=ceiling)
            log(f"submissions {algorithm}: server, {c} connections")
            proc, db = _serve(env, f"submit_{algorithm.replace('-', '_')}_{c}", algorithm)
            with proc.start() as server:
                res = loadgen.run(server.url, requests, connections=c, duration_s=mode.duration_s, server=server)
            env.drop_database(db)
            rows.append({
                "algorithm": algorithm, "connections": c, "server": res, "ceiling": ceil,
                "ratio": round(res["ok_rps"] / ceil["ok_rps"], 3) if ceil["ok_rps"] else None,
            })
            time.sleep(0.5)
    return rows


def run_latency_at_half(env: BenchEnv, mode, loadgen, algorithm: str, best_rps: float, log) -> dict:
    """p99 at about half the best throughput: each of C connections paces its requests.

    wrk's delay comes after each answer, so a connection's cycle is the delay plus
    the latency: the first run usually falls short of the asked rate. The delay is
    then shortened by the measured mean latency and the run repeated on a fresh
    server (at most twice more); the run closest to the asked rate is reported.

    Each measured run follows an untimed warm-up of `mode.warmup_s` at the same
    pace on the same server (other bundles): the target is about a server under
    steady load, and the first seconds after start-up (new database connections,
    their first statements, cold caches) have a longer tail. The warm-up's own
    latencies are kept in the result as `warmup` and reported beside it."""
    connections = 32 if mode.name != "tiny" else 4
    target = max(1.0, best_rps / 2)
    period_ms = 1000 * connections / target
    delay_ms = max(1, int(period_ms))
    requests = bundle_file(env, algorithm, mode.bundles)
    warm_requests = tail_of(requests, mode.bundles // 4) if mode.warmup_s else None
    runs = []
    for _attempt in range(3):
        log(f"submissions {algorithm}: latency at ~{target:.0f}/s ({connections} connections, {delay_ms} ms apart)")
        proc, db = _serve(env, f"latency_{algorithm.replace('-', '_')}", algorithm)
        with proc.start() as server:
            warm = None
            if warm_requests is not None:
                warm = loadgen.run(server.url, warm_requests, connections=connections, duration_s=mode.warmup_s,
                                   delay_ms=delay_ms, server=server)
            res = loadgen.run(server.url, requests, connections=connections, duration_s=mode.duration_s,
                              delay_ms=delay_ms, server=server)
        env.drop_database(db)
        if warm is not None:
            res["warmup"] = {k: warm[k] for k in ("duration_s", "ok_rps", "latency_ms", "statuses")}
        runs.append(res)
        if res["ok_rps"] >= 0.9 * target or mode.name == "tiny":
            break
        next_delay = max(1, int(period_ms - res["latency_ms"]["mean"]))
        if next_delay >= delay_ms:
            break
        delay_ms = next_delay
    best = min(runs, key=lambda r: abs(r["ok_rps"] - target))
    return {"algorithm": algorithm, "target_rps": round(target, 1), "result": best, "attempts": len(runs)}


def run_workers(env: BenchEnv, mode, loadgen, algorithm: str, log) -> list[dict]:
    """`serve --workers N` for each N, with the N-process ceiling beside it."""
    rows = []
    requests = bundle_file(env, algorithm, mode.bundles)
    c = max(mode.connections)
    for n in mode.workers:
        log(f"workers: {n} worker(s), {algorithm}, {c} connections")
        ceiling = ceiling_process(env, algorithm, env.runs / f"ceiling-w{n}.log", workers=n)
        with ceiling.start():
            ceil = loadgen.run(ceiling.url, requests, connections=c, duration_s=mode.duration_s, server=ceiling)
        proc, db = _serve(env, f"workers_{n}", algorithm, workers=n)
        try:
            with proc.start() as server:
                res = loadgen.run(server.url, requests, connections=c, duration_s=mode.duration_s, server=server)
                rows.append({"workers": n, "algorithm": algorithm, "connections": c, "server": res,
                             "ceiling": ceil, "startup_s": round(server.startup_s, 3)})
        except RuntimeError as e:
            rows.append({"workers": n, "algorithm": algorithm, "error": str(e)[-500:]})
        env.drop_database(db)
    return rows


def run_workers_one_process_each(env: BenchEnv, mode, loadgen, algorithm: str, log) -> list[dict]:
    """`serve --workers N` with `verify_processes = 0`: each worker one process, checking
    its submissions on its own event loop, like each process of the N-process ceiling.

    Context for the workers target, which is measured with the defaults (each worker
    also runs an admission process): this shows how the workers scale when a worker
    is one process."""
    rows = []
    requests = bundle_file(env, algorithm, mode.bundles)
    c = max(mode.connections)
    for n in mode.workers:
        log(f"workers: {n} worker(s) of one process each (verify_processes = 0), {algorithm}, {c} connections")
        proc, db = _serve(env, f"workers_inline_{n}", algorithm, workers=n, extra="verify_processes = 0")
        try:
            with proc.start() as server:
                res = loadgen.run(server.url, requests, connections=c, duration_s=mode.duration_s, server=server)
                rows.append({"workers": n, "algorithm": algorithm, "connections": c, "server": res,
                             "verify_processes": 0})
        except RuntimeError as e:
            rows.append({"workers": n, "algorithm": algorithm, "verify_processes": 0, "error": str(e)[-500:]})
        env.drop_database(db)
    return rows
