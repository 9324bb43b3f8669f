"""Writing results: JSON (everything), Markdown (tables + targets) and PNG plots."""
from __future__ import annotations

import json
from pathlib import Path


def _best(rows, key="ok_rps"):
    return max(rows, key=lambda r: r["server"][key]) if rows else None


def evaluate_targets(results: dict) -> list[dict]:
    """Issue 6's targets, each with the measured value and met / missed / not measured."""
    out = []

    def target(name, value, want, ok, by=None):
        out.append({"target": name, "measured": value, "want": want,
                    "status": "not measured" if ok is None else ("met" if ok else "missed")})
        if by is not None and ok is not None:
            out[-1]["by"] = by

    subs = results.get("submissions") or []
    for algorithm in sorted({r["algorithm"] for r in subs}):
        rows = [r for r in subs if r["algorithm"] == algorithm]
        best = _best(rows)
        ceil = max(r["ceiling"]["ok_rps"] for r in rows)
        ratio = best["server"]["ok_rps"] / ceil if ceil else None
        target(f"single process, {algorithm}: durable submissions / verify-only ceiling",
               None if ratio is None else f"{ratio:.2f} ({best['server']['ok_rps']:.0f}/s vs {ceil:.0f}/s)",
               ">= 0.8", None if ratio is None else ratio >= 0.8)
    workers = [w for w in results.get("workers") or [] if "server" in w]
    one = next((w for w in workers if w["workers"] == 1), None)
    two = next((w for w in workers if w["workers"] == 2), None)
    if one and two and one["server"]["ok_rps"]:
        scale = two["server"]["ok_rps"] / one["server"]["ok_rps"]
        target("two workers / one worker", f"{scale:.2f} ({two['server']['ok_rps']:.0f}/s vs "
               f"{one['server']['ok_rps']:.0f}/s)", ">= 1.5", scale >= 1.5)
    else:
        target("two workers / one worker", None, ">= 1.5", None)
    for lat in results.get("latency") or []:
        r = lat["result"]
        target(f"submission p99 at half the best throughput, {lat['algorithm']}",
               f"{r['latency_ms']['p99']:.1f} ms at {r['ok_rps']:.0f}/s (asked {lat['target_rps']:.0f}/s)",
               "<= 50 ms", r["latency_ms"]["p99"] <= 50)
    reads = results.get("reads") or []
    for row in reads:
        inc = row["kinds"]["inclusion"]
        target(f"inclusion proofs at {row['size']:,} leaves / hello-world GET",
               f"{row['vs_hello']['inclusion']:.2f}, p99 {inc['latency_ms']['p99']:.1f} ms",
               ">= 0.5, p99 <= 10 ms", row["vs_hello"]["inclusion"] >= 0.5 and inc["latency_ms"]["p99"] <= 10)
        target(f"hash tiles at {row['size']:,} leaves / hello-world GET", f"{row['vs_hello']['tile']:.2f}",
               ">= 0.7", row["vs_hello"]["tile"] >= 0.7)
    if len(reads) >= 2:
        small, large = reads[0], reads[-1]
        p_small = small["kinds"]["inclusion"]["latency_ms"]["p50"]
        p_large = large["kinds"]["inclusion"]["latency_ms"]["p50"]
        ratio = p_large / p_small if p_small else None
        target(f"inclusion p50 at {large['size']:,} / at {small['size']:,}",
               None if ratio is None else f"{ratio:.2f} ({p_large:.2f} ms vs {p_small:.2f} ms)",
               "<= 1.5", None if ratio is None else ratio <= 1.5)
    if reads:
        big = reads[-1]
        label = f"at {big['size']:,} leaves"
        target(f"peak RSS {label}", f"{big['rss_after_reads']['peak_rss_mb']:.0f} MB", "<= 300 MB",
               big["rss_after_reads"]["peak_rss_mb"] <= 300)
        target(f"start-up {label}", f"{big['startup_s']:.2f} s", "<= 3 s", big["startup_s"] <= 3)
        if big["size"] < 10_000_000:
            target("RSS and start-up at 10,000,000 leaves", None, "<= 300 MB, <= 3 s", None)
    merkle = results.get("merkle") or {}
    for r in merkle.get("rows", []):
        if r["operation"] in ("append", "inclusion proof", "consistency proof"):
            target(f"Merkle core {r['operation']} / pymerkle", f"{r['speedup']:.2f}x", ">= 3x", r["speedup"] >= 3)
    static_targets(results.get("static"), target)
    heads_targets(results.get("heads"), target)
    pq = results.get("pq") or {}
    if pq.get("log_mldsa44_ratio") is not None:
        ratio = pq["log_mldsa44_ratio"]
        target("submissions with the log's ML-DSA-44 checkpoint signature on / off", f"{ratio:.3f}", ">= 0.95",
               ratio >= 0.95, by=_margin(ratio, 0.95))
    return out


def _margin(value: float, bound: float) -> str:
    """How far `value` is from `bound`, in percent of the bound: above it or below it."""
    diff = (value - bound) / bound * 100
    return f"{abs(diff):.0f}% {'above' if diff >= 0 else 'below'} the bound"


