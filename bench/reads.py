"""Sections 3 and 4: proofs and tiles at growing tree sizes, RSS and start-up time.

For each size the log is bulk loaded once (bench/bulkload.py, cached in the bench's
PostgreSQL as database `bench_reads_<size>`), then a fresh `logserver serve` is
started on it: its start-up time (spawn to the first 200 from /readyz) and RSS are
recorded, then each read kind is driven with uniformly random requests over the
whole tree, after an untimed warm-up of the same kind. A hello-world GET on the
minimal aiohttp app is measured beside it as the ceiling, and the same app
answering a body as long as an inclusion proof's and a tile's (`/bytes/{n}`), to
show what the size of the answer alone costs.

The hello-world is measured twice, before the server's runs and after the
same-size bodies, and the ratios are taken to the mean of the two: on the shared
VMs this suite runs on, the same hello-world run moves by 20-50% within minutes,
and one measurement on one side of the runs it is compared with made the ratios
swing with it.
"""
from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
import urllib.request

from logserver.merkle.tiles import EntriesTileID, TileID, tile_path

from .bundles import write_requests
from .env import ORIGIN, BenchEnv, ceiling_process, serve_process

KINDS = ("inclusion", "consistency", "tile", "entries")
# Kinds also compared with the ceiling app answering a body of the same size (/bytes/{n}).
SAME_SIZE_KINDS = ("inclusion", "tile")


def _lines(kind: str, size: int, count: int, rng: random.Random):
    full_tiles = size // 256
    for _ in range(count):
        if kind == "inclusion":
            yield "GET", f"/v1/proof/inclusion?tree_size={size}&index={rng.randrange(size)}"
        elif kind == "consistency":
            yield "GET", f"/v1/proof/consistency?first={rng.randrange(1, size)}&second={size}"
        elif kind == "tile":
            yield "GET", "/" + tile_path(TileID(0, rng.randrange(full_tiles)))
        elif kind == "entries":
            yield "GET", "/" + tile_path(EntriesTileID(rng.randrange(full_tiles)))
        elif kind == "hello":
            yield "GET", "/hello"
        else:
            raise ValueError(kind)


def ensure_loaded(env: BenchEnv, size: int, log) -> tuple[str, dict | None]:
    """The URL of a database holding exactly `size` bulk-loaded leaves (loaded once, reused)."""
    name = f"bench_reads_{size}"
    url = env.database(name, fresh=False)
    log(f"reads: bulk loading {size:,} leaves into {name} (reused when already there)")
    out = subprocess.run(
        [sys.executable, "-m", "bench.bulkload", "--database-url", url, "--log-key", str(env.log_key()),
         "--origin", ORIGIN, "--size", str(size)],
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"bulk load failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    return url, (stats if stats.get("loaded") else None)


def _body_length(base_url: str, requests_file) -> int:
    """The length of the answer to the first request of `requests_file`."""
    with open(requests_file) as f:
        method, target = f.readline().rstrip("\n").split("\t")[:2]
    assert method == "GET", method
    with urllib.request.urlopen(base_url + target, timeout=30) as resp:
        return len(resp.read())


def wait_for_tile_file(server, log, timeout_s: float = 1800.0) -> float:
    """Seconds until the server's background fill of its tile file is done (gauge
    logserver_tile_file_warm = 1): proofs are measured on a warmed server."""
    started = time.monotonic()
    while True:
        with urllib.request.urlopen(server.url + "/metrics", timeout=30) as resp:
            if re.search(r"^logserver_tile_file_warm 1(\.0)?$", resp.read().decode(), re.M):
                return round(time.monotonic() - started, 1)
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"the tile file was not warm within {timeout_s:g}s")
        log("reads: waiting for the server to fill its tile file")
        time.sleep(5)


def run_reads(env: BenchEnv, mode, loadgen, log) -> list[dict]:
    rows = []
    rng = random.Random(6)
    c = mode.read_connections
    for size in mode.read_sizes:
        url, load_stats = ensure_loaded(env, size, log)
        run_dir = env.runs / f"reads_{size}"
        # Keep the server's data dir: its expanded-tile file (data/cache) is made once
        # per log, like the bulk load.
        for stale in run_dir.glob("*.tsv"):
            stale.unlink()
        cfg = env.write_config(run_dir, url, "ed25519")
        files = {}
        for kind in (*KINDS, "hello"):
            files[kind] = write_requests(run_dir / f"{kind}.tsv", _lines(kind, size, mode.read_requests, rng))
            files[kind + "-warm"] = write_requests(run_dir / f"{kind}-warm.tsv",
                                                   _lines(kind, size, mode.read_requests // 4, rng))
        row = {"size": size, "bulk_load": load_stats, "kinds": {}}
        log(f"reads {size:,}: hello-world ceiling")
        with ceiling_process(env, "ed25519", run_dir / "ceiling.log").start() as ceiling:
            if mode.warmup_s:
                loadgen.run(ceiling.url, files["hello-warm"], connections=c, duration_s=mode.warmup_s, wrap=True)
            row["kinds"]["hello"] = loadgen.run(ceiling.url, files["hello"], connections=c,
                                                duration_s=mode.duration_s, server=ceiling, wrap=True)
        log(f"reads {size:,}: starting logserver")
        with serve_process(cfg, url, run_dir / "server.log").start() as server:
            row["startup_s"] = round(server.startup_s, 3)
            row["rss_after_start"] = server.rss_mb()
            row["tile_file_warm_s"] = wait_for_tile_file(server, log)
            for kind in KINDS:
                log(f"reads {size:,}: {kind}")
                if mode.warmup_s:
                    loadgen.run(server.url, files[kind + "-warm"], connections=c, duration_s=mode.warmup_s,
                                wrap=True)
                row["kinds"][kind] = loadgen.run(server.url, files[kind], connections=c,
                                                 duration_s=mode.duration_s, server=server, wrap=True)
            row["rss_after_reads"] = server.rss_mb()
            row["body_bytes"] = {k: _body_length(server.url, files[k]) for k in SAME_SIZE_KINDS}
        log(f"reads {size:,}: minimal handler answering bodies of the same sizes {row['body_bytes']}")
        row["same_size"] = {}
        with ceiling_process(env, "ed25519", run_dir / "ceiling-bytes.log").start() as ceiling:
            for kind, n in row["body_bytes"].items():
                same = write_requests(run_dir / f"bytes-{kind}.tsv", [("GET", f"/bytes/{n}")])
                if mode.warmup_s:
                    loadgen.run(ceiling.url, same, connections=c, duration_s=mode.warmup_s, wrap=True)
                row["same_size"][kind] = loadgen.run(ceiling.url, same, connections=c,
                                                     duration_s=mode.duration_s, server=ceiling, wrap=True)
            log(f"reads {size:,}: hello-world ceiling again")
            row["hello_after"] = loadgen.run(ceiling.url, files["hello"], connections=c,
                                             duration_s=mode.duration_s, server=ceiling, wrap=True)
        row["hello_rps"] = hello = (row["kinds"]["hello"]["ok_rps"] + row["hello_after"]["ok_rps"]) / 2
        row["vs_hello"] = {k: round(row["kinds"][k]["ok_rps"] / hello, 3) if hello else None for k in KINDS}
        row["vs_same_size"] = {k: round(row["kinds"][k]["ok_rps"] / r["ok_rps"], 3) if r["ok_rps"] else None
                               for k, r in row["same_size"].items()}
        rows.append(row)
    return rows
