"""Fallback load generator: closed-loop HTTP/1.1 keep-alive client on asyncio streams.

    python -m bench.pyload --url URL --requests FILE --connections N --duration S

Slower than wrk (it is Python), so the suite uses it only when wrk is missing
and in the CI smoke run. Prints the same JSON as lua/replay.lua after the marker.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
import urllib.parse
from collections import Counter

MARKER = "--- bench-json ---"


def load_requests(path: str, host: str) -> list[bytes]:
    out = []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t", 2)
            method, target = parts[0], parts[1]
            body = parts[2].encode() if len(parts) > 2 and parts[2] else b""
            head = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"
            if body:
                head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            out.append(head.encode() + b"\r\n" + body)
    return out


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response on a keep-alive connection: (status, body). Bodies come with
    a Content-Length from the servers measured (no chunked encoding)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for h in lines[1:]:
        if h[:15].lower() == b"content-length:":
            length = int(h[15:])
    return status, (await reader.readexactly(length) if length else b"")


async def connection(host, port, reqs, deadline, delay_s, latencies, statuses, state, wrap=False):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for raw in (itertools.cycle(reqs) if wrap and reqs else reqs):
            if time.perf_counter() >= deadline:
                return
            if delay_s:
                await asyncio.sleep(delay_s)
            t0 = time.perf_counter()
            writer.write(raw)
            status, _ = await read_response(reader)
            latencies.append(time.perf_counter() - t0)
            statuses[str(status)] += 1
        state["ran_out"] = 1
    except (OSError, asyncio.IncompleteReadError):
        state["errors"] += 1
    finally:
        writer.close()


async def main_async(args) -> dict:
    u = urllib.parse.urlsplit(args.url)
    reqs = load_requests(args.requests, u.netloc)
    latencies: list[float] = []
    statuses: Counter = Counter()
    state = {"ran_out": 0, "errors": 0}
    started = time.perf_counter()
    deadline = started + args.duration
    await asyncio.gather(*(
        connection(u.hostname, u.port, reqs[i::args.connections], deadline, args.delay_ms / 1000,
                   latencies, statuses, state, args.wrap)
        for i in range(args.connections)
    ))
    duration = time.perf_counter() - started
    latencies.sort()

    def pct(p):
        return int(latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] * 1e6) if latencies else 0

    return {
        "requests": len(latencies), "duration_us": int(duration * 1e6), "bytes": 0,
        "errors": {"connect": 0, "read": state["errors"], "write": 0, "status": 0, "timeout": 0},
        "latency_us": {"mean": (sum(latencies) / len(latencies) * 1e6) if latencies else 0,
                       "p50": pct(50), "p90": pct(90), "p99": pct(99), "p999": pct(99.9),
                       "max": int(latencies[-1] * 1e6) if latencies else 0},
        "statuses": dict(statuses), "threads_ran_out": state["ran_out"],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--requests", required=True)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--duration", type=float, default=5)
    p.add_argument("--delay-ms", type=float, default=0)
    p.add_argument("--wrap", action="store_true", help="replay the file from the start when it runs out")
    args = p.parse_args()
    result = asyncio.run(main_async(args))
    print(MARKER)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