def static_targets(static: dict | None, target) -> None:
    """Issue 19's targets (section 6), each with by how much it was met or missed."""
    if not static:
        return
    for row in static.get("reads") or []:
        m = row["mean_rps"]
        ratio = row["tiles_vs_same"]
        target(f"static: nginx full tiles / nginx same-size file, {row['size']:,} leaves",
               f"{ratio:.2f} ({m['nginx tile']:.0f}/s vs {m['nginx same']:.0f}/s)", ">= 0.9", ratio >= 0.9,
               _margin(ratio, 0.9))
        x = row["nginx_vs_logserver"]
        target(f"static: nginx full tiles / logserver's /tile route, {row['size']:,} leaves",
               f"{x:.2f}x ({m['nginx tile']:.0f}/s vs {m['logserver tile']:.0f}/s)", ">= 5x",
               x >= 5, _margin(x, 5))
    lag = static.get("lag")
    if lag:
        load = lag["load"]
        rate = (f"at {load['ok_rps']:.0f}/s" + ("" if load["ok_rps"] >= 0.95 * lag["asked_rps"] else
                f", short of the asked {lag['asked_rps']}/s"))
        for key, name, bound in (("directory", "a directory", 250), ("s3", "SeaweedFS (S3)", 1000)):
            p99 = lag[key]["lag_ms"].get("p99")
            if p99 is None:
                target(f"static: publication lag p99 to {name}, 1,000 submissions/s", None, f"<= {bound} ms", None)
                continue
            target(f"static: publication lag p99 to {name}, 1,000 submissions/s",
                   f"{p99:.0f} ms (p50 {lag[key]['lag_ms']['p50']:.0f}, max {lag[key]['lag_ms']['max']:.0f}) {rate}",
                   f"<= {bound} ms", p99 <= bound, _margin(p99, bound))
    subs = static.get("submissions")
    if subs and subs.get("ratio") is not None:
        on = subs["on_rps"]
        target(f"static: submissions publishing to both targets / to none ({subs['algorithm']}, "
               f"{subs['connections']} clients)", f"{subs['ratio']:.2f} ({on:.0f}/s vs {subs['off_rps']:.0f}/s)",
               ">= 0.9", subs["ratio"] >= 0.9, _margin(subs["ratio"], 0.9))
    outage = static.get("outage")
    if outage and outage.get("reads"):
        for key, name in (("nginx", "nginx"), ("s3", "the bucket")):
            r = outage["reads"][key]
            share = r["succeeded_share"]
            failed = r["non_2xx"] + sum(r["socket_errors"].values())
            target(f"static: reads through {name} succeeded while PostgreSQL was down {outage['pg_down_for_s']:.0f} s",
                   f"{share * 100:.3f}% of {r['ok'] + failed:,} ({r['non_2xx']} non-2xx, "
                   f"{sum(r['socket_errors'].values())} socket errors)", "100%", failed == 0,
                   "none failed" if failed == 0 else f"{failed:,} failed")


def heads_targets(heads: dict | None, target) -> None:
    """Issue 20's targets (section 7)."""
    if not heads:
        return
    for row in heads.get("proofs") or []:
        if row["fleets"] >= 10_000 and row["size"] >= 10_000_000:
            b = row["binary_bytes"]
            target(f"heads: fleet-head proof, binary, {row['fleets']:,} fleets x {row['size']:,} leaves",
                   f"{b['max']:,} bytes max (mean {b['mean']:,.0f}; JSON without the witness line "
                   f"{row['json_bytes_without_witness']['max']:,})", "<= 3,072 bytes", b["max"] <= 3072,
                   _margin(b["max"], 3072))
    for key in ("submissions", "submissions_known_fleets"):
        subs = heads.get(key)
        if not subs:
            continue
        load = subs.get("load", "new fleets")
        if subs.get("ratio") is not None:
            target(f"heads: submissions with HEADS leaves / without, {load} ({subs['algorithm']}, "
                   f"{subs['connections']} clients)",
                   f"{subs['ratio']:.3f} ({subs['on_rps']:.0f}/s vs {subs['off_rps']:.0f}/s)", ">= 0.95",
                   subs["ratio"] >= 0.95, _margin(subs["ratio"], 0.95))
        if subs.get("cpu_ratio") is not None:
            cpu = subs["server_cpu_ms_per_bundle"]
            target(f"heads: server CPU per bundle without HEADS leaves / with, {load} ({subs['algorithm']}, "
                   f"{subs['connections']} clients)",
                   f"{subs['cpu_ratio']:.3f} ({cpu['off']:.3f} ms vs {cpu['on']:.3f} ms)", ">= 0.95",
                   subs["cpu_ratio"] >= 0.95, _margin(subs["cpu_ratio"], 0.95))


