"""Monitor a log: verify every checkpoint and entry, report alerts as JSON lines.

It reads the log's tlog-tiles tree at --tiles (the server, or a static copy: nginx, an
S3 bucket), which is all it needs; --log adds the server's JSON API as a second source
of consistency proofs. --tiles defaults to --log.

Alerts go to stdout, one JSON object per line (docs/client.md, "Monitor alerts").
With --once: catch up, print a summary (a JSON line on stdout, an explanation on
stderr) and exit 0 if no alert was raised, 1 if any was, 2 if the log could not be
read to the end.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from ..client import LogClient, LogClientError, StateError, TrustPolicy, TrustPolicyError
from ..client.files import exclusive_lock
from ..monitor import STATE_FILE, Monitor, MonitorMetrics, serve_metrics
from ..monitor.entries import EntryVerifier
from ._args import log_url
from .errors import CliError, UsageError

HELP = "monitor a log: verify every checkpoint and entry, alert on anything wrong"
EXAMPLES = """\
  logserver monitor --log http://127.0.0.1:8080 --policy trust.toml --state monitor-state --once
  logserver monitor --tiles http://127.0.0.1:9000/bucket/log --policy trust.toml --state monitor-state --once
  logserver monitor --log https://log.example --policy trust.toml --state /var/lib/monitor \
                    --watch-fleet fleet-1 --metrics-listen 127.0.0.1:9464
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log", type=log_url, metavar="URL",
                   help="the log's URL, e.g. http://127.0.0.1:8080: its tiles (unless --tiles) and its JSON API")
    p.add_argument("--tiles", type=log_url, metavar="URL",
                   help="read the checkpoint, tiles and entry bundles from URL: the log's tlog-tiles tree or a "
                        "static copy (nginx, an S3 bucket's public URL with its prefix); default --log. Alone, "
                        "the monitor needs no JSON API")
    p.add_argument("--policy", required=True, type=Path, help="trust policy TOML (docs/client.md)")
    p.add_argument("--state", required=True, type=Path, metavar="DIR", help="state directory (resumes from it)")
    p.add_argument("--watch-fleet", action="append", default=[], metavar="ID",
                   help="alert on every new bundle of this fleet")
    p.add_argument("--metrics-listen", type=_listen, metavar="HOST:PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics")
    p.add_argument("--once", action="store_true", help="catch up, print a summary and exit")
    p.add_argument("--max-checkpoint-age", type=float, default=3600.0, metavar="S",
                   help="alert when the log's latest checkpoint is older than S seconds (default 3600; 0 disables)")
    p.add_argument("--interval", type=float, default=5.0, metavar="S", help="seconds between polls (default 5)")
    p.add_argument("--verify-processes", type=int, default=0, metavar="N",
                   help="verify entry signatures in N child processes, several bundles at once "
                        "(default 0: in the monitor process, about as fast as one server appends)")


