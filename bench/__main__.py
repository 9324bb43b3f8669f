"""logserver benchmark suite: `python -m bench [--tiny | --quick | --full] [--with-10m]`.

Run from the top of the checkout (scripts/dev.py bench does that, and installs the
`bench` extra). Results go to bench/results/ (or --out): results.json, results.md
and PNG plots, with a description of the machine and its load.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
import time
from pathlib import Path

from . import machine, report
from .env import ALGORITHMS, ROOT, BenchEnv
from .heads import run_heads
from .loadgen import LoadGenerator, ensure_wrk
from .merkle_core import run_merkle
from .modes import MODES, with_10m
from .pq import run_pq
from .reads import run_reads
from .static import run_static
from .submissions import run_latency_at_half, run_submissions, run_workers, run_workers_one_process_each

SECTIONS = ("submissions", "workers", "reads", "merkle", "static", "heads", "pq")
# Above this 1-minute load average (per usable CPU) before the run, results are marked provisional.
QUIET_LOAD_PER_CPU = 0.25


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--tiny", action="store_const", dest="mode", const="tiny", help="CI smoke run (seconds)")
    size.add_argument("--quick", action="store_const", dest="mode", const="quick", help="default (minutes)")
    size.add_argument("--full", action="store_const", dest="mode", const="full", help="README figures")
    p.add_argument("--with-10m", action="store_true", help="add reads/scale at 10M leaves (long: bulk load)")
    p.add_argument("--only", action="append", choices=SECTIONS, help="run only these sections (repeatable)")
    p.add_argument("--algorithms", default=",".join(ALGORITHMS), help="authority algorithms for submissions")
    p.add_argument("--loadgen", choices=("wrk", "python"), default="wrk",
                   help="wrk (installed from Debian if missing, as root) or the asyncio fallback")
    p.add_argument("--data-dir", type=Path, default=ROOT / "bench" / "data",
                   help="bench-owned embedded PostgreSQL, keys, bundles, bulk-loaded logs")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.set_defaults(mode="quick")
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    mode = MODES[args.mode]
    if args.with_10m:
        mode = with_10m(mode)
    sections = args.only or list(SECTIONS)
    algorithms = [a for a in args.algorithms.split(",") if a]
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", flush=True)

    tool = args.loadgen
    if tool == "wrk" and ensure_wrk(allow_install=True) is None:
        log("wrk is not available: falling back to the asyncio load generator (slower; see bench/README.md)")
        tool = "python"
    loadgen = LoadGenerator(tool)
    load_before = [round(x, 2) for x in os.getloadavg()]
    log(f"mode {mode.name}, sections {sections}, load generator {tool}, load average {load_before}")
    env = BenchEnv(args.data_dir)
    results: dict = {"meta": {
        "mode": mode.name, "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m bench " + " ".join(shlex.quote(a) for a in argv), "loadgen": tool,
        "load_before": load_before, "settings": {k: v for k, v in vars(mode).items()},
    }}
    if "submissions" in sections:
        results["submissions"] = run_submissions(env, mode, loadgen, algorithms, log)
        if mode.latency_run:
            results["latency"] = []
            for algorithm in algorithms:
                rows = [r for r in results["submissions"] if r["algorithm"] == algorithm]
                best = max(r["server"]["ok_rps"] for r in rows)
                results["latency"].append(run_latency_at_half(env, mode, loadgen, algorithm, best, log))
    if "workers" in sections:
        results["workers"] = run_workers(env, mode, loadgen, algorithms[0], log)
        results["workers_one_process_each"] = run_workers_one_process_each(env, mode, loadgen, algorithms[0], log)
    if "reads" in sections:
        results["reads"] = run_reads(env, mode, loadgen, log)
    if "merkle" in sections:
        results["merkle"] = run_merkle(mode, log)
    if "static" in sections:
        results["static"] = run_static(env, mode, loadgen, log)
    if "heads" in sections:
        results["heads"] = run_heads(env, mode, loadgen, log)
    if "pq" in sections:
        results["pq"] = run_pq(env, mode, loadgen, log)
    load_after = [round(x, 2) for x in os.getloadavg()]
    cpus = len(os.sched_getaffinity(0))
    meta = results["meta"]
    meta.update(load_after=load_after, elapsed_s=round(time.perf_counter() - started, 1),
                machine=machine.describe(env.pg_version))
    if load_before[0] > QUIET_LOAD_PER_CPU * cpus:
        meta["provisional"] = (f"the machine was busy before the run (1-minute load average {load_before[0]} "
                               f"on {cpus} CPUs); rerun on a quiet machine for final figures")
    paths = report.write(results, args.out)
    log(f"wrote {paths['markdown']} and {paths['json']}")
    for t in results["targets"]:
        log(f"  {t['status']:>12}: {t['target']}: {t['measured']} (want {t['want']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