def heads_markdown(heads: dict) -> list[str]:
    lines = ["", "## 7. Fleet heads", "",
             "Proofs (bench/heads.py): build rate and verify time in one process, sizes; the 10M-leaf trees are "
             "virtual (the proofs' leaves real, the other subtrees stand-in hashes: proof lengths and work are "
             "those of the real tree).", "",
             "| leaves | fleets | proofs | built/s | verify ms mean / p50 / p99 | hashes min-max | binary bytes "
             "mean / max | JSON bytes mean / max | JSON without the witness line, max | envelope JSON |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in heads.get("proofs") or []:
        v, h, b, j = r["verify_ms"], r["hashes"], r["binary_bytes"], r["json_bytes"]
        lines.append(f"| {r['size']:,} | {r['fleets']:,} | {r['proofs']} | {r['build_per_s']:,.0f} | "
                     f"{v['mean']} / {v['p50']} / {v['p99']} | {h['min']}-{h['max']} | {b['mean']:,.0f} / "
                     f"{b['max']:,} | {j['mean']:,.0f} / {j['max']:,} | {r['json_bytes_without_witness']['max']:,} | "
                     f"{r['envelope_json_bytes']['mean']:,.0f} |")
    for key in ("submissions", "submissions_known_fleets"):
        lines += _heads_ab_markdown(heads.get(key))
    return lines


def _heads_ab_markdown(subs: dict | None) -> list[str]:
    lines: list[str] = []
    if subs:
        load = subs.get("load", "new fleets")
        what = ("section 1's load, every bundle a new fleet" if load == "new fleets" else
                "bundles of 2,000 known fleets, each a fleet's next sequence")
        lines += ["", f"Submissions with HEADS leaves on and off, {load}: {what} ({subs['algorithm']}, "
                  f"{subs['connections']} clients, closed loop) on a fresh log each time, without the HEADS leaf "
                  "(bench/heads_off.py) and with it in ABBA order (as shown); the ratio is of the means: "
                  f"{subs['on_rps']:.0f}/s with, {subs['off_rps']:.0f}/s without ({subs['ratio']}). The server's "
                  f"CPU per appended bundle: {(subs.get('server_cpu_ms_per_bundle') or {}).get('on')} ms with, "
                  f"{(subs.get('server_cpu_ms_per_bundle') or {}).get('off')} ms without (off / on: "
                  f"{subs.get('cpu_ratio')}, steadier than req/s on a shared machine).", "",
                  "| HEADS leaves | req/s | statuses | p50 / p99 ms | server CPU | machine CPU | tree size after | "
                  "ends with a HEADS leaf |", "|---|---|---|---|---|---|---|---|"]
        for r in subs["runs"]:
            statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(r.get("statuses", {}).items()))
            lines.append(f"| {r['heads']} | {r['ok_rps']:.0f} | {statuses} | {_ms(r)} | {r.get('server_cpu_cores')} | "
                         f"{r.get('machine_cpu_busy_cores', '-')} | {r.get('tree_size', 0):,} | "
                         f"{'yes' if r.get('ends_with_heads_leaf') else 'no'} |")
    return lines


def miss_context(results: dict) -> list[str]:
    """For each missed target, what this run measured around it (facts, not excuses)."""
    status = {t["target"]: t["status"] for t in results.get("targets", [])}
    cpus = results["meta"]["machine"]["cpus_usable"]
    out = []
    for algorithm in sorted({r["algorithm"] for r in results.get("submissions") or []}):
        if status.get(f"single process, {algorithm}: durable submissions / verify-only ceiling") == "missed":
            best = _best([r for r in results["submissions"] if r["algorithm"] == algorithm])["server"]
            out.append(f"single process, {algorithm}: at its best rate the server used {best.get('server_cpu_cores')} "
                       f"cores and the machine {best.get('machine_cpu_busy_cores', '-')} of {cpus}.")
    workers = {w["workers"]: w for w in results.get("workers") or [] if "server" in w}
    if status.get("two workers / one worker") == "missed" and 1 in workers:
        one = workers[1]["server"]
        out.append(f"two workers: with one worker the machine was already busy "
                   f"{one.get('machine_cpu_busy_cores', '-')} of {cpus} cores (the server "
                   f"{one.get('server_cpu_cores')}, the load generator {one.get('loadgen_cpu_cores')}, other "
                   "processes such as PostgreSQL the rest); a second worker has no core of its own to run on.")
        inline = {w["workers"]: w["server"] for w in results.get("workers_one_process_each") or [] if "server" in w}
        if 1 in inline and 2 in inline and inline[1]["ok_rps"]:
            out.append(f"two workers of one process each (verify_processes = 0): {inline[2]['ok_rps']:.0f}/s vs "
                       f"{inline[1]['ok_rps']:.0f}/s, {inline[2]['ok_rps'] / inline[1]['ok_rps']:.2f}x (machine busy "
                       f"{inline[1].get('machine_cpu_busy_cores')} and {inline[2].get('machine_cpu_busy_cores')} "
                       f"of {cpus} cores).")
    for row in results.get("reads") or []:
        size = row["size"]
        inc = row["kinds"]["inclusion"]
        hello = row["kinds"]["hello"]
        hello_rps = row.get("hello_rps", hello["ok_rps"])
        same = row.get("vs_same_size") or {}
        if "hello_after" in row and any(status.get(f"{what} at {size:,} leaves / hello-world GET") == "missed"
                                        for what in ("inclusion proofs", "hash tiles")):
            out.append(f"hello-world at {size:,}: {hello['ok_rps']:.0f}/s before the server's runs and "
                       f"{row['hello_after']['ok_rps']:.0f}/s after them (the ratios use the mean): "
                       "how much the machine itself moved during the section.")
        if status.get(f"inclusion proofs at {size:,} leaves / hello-world GET") == "missed":
            c = inc["connections"]
            spread = hello["latency_ms"]["p99"] / hello["latency_ms"]["p50"] if hello["latency_ms"]["p50"] else 0
            vs_same = row["vs_same_size"].get("inclusion", "-") if same else "-"
            out.append(f"inclusion proofs at {size:,}: {vs_same} of the "
                       f"minimal handler answering a body of the same length; the p99 is measured at {c} connections "
                       f"in a closed loop, where the p50 is about {c} / rate ({1000 * c / inc['ok_rps']:.1f} ms at "
                       f"{inc['ok_rps']:.0f}/s) and even the hello-world's p99 is {spread:.1f}x its p50.")
        if status.get(f"hash tiles at {size:,} leaves / hello-world GET") == "missed" and same.get("tile"):
            out.append(f"hash tiles at {size:,}: {same['tile']} of the minimal handler answering "
                       f"{row['body_bytes']['tile']} bytes, which itself runs at "
                       f"{row['same_size']['tile']['ok_rps'] / hello_rps:.2f} of the hello-world.")
    out += static_miss_context(results.get("static") or {}, status, cpus)
    return out