def _emit(alert: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(alert, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"want HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def run(args: argparse.Namespace) -> int:
    if not args.log and not args.tiles:
        raise UsageError("missing --tiles URL or --log URL: where to read the log's checkpoint and tiles")
    if not 0 <= args.verify_processes <= 256:
        raise UsageError(f"--verify-processes: want 0 to 256, got {args.verify_processes}")
    try:
        policy = TrustPolicy.load(args.policy)
    except TrustPolicyError as exc:
        raise CliError(str(exc)) from None
    listen = args.metrics_listen
    args.state.mkdir(parents=True, exist_ok=True)
    # One monitor per state directory: two would race on the state file.
    with exclusive_lock(args.state / "monitor.lock"):
        try:
            return asyncio.run(_main(args, policy, listen))
        except StateError as exc:
            raise CliError(str(exc)) from None


async def _main(args: argparse.Namespace, policy: TrustPolicy, listen: tuple[str, int] | None) -> int:
    metrics = MonitorMetrics()
    runner = await serve_metrics(metrics, *listen) if listen else None
    verifier = EntryVerifier(policy.authorities, args.verify_processes)
    try:
        async with LogClient(args.log, tiles_url=args.tiles) as client:
            monitor = Monitor(
                client, policy, args.state / STATE_FILE, watch=args.watch_fleet,
                max_checkpoint_age=args.max_checkpoint_age or None, emit=_emit, metrics=metrics,
                verifier=verifier,
            )
            if args.once:
                return await _once(monitor, _source(client))
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await monitor.run(args.interval, stop=stop)
            return 0
    finally:
        verifier.close()
        if runner is not None:
            await runner.cleanup()


def _source(client: LogClient) -> str:
    if not client.has_api:
        return f"{client.tiles_url} (tiles only, no JSON API)"
    if client.tiles_url != client.api_url:
        return f"{client.tiles_url} (tiles; JSON API at {client.api_url})"
    return client.tiles_url


async def _once(monitor: Monitor, url: str) -> int:
    error = None
    try:
        caught_up = await monitor.poll_once()
    except LogClientError as exc:
        caught_up, error = False, str(exc)
    summary = monitor.summary()
    summary["error"] = error
    _emit(summary)
    print(explain(summary, url, monitor), file=sys.stderr)
    if summary["alerts"]:
        return 1
    return 0 if caught_up and error is None else 2


def _coverage_lines(coverage: dict[str, Any]) -> list[str]:
    if not coverage["witnesses"]:
        return []
    n = coverage["checkpoints"]
    per = ", ".join(f"{name} {c['cosigned']}/{n}" for name, c in coverage["witnesses"].items())
    return [f"  cosignature coverage this run: {n} checkpoint(s) seen, {coverage['quorum_met']} with the quorum; {per}"]


def _heads_line(heads: dict[str, Any] | None) -> str:
    if heads is None:
        return ("  fleet heads: NOT checked: the state file predates the monitor's fold of the heads table "
                "(start with a fresh --state directory to check HEADS leaves)")
    last = heads["last_heads_leaf"]
    return (f"  fleet heads: table folded from the bundles, {heads['fleets']} fleets; "
            f"{heads['heads_leaves_checked']} HEADS leaves compared with it this run"
            + ("; the log has written no HEADS leaf yet" if last is None else
               f"; the last at index {last}, and a checkpoint that ends without one is alerted"))


def explain(summary: dict[str, Any], url: str, monitor: Monitor) -> str:
    """A human account of what this run checked."""
    lines = [f"Monitored {url} (origin {summary['origin']!r}):"]
    if summary["checkpoint_size"] is None:
        lines.append("  no verified checkpoint yet")
    else:
        quorum = monitor.policy.tlog.quorum
        lines += [
            f"  checkpoint: size {summary['checkpoint_size']}, root {summary['checkpoint_root']}",
            "    signed by a log key of the policy; signed at "
            f"{summary['checkpoint_signed_at'] or 'unknown (no time line)'}",
            "    log signatures verified: " + (", ".join(summary["log_signatures"]) or "none reported")
            + (" (ML-DSA-44 required by the trust policy)" if monitor.policy.require_log_mldsa44 else ""),
            f"    witness quorum {quorum!r}: " + ("nothing required" if quorum == "none" else
                                                 f"met by {summary['witnesses']}"),
            f"    {summary['checkpoint_check']}",
            *_coverage_lines(summary["cosignature_coverage"]),
            f"  entries verified this run: {summary['entries_verified']} (decoded, both authority signatures "
            "checked, leaf hash compared with the level-0 tile, fleet sequences tracked)",
            f"  root recomputed from the entries themselves: {summary['verified_root']} over "
            f"{summary['verified_size']} entries" + (" = the checkpoint root" if summary["caught_up"] else
                                                     " (not caught up to the checkpoint)"),
            f"  fleets seen: {summary['fleets']}",
            _heads_line(summary["heads"]),
        ]
    if summary.get("error"):
        lines.append(f"  ERROR: {summary['error']}")
    if summary["alerts"]:
        lines.append("  ALERTS: " + ", ".join(f"{k} x{n}" for k, n in summary["alerts"].items())
                     + " (JSON lines on stdout)")
    else:
        lines.append("  no alerts")
    return "\n".join(lines)
