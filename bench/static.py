"""Section 6: static publication (issue 19, section 6), side by side in one run.

1. **Reads.** Each bulk-loaded read log (section 3's, `bench_reads_<size>`) is
   published to a fresh directory by a real `logserver serve` with that directory as
   its one target; the time from spawn until the directory's checkpoint has the log's
   size is the initial publication. Then, with wrk (closed loop, the read sections'
   connections, each run after an untimed warm-up), uniformly random full level-0
   tiles and the checkpoint from logserver's own routes, and then from nginx serving
   the published directory with deploy/nginx/logserver.conf; and, as nginx's ceiling,
   nginx answering one file of the same size (8,192 bytes) over and over: one fixed
   full tile in the same directory, through the same location block and headers, so
   it differs from the random tiles only in always being the same file (each request
   carries a query string of its own, which nginx ignores, so that the load
   generator's work per request is the same as for the random tiles). The runs
   alternate (READ_SCHEDULE) and the ratios are of the means.
2. **Publication lag at 1,000 submissions/s.** A fresh log publishing to a directory
   and to a bucket on SeaweedFS at once (one server, both targets, as item 3's);
   paced submissions (bench/pubload.py, open loop, on up to section 1's largest
   client count of connections) record each 201's index and
   arrival time, while two threads here watch each target's checkpoint (the
   directory's file every millisecond; the bucket's public URL every 5 ms) and record
   when each size first appeared. An entry's lag is the first time a target's
   checkpoint covered it minus the time its 201 arrived; the first `warmup_s` of acks
   are left out.
3. **Submissions with publishing on and off**: section 1's load (Ed25519, its largest
   client count, closed loop) on a fresh log each time, alternately without targets
   and with both (ON_OFF_SCHEDULE); the ratio is of the means. One run with each
   target alone says which costs what.
4. **Static reads during a PostgreSQL outage.** A log on a private PostgreSQL of its
   own, publishing to both targets; wrk reads every object of its published tree
   (checkpoint, tiles, entry bundles) through nginx and through the bucket's public
   URL while that PostgreSQL is stopped for `outage_s`.
"""
from __future__ import annotations

import bisect
import http.client
import json
import random
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from logserver.merkle import entries_tiles_for_size, tiles_for_size
from logserver.merkle.tiles import TileID, tile_path

from .bundles import bundle_file, tail_of, write_requests
from .env import BenchEnv, serve_process
from .loadgen import MARKER
from .origins import Nginx, PrivatePostgres, SeaweedFS, ensure_nginx
from .reads import ensure_loaded, wait_for_tile_file

BUCKET = "bench-static"
ALGORITHM = "ed25519"
S3_ENV = {"AWS_ACCESS_KEY_ID": "any", "AWS_SECRET_ACCESS_KEY": "any"}  # SeaweedFS has no identities
DIR_POLL_S = 0.001
URL_POLL_S = 0.005


def publication_toml(directory: Path | None = None, s3: tuple[str, str] | None = None) -> str:
    """[publication] with a directory target and/or an S3 target (endpoint, prefix)."""
    # A bound far above any run: /readyz must not turn 503 during a long initial publication.
    out = "[publication]\nmax_lag_s = 86400\n"
    if directory is not None:
        out += f'[[publication.targets]]\nname = "dir"\ntype = "directory"\npath = "{directory}"\n'
    if s3 is not None:
        endpoint, prefix = s3
        out += (f'[[publication.targets]]\nname = "bucket"\ntype = "s3"\nbucket = "{BUCKET}"\n'
                f'endpoint_url = "{endpoint}"\nprefix = "{prefix}"\n')
    return out


def _fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    return path


def _serve(env: BenchEnv, run_dir: Path, database_url: str, extra: str):
    cfg = env.write_config(run_dir, database_url, ALGORITHM, extra=extra)
    proc = serve_process(cfg, database_url, run_dir / "server.log")
    proc.env.update(S3_ENV)
    return proc


def _size_of(note: bytes | None) -> int | None:
    """The tree size of a checkpoint note (its second line)."""
    if not note:
        return None
    lines = note.split(b"\n", 2)
    return int(lines[1]) if len(lines) > 2 and lines[1].isdigit() else None