def static_miss_context(static: dict, status: dict, cpus: int) -> list[str]:
    out = []
    for row in static.get("reads") or []:
        size = row["size"]

        def rates(server, what, row=row):
            return ", ".join(f"{r['ok_rps']:.0f}" for r in row["runs"] if (r["server"], r["what"]) == (server, what))

        def per_cpu(server, row=row):
            runs = [r for r in row["runs"]
                    if (r["server"], r["what"]) == (server, "tile") and r.get("server_cpu_cores")]
            return sum(r["ok_rps"] / r["server_cpu_cores"] for r in runs) / len(runs) if runs else float("nan")

        def cpu(server, what, key, row=row):
            return ", ".join(str(r.get(key)) for r in row["runs"] if (r["server"], r["what"]) == (server, what))
        if status.get(f"static: nginx full tiles / nginx same-size file, {size:,} leaves") == "missed":
            out.append(f"static reads at {size:,}: nginx's same-size file ran at {rates('nginx', 'same')}/s and its "
                       f"random tiles at {rates('nginx', 'tile')}/s, alternately (the ratio is of the means): how "
                       f"much the machine moved between runs.")
        if status.get(f"static: nginx full tiles / logserver's /tile route, {size:,} leaves") == "missed":
            out.append(f"static reads at {size:,}: for the random tiles nginx used "
                       f"{cpu('nginx', 'tile', 'server_cpu_cores')} "
                       f"cores with the load generator at {cpu('nginx', 'tile', 'loadgen_cpu_cores')} (one wrk "
                       f"thread) and the machine at {cpu('nginx', 'tile', 'machine_cpu_busy_cores')}; logserver "
                       f"used {cpu('logserver', 'tile', 'server_cpu_cores')} (one event loop). The machine has {cpus} "
                       "cores, shared by the server, the load generator and everything else. Per second of the "
                       f"server's own CPU: nginx {per_cpu('nginx'):,.0f} tiles, logserver {per_cpu('logserver'):,.0f} "
                       f"({per_cpu('nginx') / per_cpu('logserver'):.1f}x).")
    lag = static.get("lag")
    if lag and any(status.get(f"static: publication lag p99 to {name}, 1,000 submissions/s") == "missed"
                   for name in ("a directory", "SeaweedFS (S3)")):
        load = lag["load"]
        out.append(f"publication lag: the server used {load.get('server_cpu_cores')} cores at {load['ok_rps']:.0f} "
                   f"submissions/s; submissions themselves took p99 {load['latency_ms']['p99']:.0f} ms from their "
                   f"due time; the targets' checkpoints changed {lag['directory']['checkpoints_seen']} (directory) and "
                   f"{lag['s3']['checkpoints_seen']} (bucket) times.")
    subs = static.get("submissions")
    if subs and status.get(f"static: submissions publishing to both targets / to none ({subs['algorithm']}, "
                           f"{subs['connections']} clients)") == "missed":
        runs = ", ".join(f"{r['targets']} {r['ok_rps']:.0f}/s (server "
                         f"{r.get('server_cpu_cores')}, machine {r.get('machine_cpu_busy_cores')} cores)"
                         for r in subs["runs"])
        out.append(f"submissions with publishing, run by run: {runs}; the machine has {cpus} cores.")
    return out


