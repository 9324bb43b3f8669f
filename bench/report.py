"""Writing results: JSON (everything), Markdown (tables + targets) and PNG plots."""
from __future__ import annotations

import json
from pathlib import Path


def _best(rows, key="ok_rps"):
    return max(rows, key=lambda r: r["server"][key]) if rows else None


def evaluate_targets(results: dict) -> list[dict]:
    """Issue 6's targets, each with the measured value and met / missed / not measured."""
    out = []

    def target(name, value, want, ok):
        out.append({"target": name, "measured": value, "want": want,
                    "status": "not measured" if ok is None else ("met" if ok else "missed")})

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
    return out


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
        out.append(f"two workers: with one worker the machine was already busy {one.get('machine_cpu_busy_cores', '-')} "
                   f"of {cpus} cores (the server {one.get('server_cpu_cores')}, the load generator "
                   f"{one.get('loadgen_cpu_cores')}, other processes such as PostgreSQL the rest); a second worker has no core "
                   "of its own to run on.")
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
            out.append(f"inclusion proofs at {size:,}: {row['vs_same_size'].get('inclusion', '-') if same else '-'} of the "
                       f"minimal handler answering a body of the same length; the p99 is measured at {c} connections "
                       f"in a closed loop, where the p50 is about {c} / rate ({1000 * c / inc['ok_rps']:.1f} ms at "
                       f"{inc['ok_rps']:.0f}/s) and even the hello-world's p99 is {spread:.1f}x its p50.")
        if status.get(f"hash tiles at {size:,} leaves / hello-world GET") == "missed" and same.get("tile"):
            out.append(f"hash tiles at {size:,}: {same['tile']} of the minimal handler answering "
                       f"{row['body_bytes']['tile']} bytes, which itself runs at "
                       f"{row['same_size']['tile']['ok_rps'] / hello_rps:.2f} of the hello-world.")
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
        lines.append(f"| {t['target']} | {t['measured'] or '-'} | {t['want']} | {t['status']} |")
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
        lines += ["", "## 2. serve --workers N", ""] + _workers_table(workers, m["cpus_usable"], ceiling=True)
        inline = results.get("workers_one_process_each") or []
        if inline:
            lines += ["", "Each worker one process (`verify_processes = 0`: it checks submissions on its own event "
                      "loop, like each process of the ceiling), same load:", ""]
            lines += _workers_table(inline, m["cpus_usable"], ceiling=False)
    reads = results.get("reads") or []
    if reads:
        lines += ["", "## 3. Reads (uniformly random over the whole tree) and 4. scale", "",
                  "`vs same-size body`: the route's rate over the ceiling app's answering a fixed body "
                  "of the same length (`/bytes/{n}`; in brackets its rate and n), which is what the answer's size alone "
                  "costs aiohttp and the kernel.", "",
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
        lines += ["", f"## 5. Merkle core vs pymerkle {merkle['pymerkle_version']} ({merkle['leaves']:,} leaves"
                  + (f", best of {merkle['rounds']} rounds, ours and pymerkle's alternating" if merkle.get("rounds") else "")
                  + ")", "",
                  "| operation | logserver ops/s | pymerkle ops/s | speed-up |", "|---|---|---|---|"]
        for r in merkle["rows"]:
            lines.append(f"| {r['operation']} | {r['logserver_per_s']:,.0f} | {r['pymerkle_per_s']:,.0f} | "
                         f"{r['speedup']}x |")
    elif merkle.get("skipped"):
        lines += ["", f"## 5. Merkle core vs pymerkle: skipped ({merkle['skipped']})"]
    return "\n".join(lines) + "\n"


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
