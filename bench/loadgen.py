"""Load generators: wrk (default) or a small asyncio HTTP/1.1 client (fallback).

Both are closed-loop: N connections, each sends its next request as soon as the
previous response arrived, over keep-alive, replaying a request file (see
lua/replay.lua) in which no line is sent twice. Both run in their own process and
report the same fields. The CPU time the generator itself used is measured
(getrusage of the child), so a report can show it was not the bottleneck, and so
is the whole machine's busy CPU (/proc/stat via psutil: all processes, the
server's, PostgreSQL's and the generator's), so it can show when the machine
itself had no core left.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

LUA = Path(__file__).parent / "lua" / "replay.lua"
MARKER = "--- bench-json ---"


def ensure_wrk(allow_install: bool) -> str | None:
    """Path of wrk, installing Debian's package when missing and allowed (as root)."""
    exe = shutil.which("wrk")
    if exe or not allow_install:
        return exe
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    print("installing wrk from Debian's packages (apt-get install -y wrk) ...", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "update", "-q"], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return shutil.which("wrk")


class LoadGenerator:
    def __init__(self, tool: str, threads: int = 1):
        if tool not in ("wrk", "python"):
            raise ValueError(f"load generator: got {tool!r}, want wrk or python")
        self.tool = tool
        self.threads = threads

    def run(self, url: str, requests_file: Path, *, connections: int, duration_s: float,
            delay_ms: float = 0.0, server=None, wrap: bool = False) -> dict:
        """Drive `url` with the requests of `requests_file`; return the measurements.

        Each line is sent once, unless `wrap` (for reads): then the file is replayed
        from the start when it runs out, until the duration is over."""
        threads = max(1, min(self.threads, connections))
        if self.tool == "wrk":
            argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
                    "--timeout", "30s", "-s", str(LUA), url]
            env = dict(os.environ, BENCH_REQUESTS=str(requests_file), BENCH_THREADS=str(threads),
                       BENCH_DELAY_MS=str(int(delay_ms)), BENCH_WRAP="1" if wrap else "0")
        else:
            argv = [sys.executable, "-m", "bench.pyload", "--url", url, "--requests", str(requests_file),
                    "--connections", str(connections), "--duration", str(duration_s),
                    "--delay-ms", str(delay_ms)] + (["--wrap"] if wrap else [])
            env = dict(os.environ)
        server_cpu0 = server.cpu_seconds() if server is not None else None
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        machine_before, wall_before = _machine_busy_s(), time.monotonic()
        out = subprocess.run(argv, env=env, capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent.parent)
        machine_busy, wall = _machine_busy_s() - machine_before, time.monotonic() - wall_before
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if out.returncode != 0 or MARKER not in out.stdout:
            raise RuntimeError(f"{argv[0]} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
        raw = json.loads(out.stdout.split(MARKER, 1)[1].strip().splitlines()[0])
        duration = raw["duration_us"] / 1e6
        statuses = {str(k): v for k, v in raw["statuses"].items()}
        ok = sum(v for k, v in statuses.items() if k.startswith("2"))
        lat = raw["latency_us"]
        gen_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        result = {
            "tool": self.tool,
            "connections": connections,
            "threads": threads,
            "delay_ms": delay_ms,
            "duration_s": round(duration, 3),
            "requests": raw["requests"],
            "ok": ok,
            "statuses": statuses,
            "rps": round(raw["requests"] / duration, 1) if duration else 0.0,
            "ok_rps": round(ok / duration, 1) if duration else 0.0,
            "latency_ms": {k: round(lat[k] / 1000, 3) for k in ("mean", "p50", "p90", "p99", "max")},
            "socket_errors": raw["errors"],
            "ran_out_of_requests": bool(raw.get("threads_ran_out")),
            "loadgen_cpu_cores": round(gen_cpu / duration, 3) if duration else None,
            # Averaged over the generator's whole run (its start-up and end included).
            "machine_cpu_busy_cores": round(machine_busy / wall, 3) if wall else None,
        }
        if server is not None:
            result["server_cpu_cores"] = round((server.cpu_seconds() - server_cpu0) / duration, 3)
        return result


def _machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (neither idle, waiting for I/O, nor stolen)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "steal", 0.0) - getattr(t, "guest", 0.0) \
        - getattr(t, "guest_nice", 0.0)