def _read_file(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _read_url(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read()
    except (urllib.error.URLError, OSError):
        return None


def _wait(what: str, check, timeout_s: float, interval_s: float = 0.05) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"static: timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)
    return time.monotonic() - started


def _served_size(server) -> int:
    return _size_of(_read_url(server.url + "/checkpoint"))


class Watcher(threading.Thread):
    """Polls one target's checkpoint and records (time.monotonic(), size) each time the
    size changes."""

    def __init__(self, name: str, *, path: Path | None = None, url: str | None = None):
        super().__init__(daemon=True, name=f"watch-{name}")
        self.path, self.url = path, url
        self.seen: list[tuple[float, int]] = []
        self.polls = 0
        self.failures = 0
        self._halt = threading.Event()

    def run(self) -> None:
        conn = None
        if self.url is not None:
            u = urllib.parse.urlsplit(self.url)
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
            target = u.path + "/checkpoint"
        last = None
        while not self._halt.is_set():
            self.polls += 1
            if conn is None:
                size = _size_of(_read_file(self.path / "checkpoint"))
            else:
                try:
                    conn.request("GET", target)
                    resp = conn.getresponse()
                    data = resp.read()
                    size = _size_of(data) if resp.status == 200 else None
                except (OSError, http.client.HTTPException):
                    conn.close()
                    size = None
            now = time.monotonic()
            if size is None:
                self.failures += 1
            elif size != last:
                self.seen.append((now, size))
                last = size
            time.sleep(DIR_POLL_S if conn is None else URL_POLL_S)
        if conn is not None:
            conn.close()

    def size(self) -> int:
        return self.seen[-1][1] if self.seen else -1

    def stop(self) -> None:
        self._halt.set()
        self.join()


# --- 1. reads ------------------------------------------------------------------------------

# The order of the read runs: the two ratios' sides alternate, so that the machine's drift
# (a shared VM's rates move by 10-30% within minutes) lands on both; each ratio is of the
# means. logserver stays up, idle, while nginx is measured (and nginx while logserver is).
READ_SCHEDULE = (("logserver", "tile"), ("nginx", "same"), ("nginx", "tile"),
                 ("logserver", "tile"), ("nginx", "same"), ("nginx", "tile"), ("nginx", "same"),
                 ("nginx", "checkpoint"), ("logserver", "checkpoint"))


def _tree_stats(root: Path) -> dict:
    files = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")]
    return {"objects": len(files), "mb": round(sum(p.stat().st_size for p in files) / 1e6, 1)}


def _reads(env: BenchEnv, mode, loadgen, base: Path, log) -> list[dict]:
    rows = []
    rng = random.Random(19)
    c = mode.read_connections
    for size in mode.read_sizes:
        url, _ = ensure_loaded(env, size, log)
        full = size // 256
        run_dir = env.runs / f"static_reads_{size}"  # its data dir (tile file) is kept, as section 3's
        public = _fresh(base / f"public_{size}")
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in run_dir.glob("*.tsv"):
            stale.unlink()

        def tiles(name, n, run_dir=run_dir, full=full):
            return write_requests(run_dir / name, (("GET", "/" + tile_path(TileID(0, rng.randrange(full))))
                                                   for _ in range(n)))
        files = {"tile": tiles("tile.tsv", mode.read_requests), "tile-warm": tiles("tile-warm.tsv",
                                                                                    mode.read_requests // 4)}
        # nginx's ceiling: one fixed full tile, each request with a query string of its own
        # (nginx serves the file whatever the query). wrk's Lua interns strings, so a file of
        # one request line repeated costs it less per request than the random tiles' file of
        # distinct lines (here ~14 against ~21 us, with wrk near a whole core), which made the
        # one file look faster than it is; distinct lines cost it the same on both sides.
        fixed = "/" + tile_path(TileID(0, full // 2))

        def same(name, n, run_dir=run_dir, fixed=fixed):
            return write_requests(run_dir / name, (("GET", f"{fixed}?{i:07d}") for i in range(n)))
        files["same"] = same("same.tsv", mode.read_requests)
        files["same-warm"] = same("same-warm.tsv", mode.read_requests // 4)
        files["checkpoint"] = write_requests(run_dir / "checkpoint.tsv", [("GET", "/checkpoint")])
        row: dict = {"size": size, "fixed_path": fixed, "runs": []}

        def measure(target, kind, files=files):
            warm = files.get(kind + "-warm", files[kind])
            if mode.warmup_s:
                loadgen.run(target.url, warm, connections=c, duration_s=mode.warmup_s, wrap=True)
            return loadgen.run(target.url, files[kind], connections=c, duration_s=mode.duration_s,
                               server=target, wrap=True)

        log(f"static reads {size:,}: publishing the log to {public}")
        proc = _serve(env, run_dir, url, publication_toml(directory=public))
        spawned = time.monotonic()
        with proc.start() as server:
            _wait("the initial publication", lambda: _size_of(_read_file(public / "checkpoint")) == size,  # noqa: B023 (_wait runs it now)
                  timeout_s=3600, interval_s=0.02)
            # From spawn: the publisher starts with the server.
            row["publication_s"] = round(time.monotonic() - spawned, 2)
            row["startup_s"] = round(server.startup_s, 3)
            row["published"] = _tree_stats(public)
            log(f"static reads {size:,}: published in {row['publication_s']} s ({row['published']})")
            row["tile_file_warm_s"] = wait_for_tile_file(server, log)
            with Nginx(public, run_dir / "nginx").start() as nginx:
                servers = {"logserver": server, "nginx": nginx}
                for name, kind in READ_SCHEDULE:
                    log(f"static reads {size:,}: {name} {kind}")
                    row["runs"].append({"server": name, "what": kind, **measure(servers[name], kind)})
        means = {}
        for name, kind in set(READ_SCHEDULE):
            rates = [r["ok_rps"] for r in row["runs"] if (r["server"], r["what"]) == (name, kind)]
            means[f"{name} {kind}"] = round(sum(rates) / len(rates), 1)
        row["mean_rps"] = means
        tile, same, ours = means["nginx tile"], means["nginx same"], means["logserver tile"]
        row["tiles_vs_same"] = round(tile / same, 3) if same else None
        row["nginx_vs_logserver"] = round(tile / ours, 2) if ours else None
        row["checkpoint_nginx_vs_logserver"] = (round(means["nginx checkpoint"] / means["logserver checkpoint"], 2)
                                                if means["logserver checkpoint"] else None)
        rows.append(row)
    return rows


# --- 2. publication lag ----------------------------------------------------------------------

def _percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    v = sorted(values)

    def pct(p):
        return round(v[min(len(v) - 1, int(len(v) * p / 100))] * 1000, 1)
    return {"p50": pct(50), "p90": pct(90), "p99": pct(99), "max": round(v[-1] * 1000, 1),
            "mean": round(sum(v) / len(v) * 1000, 1)}


def lag_stats(acks: list[tuple[int, float]], seen: list[tuple[float, int]], after: float) -> dict:
    """For each ack (index, time) at or after `after`: the first time a checkpoint seen on
    the target covered it (size > index) minus the ack's time."""
    times = [t for t, _ in seen]
    sizes = [s for _, s in seen]
    # Sizes only grow on a target; a running maximum keeps the search valid regardless.
    running = []
    top = -1
    for s in sizes:
        top = max(top, s)
        running.append(top)
    lags, uncovered, early = [], 0, 0
    for index, t_ack in acks:
        if t_ack < after:
            continue
        i = bisect.bisect_right(running, index)  # first observation with size > index
        if i == len(running):
            uncovered += 1
            continue
        lag = times[i] - t_ack
        if lag < 0:
            early += 1  # on the target before its 201 had reached the client
            lag = 0.0
        lags.append(lag)
    return {"entries": len(lags), "not_covered": uncovered, "covered_before_ack": early,
            "checkpoints_seen": len(seen), "lag_ms": _percentiles(lags)}


def _pubload(server_url: str, requests: Path, rate: float, duration_s: float, connections: int,
             acks_path: Path) -> dict:
    argv = [sys.executable, "-m", "bench.pubload", "--url", server_url, "--requests", str(requests),
            "--rate", str(rate), "--duration", str(duration_s), "--connections", str(connections),
            "--acks", str(acks_path)]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    if out.returncode != 0 or MARKER not in out.stdout:
        raise RuntimeError(f"pubload failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.split(MARKER, 1)[1].strip().splitlines()[0])


def _lag(env: BenchEnv, mode, weed: SeaweedFS, base: Path, log) -> dict:
    rate = mode.static_rate
    db_name = "bench_static_lag"
    url = env.database(db_name, fresh=True)
    run_dir = _fresh(env.runs / "static_lag")
    public = _fresh(base / "lag_public")
    prefix = "lag"
    proc = _serve(env, run_dir, url, publication_toml(directory=public, s3=(weed.endpoint_url, prefix)))
    requests = bundle_file(env, ALGORITHM, mode.bundles)
    # Enough that the connections never cap the rate: at 1,000/s with a commit latency of
    # 100-150 ms (both targets, a busy machine) about 150 are in flight; 64 capped it at ~850/s.
    connections = max(mode.connections)
    duration = mode.warmup_s + mode.duration_s
    log(f"static lag: {rate}/s for {duration:g} s to a server publishing to a directory and to SeaweedFS")
    bucket_url = weed.public_url(BUCKET, prefix)
    with proc.start() as server:
        _wait("both targets' first checkpoint", lambda: _read_file(public / "checkpoint") is not None
              and _read_url(bucket_url + "/checkpoint") is not None, timeout_s=60)
        watchers = {"directory": Watcher("dir", path=public), "s3": Watcher("s3", url=bucket_url)}
        for w in watchers.values():
            w.start()
        cpu0 = server.cpu_seconds()
        try:
            load = _pubload(server.url, requests, rate, duration, connections, run_dir / "acks.txt")
            load["server_cpu_cores"] = round((server.cpu_seconds() - cpu0) / load["duration_s"], 3)
            with open(run_dir / "acks.txt") as f:
                acks = [(int(i), float(t)) for i, t in (line.split() for line in f)]
            last = max((i for i, _ in acks), default=-1)
            _wait("both targets to cover the last acknowledged entry",
                  lambda: all(w.size() > last for w in watchers.values()), timeout_s=120, interval_s=0.01)
        finally:
            for w in watchers.values():
                w.stop()
    env.drop_database(db_name)
    after = load["started_at"] + mode.warmup_s
    result = {"asked_rps": rate, "load": load, "targets": "directory and S3 (SeaweedFS) at once, one server",
              "poll_ms": {"directory": DIR_POLL_S * 1000, "s3": URL_POLL_S * 1000}, "warmup_s": mode.warmup_s}
    for name, w in watchers.items():
        result[name] = lag_stats(acks, w.seen, after)
        result[name]["polls"] = w.polls
        result[name]["poll_failures"] = w.failures
    return result


# --- 3. submissions with publishing on / off ----------------------------------------------------

# Which targets each run publishes to, in order. "none" and "both" alternate, so that the
# machine's drift between runs lands on both sides of the target's ratio (of the means);
# one run with each target alone says which of them costs what (context, no target).
ON_OFF_SCHEDULE = ("none", "both", "directory", "none", "both", "s3", "none")


def _catch_up_s(server, public: Path | None, bucket_url: str | None, timeout_s: float = 300) -> float:
    """Seconds until the targets hold a checkpoint as large as the one the server serves
    (read again each time: submissions still in flight when the load generator stopped
    may commit after it)."""
    def caught_up() -> bool:
        size = _served_size(server)
        return (public is None or (_size_of(_read_file(public / "checkpoint")) or -1) >= size) \
            and (bucket_url is None or (_size_of(_read_url(bucket_url + "/checkpoint")) or -1) >= size)
    return round(_wait("the targets to catch up", caught_up, timeout_s), 2)


def _on_off(env: BenchEnv, mode, loadgen, weed: SeaweedFS, base: Path, log) -> dict:
    c = max(mode.connections)
    requests = bundle_file(env, ALGORITHM, mode.bundles)
    runs = []
    for i, targets in enumerate(ON_OFF_SCHEDULE):
        tag = f"static_submit_{i}"
        db_name = f"bench_{tag}"
        url = env.database(db_name, fresh=True)
        run_dir = _fresh(env.runs / tag)
        public = _fresh(base / f"submit_public_{i}") if targets in ("both", "directory") else None
        prefix = f"submit-{i}"
        bucket_url = weed.public_url(BUCKET, prefix) if targets in ("both", "s3") else None
        extra = "" if targets == "none" else publication_toml(
            directory=public, s3=(weed.endpoint_url, prefix) if bucket_url else None)
        log(f"static submissions: {c} connections, publishing to {targets}")
        with _serve(env, run_dir, url, extra).start() as server:
            res = loadgen.run(server.url, requests, connections=c, duration_s=mode.duration_s, server=server)
            if targets != "none":
                res["catch_up_s"] = _catch_up_s(server, public, bucket_url)
        env.drop_database(db_name)
        res["targets"] = targets
        runs.append(res)
        time.sleep(0.5)

    def mean(which):
        rates = [r["ok_rps"] for r in runs if r["targets"] == which]
        return sum(rates) / len(rates)
    off, on = mean("none"), mean("both")
    return {"algorithm": ALGORITHM, "connections": c, "runs": runs, "off_rps": round(off, 1),
            "on_rps": round(on, 1), "ratio": round(on / off, 3) if off else None,
            "alone_vs_off": {t: round(mean(t) / off, 3) if off else None for t in ("directory", "s3")}}


# --- 4. static reads during a PostgreSQL outage ---------------------------------------------------

def _outage(env: BenchEnv, mode, loadgen, weed: SeaweedFS, base: Path, log) -> dict:
    pg = PrivatePostgres(_fresh(base / "outage_pg"))
    run_dir = _fresh(env.runs / "static_outage")
    public = _fresh(base / "outage_public")
    prefix = "outage"
    bucket_url = weed.public_url(BUCKET, prefix)
    bucket_path = urllib.parse.urlsplit(bucket_url).path
    result: dict = {"outage_s": mode.outage_s}
    try:
        proc = _serve(env, run_dir, pg.url, publication_toml(directory=public, s3=(weed.endpoint_url, prefix)))
        with proc.start() as server, Nginx(public, run_dir / "nginx").start() as nginx:
            entries = tail_of(bundle_file(env, ALGORITHM, mode.bundles), mode.outage_entries)
            log(f"static outage: submitting {mode.outage_entries:,} entries")
            # Closed loop, each bundle once: wrk runs out of them in about a second per 1,000 here.
            loadgen.run(server.url, entries, connections=16, duration_s=max(2.0, mode.outage_entries / 500))
            size = _served_size(server)
            _catch_up_s(server, public, bucket_url)
            paths = ["checkpoint", *(tile_path(t) for t in (*tiles_for_size(size), *entries_tiles_for_size(size)))]
            rng = random.Random(4)
            lines = [rng.choice(paths) for _ in range(max(1000, mode.read_requests // 10))]
            files = {"nginx": write_requests(run_dir / "nginx.tsv", (("GET", "/" + p) for p in lines)),
                     "s3": write_requests(run_dir / "s3.tsv", (("GET", f"{bucket_path}/{p}") for p in lines))}
            result.update(size=size, objects=len(paths))
            lead = max(1.0, mode.duration_s / 5)
            duration = lead + mode.outage_s + 3.0 + lead  # the stop and the start take ~1-3 s between them
            log(f"static outage: reading {len(paths)} objects through nginx and the bucket for {duration:g} s, "
                f"PostgreSQL stopped for {mode.outage_s:g} s after {lead:g} s")
            with ThreadPoolExecutor(2) as pool:
                started = time.monotonic()
                reads = {"nginx": pool.submit(loadgen.run, nginx.url, files["nginx"], connections=16,
                                              duration_s=duration, wrap=True),
                         "s3": pool.submit(loadgen.run, weed.endpoint_url, files["s3"], connections=16,
                                           duration_s=duration, wrap=True)}
                time.sleep(lead)
                pg.stop()
                down = time.monotonic()
                ready = _readyz(server)
                time.sleep(mode.outage_s)
                up = time.monotonic()
                pg.start()
                result["reads"] = {k: f.result() for k, f in reads.items()}
            result.update(pg_down_at_s=round(down - started, 2), pg_up_at_s=round(up - started, 2),
                          pg_down_for_s=round(up - down, 2), readyz_during=ready, read_duration_s=duration)
            for r in result["reads"].values():
                errors = sum(r["socket_errors"].values())
                failed = r["requests"] - r["ok"] + errors
                r["non_2xx"] = r["requests"] - r["ok"]
                r["succeeded_share"] = round(r["ok"] / (r["ok"] + failed), 6) if r["ok"] + failed else None
            _wait("the server to see PostgreSQL again", lambda: _readyz(server) == 200, timeout_s=60)
    finally:
        pg.remove()
    return result


def _readyz(server) -> int | None:
    try:
        with urllib.request.urlopen(server.url + "/readyz", timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def run_static(env: BenchEnv, mode, loadgen, log) -> dict:
    ensure_nginx()
    base = env.data_dir / "static"
    base.mkdir(exist_ok=True)
    base.chmod(0o755)
    result: dict = {"reads": _reads(env, mode, loadgen, base, log)}
    log("static: starting SeaweedFS")
    weed = SeaweedFS(_fresh(base / "weed"))
    started = time.monotonic()
    with weed.start():
        result["seaweedfs_startup_s"] = round(time.monotonic() - started, 2)
        weed.create_bucket(BUCKET)
        result["lag"] = _lag(env, mode, weed, base, log)
        result["submissions"] = _on_off(env, mode, loadgen, weed, base, log)
        result["outage"] = _outage(env, mode, loadgen, weed, base, log)
    return result
