"""Paced submissions that remember when each was acknowledged (section 6's publication lag).

    python -m bench.pubload --url URL --requests FILE --rate R --duration S --connections C --acks OUT

Open loop: request k is due at start + k / R whatever happened to the ones before it,
and goes out on the first of C keep-alive connections that is free (a backlog, when
every connection is busy, shows as `late`). For each 201 it writes one line to OUT:
`<index> <ack time>`, the index from the receipt and the time the whole answer had
arrived, on time.monotonic()'s clock (CLOCK_MONOTONIC: the same in every process on
the machine, so the caller compares it with the times it saw each checkpoint). Prints
a JSON summary after the marker line, like bench/pyload.py.

wrk cannot do this: its Lua scripts have no clock finer than a second.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import tempfile
import time
import urllib.parse
from collections import Counter

from .pyload import MARKER, load_requests, read_response

INDEX = re.compile(rb'^\{"index":(\d+),')


async def main_async(args) -> dict:
    u = urllib.parse.urlsplit(args.url)
    count = max(1, int(args.rate * args.duration))
    # Only the lines it will send (a bundle file of the full mode holds 120,000).
    with open(args.requests) as f, tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as head:
        head.writelines(itertools.islice(f, count))
    try:
        reqs = load_requests(head.name, u.netloc)
    finally:
        os.unlink(head.name)
    queue: asyncio.Queue = asyncio.Queue()
    acks: list[tuple[int, float]] = []
    latencies: list[float] = []  # from the time it was due: queueing included
    statuses: Counter = Counter()
    state = {"errors": 0, "late": 0, "max_backlog": 0}

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(u.hostname, u.port)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                due, raw = item
                writer.write(raw)
                status, body = await read_response(reader)
                now = time.monotonic()
                statuses[str(status)] += 1
                latencies.append(now - due)
                if status == 201:
                    m = INDEX.match(body)
                    if m:
                        acks.append((int(m.group(1)), now))
        except (OSError, asyncio.IncompleteReadError):
            state["errors"] += 1
        finally:
            writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(args.connections)]
    await asyncio.sleep(0.2)  # the connections are open before the clock starts
    started = time.monotonic()
    for k, raw in enumerate(reqs):
        due = started + k / args.rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.01:
            state["late"] += 1
        queue.put_nowait((due, raw))
        state["max_backlog"] = max(state["max_backlog"], queue.qsize())
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    duration = time.monotonic() - started
    with open(args.acks, "w") as out:
        for index, t in acks:
            out.write(f"{index} {t:.6f}\n")
    latencies.sort()

    def pct(p):
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] * 1000, 3) if latencies else 0

    return {
        "asked_rps": args.rate, "sent": len(reqs), "answered": len(latencies), "acknowledged": len(acks),
        "duration_s": round(duration, 3), "started_at": started,
        "ok_rps": round(len(acks) / duration, 1) if duration else 0.0,
        "statuses": dict(statuses), "socket_errors": state["errors"],
        "late": state["late"], "max_backlog": state["max_backlog"], "connections": args.connections,
        "latency_ms": {"p50": pct(50), "p90": pct(90), "p99": pct(99),
                       "max": round(latencies[-1] * 1000, 3) if latencies else 0},
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--requests", required=True)
    p.add_argument("--rate", type=float, required=True, help="requests per second, open loop")
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--acks", required=True, help="file for `<index> <ack time>` lines")
    args = p.parse_args()
    result = asyncio.run(main_async(args))
    print(MARKER)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