def _workers_table(rows: list[dict], cpus: int, *, ceiling: bool) -> list[str]:
    """Markdown rows for section 2: one line per worker count (with the N-process ceiling's rate)."""
    cols = ["workers", "server req/s", "p50 / p99"] + (["ceiling (N processes) req/s"] if ceiling else []) + [
        "server CPU", f"machine CPU (of {cpus})"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for w in rows:
        if "server" not in w:
            out.append(f"| {w['workers']} | failed: {w['error'][:120]!r} |" + " |" * (len(cols) - 2))
            continue
        cells = [str(w["workers"]), f"{w['server']['ok_rps']:.0f}", _ms(w["server"])]
        cells += [f"{w['ceiling']['ok_rps']:.0f}"] if ceiling else []
        cells += [str(w["server"].get("server_cpu_cores")), str(w["server"].get("machine_cpu_busy_cores", "-"))]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _ms(r):
    return f"{r['latency_ms']['p50']:.1f} / {r['latency_ms']['p99']:.1f}"


def markdown(results: dict) -> str:
    meta = results["meta"]
    m = meta["machine"]
    lines = [f"# logserver benchmark results ({meta['mode']})", ""]
    if meta.get("provisional"):
        lines += [f"**PROVISIONAL**: {meta['provisional']}", ""]
    lines += [
        f"- when: {meta['started_at']} ({meta['elapsed_s']:.0f} s), commit {m.get('git_commit')}",
        f"- machine: {m['cpu_model']}, {m['cpus_usable']} usable CPUs, {m['memory_mb']} MB RAM, {m['platform']}",
        f"- load average before / after: {meta['load_before']} / {meta['load_after']}",
        f"- Python {m['python']}, PostgreSQL {m['postgresql']} (embedded, fsync on), "
        f"aiohttp {m['packages'].get('aiohttp')}, cryptography {m['packages'].get('cryptography')}",
        f"- load generator: {meta['loadgen']} ({m.get('wrk') or 'wrk not installed'}), same machine",
        f"- command: `{meta['command']}`",
        "",
        "## Targets (issue 6)", "",
        "| target | measured | want | status |", "|---|---|---|---|",
    ]
    for t in results["targets"]:
        status = t["status"] + (f" ({t['by']})" if t.get("by") else "")
        lines.append(f"| {t['target']} | {t['measured'] or '-'} | {t['want']} | {status} |")
    context = miss_context(results)
    if context:
        lines += ["", "Measured in this run around the missed targets (the README's Performance section says why):", ""]
        lines += [f"- {c}" for c in context]
    subs = results.get("submissions") or []
    if subs:
        lines += ["", "## 1. Submissions: POST /v1/bundles vs the verify-only ceiling", "",
                  "Durable (fsync) group commits, two real signatures per bundle; the ceiling only parses "
                  "the JSON and verifies the two signatures. Latency p50 / p99 in ms. CPU = cores used "
                  "by the server (all its processes), by the load generator, and by the whole machine "
                  "(everything busy, PostgreSQL included) during the server's run.", "",
                  "| authorities | clients | server req/s | p50 / p99 | ceiling req/s | p50 / p99 | ratio | "
                  "server CPU | loadgen CPU | machine CPU |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in subs:
            s, c = r["server"], r["ceiling"]
            lines.append(f"| {r['algorithm']} | {r['connections']} | {s['ok_rps']:.0f} | {_ms(s)} | "
                         f"{c['ok_rps']:.0f} | {_ms(c)} | {r['ratio']} | {s.get('server_cpu_cores')} | "
                         f"{s.get('loadgen_cpu_cores')} | {s.get('machine_cpu_busy_cores', '-')} |")
        for r in subs:
            bad = {k: v for k, v in r["server"]["statuses"].items() if k != "201"}
            if bad or r["server"]["ran_out_of_requests"]:
                lines.append(f"\nNote: {r['algorithm']} at {r['connections']} clients: other statuses {bad}"
                             f"{', ran out of unique bundles' if r['server']['ran_out_of_requests'] else ''}.")
    for lat in results.get("latency") or []:
        r = lat["result"]
        lines += ["", f"Latency at about half the best throughput ({lat['algorithm']}): asked "
                  f"{lat['target_rps']:.0f}/s, got {r['ok_rps']:.0f}/s with {r['connections']} paced clients: "
                  f"p50 {r['latency_ms']['p50']:.1f} ms, p99 {r['latency_ms']['p99']:.1f} ms."]
        if r.get("warmup"):
            w = r["warmup"]
            lines[-1] += (f" Measured after an untimed warm-up of {w['duration_s']:.0f} s at the same pace on the "
                          f"same server, right after its start-up: there p50 {w['latency_ms']['p50']:.1f} ms, "
                          f"p99 {w['latency_ms']['p99']:.1f} ms, max {w['latency_ms']['max']:.1f} ms.")
    workers = results.get("workers") or []
    if workers:
        lines += ["", "## 2. serve --workers N", "", *_workers_table(workers, m["cpus_usable"], ceiling=True)]
        inline = results.get("workers_one_process_each") or []
        if inline:
            lines += ["", "Each worker one process (`verify_processes = 0`: it checks submissions on its own event "
                      "loop, like each process of the ceiling), same load:", ""]
            lines += _workers_table(inline, m["cpus_usable"], ceiling=False)
    reads = results.get("reads") or []
    if reads:
        lines += ["", "## 3. Reads (uniformly random over the whole tree) and 4. scale", "",
                  "`vs same-size body`: the route's rate over the ceiling app's answering a fixed body "
                  "of the same length (`/bytes/{n}`; in brackets its rate and n), which is what the answer's "
                  "size alone costs aiohttp and the kernel.", "",
                  "`vs hello`: over the mean of the two hello-world runs, one before the server's runs "
                  "and one after the same-size bodies.", "",
                  "| leaves | kind | req/s | vs hello | vs same-size body | p50 / p99 ms |",
                  "|---|---|---|---|---|---|"]
        for row in reads:
            hello = row.get("hello_rps", row["kinds"]["hello"]["ok_rps"])
            for kind, r in row["kinds"].items():
                vs = f"{r['ok_rps'] / hello:.3f}" if kind == "hello" else row["vs_hello"][kind]
                same = row.get("same_size", {}).get(kind)
                same_txt = (f"{row['vs_same_size'][kind]} ({same['ok_rps']:.0f}/s at n = {row['body_bytes'][kind]})"
                            if same else "-")
                name = "hello (before)" if kind == "hello" and "hello_after" in row else kind
                lines.append(f"| {row['size']:,} | {name} | {r['ok_rps']:.0f} | {vs} | {same_txt} | {_ms(r)} |")
            if "hello_after" in row:
                r = row["hello_after"]
                lines.append(f"| {row['size']:,} | hello (after) | {r['ok_rps']:.0f} | {r['ok_rps'] / hello:.3f} "
                             f"| - | {_ms(r)} |")
        lines += ["", "| leaves | start-up s | tile file warm-up s | RSS after start MB | RSS after reads MB "
                  "| peak RSS MB | bulk load |", "|---|---|---|---|---|---|---|"]
        for row in reads:
            bl = row.get("bulk_load")
            load = f"{bl['leaves_per_s']:,.0f} leaves/s" if bl and bl.get("leaves_per_s") else "reused"
            lines.append(f"| {row['size']:,} | {row['startup_s']} | {row.get('tile_file_warm_s', '-')} | "
                         f"{row['rss_after_start']['rss_mb']} | "
                         f"{row['rss_after_reads']['rss_mb']} | {row['rss_after_reads']['peak_rss_mb']} | {load} |")
    merkle = results.get("merkle") or {}
    if merkle.get("rows"):
        rounds = f", best of {merkle['rounds']} rounds, ours and pymerkle's alternating" if merkle.get("rounds") else ""
        lines += ["", f"## 5. Merkle core vs pymerkle {merkle['pymerkle_version']} ({merkle['leaves']:,} leaves"
                  + rounds + ")", "",
                  "| operation | logserver ops/s | pymerkle ops/s | speed-up |", "|---|---|---|---|"]
        for r in merkle["rows"]:
            lines.append(f"| {r['operation']} | {r['logserver_per_s']:,.0f} | {r['pymerkle_per_s']:,.0f} | "
                         f"{r['speedup']}x |")
    elif merkle.get("skipped"):
        lines += ["", f"## 5. Merkle core vs pymerkle: skipped ({merkle['skipped']})"]
    if results.get("static"):
        lines += static_markdown(results["static"], m["cpus_usable"])
    if results.get("heads"):
        lines += heads_markdown(results["heads"])
    if results.get("pq"):
        lines += pq_markdown(results["pq"])
    return "\n".join(lines) + "\n"


def _pq_means(pq: dict):
    if pq.get("log_mldsa44_ratio_of_means") is not None:
        return pq["log_mldsa44_ratio_of_means"]
    rates = {flag: [r["server"]["ok_rps"] for r in pq["submissions"]
                    if r["algorithm"] == "ed25519" and r["log_mldsa44"] == flag] for flag in (False, True)}
    if not rates[False] or not rates[True]:
        return None
    return round((sum(rates[True]) / len(rates[True])) / (sum(rates[False]) / len(rates[False])), 3)


def pq_markdown(pq: dict) -> list[str]:
    """Section 7: what ML-DSA-44 costs (bench/pq.py)."""
    lines = ["", "## 8. ML-DSA-44: checkpoint signing, submissions, receipts (bench/pq.py)", "",
             "| checkpoint signed with | median µs | mean µs | note bytes |", "|---|---|---|---|"]
    for label, r in pq["signing"].items():
        lines.append(f"| {label} | {r['median_us']:,.0f} | {r['mean_us']:,.0f} | {r['note_bytes']:,} |")
    lines += ["", "| authorities | log ML-DSA-44 signature | req/s | p50 / p99 ms | server CPU |",
              "|---|---|---|---|---|"]
    for r in pq["submissions"]:
        s = r["server"]
        lines.append(f"| {r['algorithm']} | {'on' if r['log_mldsa44'] else 'off'} | {s['ok_rps']:.0f} | {_ms(s)} | "
                     f"{s.get('server_cpu_cores', 0):.2f} |")
    for algorithm, c in pq["ceiling"].items():
        lines.append(f"| {algorithm} (verify-only ceiling) | — | {c['ok_rps']:.0f} | {_ms(c)} | "
                     f"{c.get('server_cpu_cores', 0):.2f} |")
    lines += ["", f"Submissions with the log's ML-DSA-44 signature on / off (median of the rounds): "
              f"**{pq['log_mldsa44_ratio']}** (target >= 0.95); ratio of the means: {_pq_means(pq)}; per second "
              f"of server CPU: {pq.get('log_mldsa44_ratio_per_cpu')}; ML-DSA-44 / Ed25519 authorities (both with "
              f"it on): {pq['ml_dsa_44_authorities_ratio']}.", "",
              "| receipt | receipt bytes | checkpoint bytes | envelope bytes | verify median µs "
              "| log signatures verified |",
              "|---|---|---|---|---|---|"]
    for r in pq["receipts"]:
        lines.append(f"| {r['label']} | {r['receipt_bytes']:,} | {r['checkpoint_bytes']:,} | {r['envelope_bytes']:,} | "
                     f"{r['median_us']:,.0f} | {', '.join(r['log_signatures'])} |")
    return lines


def static_markdown(static: dict, cpus: int) -> list[str]:
    lines = ["", "## 6. Static publication (issue 19)"]
    reads = static.get("reads") or []
    if reads:
        lines += ["", "Each bulk-loaded read log published to a fresh directory by `logserver serve` with that "
                  "directory as its target (initial publication: spawn to the directory's checkpoint having the "
                  "log's size), then read with the same load generator and connections as section 3: "
                  "uniformly random full level-0 tiles and the checkpoint, from logserver's own routes, then from "
                  "nginx (deploy/nginx/logserver.conf, `worker_processes auto`, no access log) serving the "
                  "directory. `same-size file`: nginx answering one fixed full tile of the same directory (8,192 "
                  "bytes, same location block and headers; each request with a query string of its own, so "
                  "that the load generator's work per request is the same as for the random tiles). Runs in the "
                  "order shown, alternating so that the machine's drift lands on both sides of each ratio, "
                  "which is of the means; logserver stays up "
                  "(idle) while nginx runs. CPU in cores; the machine has " + str(cpus) + ".", "",
                  "| leaves | published in | server | what | req/s | p50 / p99 ms | server CPU | loadgen CPU | "
                  "machine CPU |", "|---|---|---|---|---|---|---|---|---|"]
        for row in reads:
            pub = f"{row['publication_s']} s ({row['published']['objects']:,} objects, {row['published']['mb']} MB)"
            names = {"tile": "random full tiles", "same": "same-size file", "checkpoint": "/checkpoint"}
            for i, r in enumerate(row["runs"]):
                lines.append(f"| {row['size']:,} | {pub if i == 0 else ''} | {r['server']} | {names[r['what']]} | "
                             f"{r['ok_rps']:.0f} | {_ms(r)} | {r.get('server_cpu_cores')} | "
                             f"{r.get('loadgen_cpu_cores')} | {r.get('machine_cpu_busy_cores', '-')} |")
        lines += [""] + [f"At {row['size']:,} leaves (means): nginx's tiles {row['mean_rps']['nginx tile']:.0f}/s, "
                         f"**{row['tiles_vs_same']}** of its same-size file ({row['fixed_path']}, "
                         f"{row['mean_rps']['nginx same']:.0f}/s) and **{row['nginx_vs_logserver']}x** logserver's "
                         f"tile route ({row['mean_rps']['logserver tile']:.0f}/s); the checkpoint "
                         f"{row['checkpoint_nginx_vs_logserver']}x. The server's tile file was warm "
                         f"{row['tile_file_warm_s']} s after the publication." for row in reads]
    lag = static.get("lag")
    if lag:
        load = lag["load"]
        lines += ["", f"Publication lag: one fresh log publishing to {lag['targets'].split(',')[0]}; paced "
                  f"submissions (bench/pubload.py, open loop, {load['connections']} connections) asked "
                  f"{lag['asked_rps']}/s and got **{load['ok_rps']:.0f}/s** ({load['acknowledged']:,} acknowledged, "
                  f"statuses {load['statuses']}, submission latency from the due time p50 "
                  f"{load['latency_ms']['p50']:.0f} ms / p99 {load['latency_ms']['p99']:.0f} ms, largest backlog "
                  f"{load['max_backlog']}, server CPU {load.get('server_cpu_cores')}). An entry's lag: the first "
                  f"time the target's checkpoint covered its index (polled every {lag['poll_ms']['directory']:g} ms "
                  f"on the directory's file, every {lag['poll_ms']['s3']:g} ms on the bucket's public URL) minus "
                  f"the time its 201 arrived; the first {lag['warmup_s']:g} s of acknowledgements left out.", "",
                  "| target | entries | lag p50 ms | p90 | p99 | max | checkpoints seen | covered before the 201 "
                  "arrived | not covered |", "|---|---|---|---|---|---|---|---|---|"]
        for key, name in (("directory", "directory"), ("s3", "SeaweedFS (S3)")):
            r = lag[key]
            ms = r["lag_ms"]
            lines.append(f"| {name} | {r['entries']:,} | {ms.get('p50', '-')} | {ms.get('p90', '-')} | "
                         f"{ms.get('p99', '-')} | {ms.get('max', '-')} | {r['checkpoints_seen']} | "
                         f"{r['covered_before_ack']} | {r['not_covered']} |")
    subs = static.get("submissions")
    if subs:
        lines += ["", f"Submissions with publishing on and off: section 1's load ({subs['algorithm']}, "
                  f"{subs['connections']} clients, closed loop) on a fresh log each time, alternately without "
                  "targets and with a directory and a bucket on SeaweedFS (in the order shown); the ratio is of the "
                  f"means: {subs['on_rps']:.0f}/s with both, {subs['off_rps']:.0f}/s without.", "",
                  "| publishing to | req/s | p50 / p99 ms | server CPU | machine CPU | targets caught up after "
                  "the load |", "|---|---|---|---|---|---|"]
        names = {"none": "none", "both": "both targets", "directory": "the directory alone",
                 "s3": "the bucket alone"}
        for r in subs["runs"]:
            lines.append(f"| {names[r['targets']]} | {r['ok_rps']:.0f} | {_ms(r)} | "
                         f"{r.get('server_cpu_cores')} | {r.get('machine_cpu_busy_cores', '-')} | "
                         f"{str(r['catch_up_s']) + ' s' if 'catch_up_s' in r else '-'} |")
        alone = subs.get("alone_vs_off") or {}
        if alone:
            lines += ["", f"One target alone, over the mean without: the directory {alone.get('directory')}, the "
                      f"bucket {alone.get('s3')} (one run each)."]
    outage = static.get("outage")
    if outage and outage.get("reads"):
        lines += ["", f"Static reads during a PostgreSQL outage: a log of {outage['size']:,} entries on a private "
                  f"PostgreSQL, publishing to both targets; the load generator read its {outage['objects']} "
                  f"published objects (checkpoint, tiles, entry bundles; random order) through nginx and through "
                  f"the bucket's public URL at once for {outage['read_duration_s']:g} s, and PostgreSQL was "
                  f"stopped from {outage['pg_down_at_s']} s to {outage['pg_up_at_s']} s into it (the log's /readyz "
                  f"then answered {outage['readyz_during']}).", "",
                  "| origin | reads | 2xx | non-2xx | socket errors | succeeded | req/s |",
                  "|---|---|---|---|---|---|---|"]
        for key, name in (("nginx", "nginx"), ("s3", "bucket (SeaweedFS)")):
            r = outage["reads"][key]
            lines.append(f"| {name} | {r['requests']:,} | {r['ok']:,} | {r['non_2xx']} | "
                         f"{sum(r['socket_errors'].values())} | {r['succeeded_share'] * 100:.3f}% | "
                         f"{r['ok_rps']:.0f} |")
    return lines


def plots(results: dict, out_dir: Path) -> list[str]:
    """PNG bar charts, one per section; none when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=90)
        plt.close(fig)
        written.append(name)

    subs = results.get("submissions") or []
    if subs:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        labels = [f"{r['algorithm']}\n{r['connections']} clients" for r in subs]
        x = range(len(subs))
        ax.bar([i - 0.2 for i in x], [r["server"]["ok_rps"] for r in subs], 0.4, label="logserver (durable)")
        ax.bar([i + 0.2 for i in x], [r["ceiling"]["ok_rps"] for r in subs], 0.4, label="verify-only ceiling")
        ax.set_xticks(list(x), labels, fontsize=8)
        ax.set_ylabel("submissions/s")
        ax.set_title("POST /v1/bundles")
        ax.legend(fontsize=8)
        save(fig, "submissions.png")
    reads = results.get("reads") or []
    if reads:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        kinds = ["hello", "inclusion", "consistency", "tile", "entries"]
        width = 0.8 / len(reads)
        for j, row in enumerate(reads):
            ax.bar([i + j * width for i in range(len(kinds))], [row["kinds"][k]["ok_rps"] for k in kinds], width,
                   label=f"{row['size']:,} leaves")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(kinds))], kinds)
        ax.set_ylabel("requests/s")
        ax.set_title("Reads (hello = hello-world GET ceiling)")
        ax.legend(fontsize=8)
        save(fig, "reads.png")
    merkle = results.get("merkle") or {}
    if merkle.get("rows"):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        rows = merkle["rows"]
        x = range(len(rows))
        ax.bar([i - 0.2 for i in x], [r["logserver_per_s"] for r in rows], 0.4, label="logserver.merkle")
        ax.bar([i + 0.2 for i in x], [r["pymerkle_per_s"] for r in rows], 0.4, label="pymerkle")
        ax.set_xticks(list(x), [r["operation"].replace(" (", "\n(") for r in rows], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("operations/s")
        ax.legend(fontsize=8)
        save(fig, "merkle.png")
    static_reads = (results.get("static") or {}).get("reads") or []
    if static_reads:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        bars = [(label.replace(" ", "\n", 1), lambda r, key=key: r["mean_rps"][key]) for label, key in (
            ("nginx same-size file", "nginx same"), ("nginx random tiles", "nginx tile"),
            ("nginx checkpoint", "nginx checkpoint"), ("logserver random tiles", "logserver tile"),
            ("logserver checkpoint", "logserver checkpoint"))]
        width = 0.8 / len(static_reads)
        for j, row in enumerate(static_reads):
            ax.bar([i + j * width for i in range(len(bars))], [f(row) for _, f in bars], width,
                   label=f"{row['size']:,} leaves")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(bars))], [b for b, _ in bars], fontsize=8)
        ax.set_ylabel("requests/s")
        ax.set_title("Static reads: nginx serving the published directory vs logserver")
        ax.legend(fontsize=8)
        save(fig, "static.png")
    workers = [w for w in results.get("workers") or [] if "server" in w]
    if workers:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        x = range(len(workers))
        ax.bar([i - 0.2 for i in x], [w["server"]["ok_rps"] for w in workers], 0.4, label="logserver")
        ax.bar([i + 0.2 for i in x], [w["ceiling"]["ok_rps"] for w in workers], 0.4, label="ceiling")
        ax.set_xticks(list(x), [f"{w['workers']} worker(s)" for w in workers])
        ax.set_ylabel("submissions/s")
        ax.legend(fontsize=8)
        save(fig, "workers.png")
    return written


def write(results: dict, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    results["targets"] = evaluate_targets(results)
    results["plots"] = plots(results, out_dir)
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "results.md"}
    paths["json"].write_text(json.dumps(results, indent=2) + "\n")
    paths["markdown"].write_text(markdown(results) + "".join(f"\n![{p}]({p})\n" for p in results["plots"]))
    return paths
