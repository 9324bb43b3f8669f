"""Check a log's storage end to end and locate any corruption.

Recomputes every leaf hash from the stored bytes, every hash tile from the
leaves, and every signed checkpoint's root; verifies every checkpoint's
signature. Prints progress to stderr and each problem with its exact location
(leaf index, or tile level/index/position). Exit status 0 when clean, 1 when a
problem was found. Read-only: safe while the server runs. The one exception is
the server's tile cache file (data_dir/cache/tiles-level0.bin): its slots are
checked against the leaves too, and one that differs is dropped (a cache entry
made from a tile that was corrupted then, or from before a restore; after a
repair or restore of the database, deleting data_dir/cache/ is as good).

With --target NAME, checks that publication target instead (a
[[publication.targets]] of the config): its checkpoint must be this log's (signed
by its key, with the database's root for its size), and every tile and entry
bundle that checkpoint needs must be there with the bytes recomputed from the
database's leaves; each object missing or different is named. Also compares what
PostgreSQL records as published there. Exit status 0 when clean, 1 when a problem
was found, 6 when the target cannot be read. Read-only, for the target too.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..config import Config, TargetConfig, load_config, user_name
from ..integrity.fsck import fsck
from ..keys.log_key import LogKey
from ..publish import LogKeyVerifiers
from ..publish.audit import TargetAudit, TargetReadError, audit_target
from ..publish.build import make_target
from ..read.tile_file import FILE_NAME, TileFile, log_binding
from ..storage import Store
from ..storage.publication import PublicationStore
from .errors import FileAccessError, TargetAccessError, UsageError
from .preflight import create_checked_pool, resolve_database

HELP = "verify stored leaves, tiles and checkpoints; locate corruption"
EXAMPLES = """\
  logserver fsck --config logserver.toml
  logserver fsck --config logserver.toml --quiet && echo clean
  logserver fsck --config logserver.toml --target public     # the [[publication.targets]] named public
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=Path, help="server config file (TOML)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--target", metavar="NAME",
                   help="check the publication target of this name (its checkpoint and every object it needs) "
                        "against the database, instead of the database itself")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    target = _target_config(config, args) if args.target is not None else None
    key = LogKey.from_config(config)
    url = resolve_database(config)
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if args.quiet or (now - last[0] < 1 and done != total):
            return
        last[0] = now
        pct = 100.0 * done / total if total else 100.0
        print(f"fsck: {done:,} / {total:,} leaves ({pct:.1f}%)", file=sys.stderr, flush=True)

    if target is not None:
        return _run_target(config, target, key, url, progress)

    async def go():
        pool = await create_checked_pool(config, url, min_size=1, max_size=2)
        tile_file = None
        try:
            store = Store(pool)
            first = await store.checkpoints(0, 1)
            if first:  # never created or truncated here: only the server's own file, if any
                binding = log_binding(config.origin, key.public_key_bytes, first[0].note)
                tile_file = _open_tile_file(config.data_dir / FILE_NAME, binding)
            return await fsck(store, key.verifiers(), progress=progress, tile_file=tile_file)
        finally:
            if tile_file is not None:
                tile_file.close()
            await pool.close()

    report = asyncio.run(go())
    for p in report.problems:
        print(f"PROBLEM: {p}")
    if report.cache_slots_checked:
        print(f"fsck: tile cache file {config.data_dir / FILE_NAME}: {report.cache_slots_checked} slots checked, "
              f"{len(report.cache_slots_dropped)} stale ones dropped"
              + (f" (first: tile {report.cache_slots_dropped[0]})" if report.cache_slots_dropped else ""))
    print(f"fsck: tree size {report.tree_size}: {report.leaves_checked} leaves, {report.tiles_checked} tiles, "
          f"{report.checkpoints_checked} checkpoints checked; "
          + ("no problems" if report.ok else f"{len(report.problems)} problem(s)"))
    return 0 if report.ok else 1


def _open_tile_file(path: Path, binding: bytes) -> TileFile | None:
    try:
        return TileFile.open_existing(path, binding)
    except OSError as e:
        user = user_name()
        raise FileAccessError(
            f"cannot open the tile cache file {path} to check it: {e.strerror}; run fsck as the user the "
            f"server runs as (this is {user}), or delete {path.parent} (a cache, refilled from the database)"
        ) from None


def _target_config(config: Config, args: argparse.Namespace) -> TargetConfig:
    targets = {t.name: t for t in config.publication.targets}
    if args.target not in targets:
        configured = ", ".join(sorted(targets)) if targets else "none"
        raise UsageError(f"--target {args.target}: {args.config} has no publication target of that name "
                         f"([[publication.targets]] configured: {configured})")
    return targets[args.target]


def _run_target(config: Config, target_config: TargetConfig, key: LogKey, url: str,
                progress: Callable[[int, int], None]) -> int:
    """fsck --target: the publication target against the database (publish/audit.py)."""
    async def go() -> TargetAudit:
        pool = await create_checked_pool(config, url, min_size=1, max_size=2)
        target = make_target(target_config)
        try:
            return await audit_target(target, store=Store(pool), progress=PublicationStore(pool),
                                      verifiers=LogKeyVerifiers.of(key),
                                      on_progress=progress)
        finally:
            await target.close()
            await pool.close()

    try:
        report = asyncio.run(go())
    except TargetReadError as e:
        raise TargetAccessError(str(e)) from None
    for p in report.problems:
        print(f"PROBLEM: {p}")
    for note in report.notes:
        print(f"fsck: {note}")
    if report.checkpoint_size is not None:
        size = f"checkpoint size {report.checkpoint_size}"
    else:
        size = "a checkpoint that does not match the log" if report.checkpoint_present else "no checkpoint"
    print(f"fsck: target {report.target!r} ({report.where}): {size}; {report.objects_checked} objects checked; "
          + ("no problems" if report.ok else f"{len(report.problems)} problem(s)"))
    return 0 if report.ok else 1
