"""Checks a server makes before it serves or signs anything.

* identity: the database belongs to this origin and log key (storage.open_log);
* stale restore: the database is not behind the newest checkpoint this server
  has signed, as recorded in the data directory's checkpoint file, and extends
  it consistently;
* integrity: the stored tiles reproduce the latest checkpoint's root (the frontier
  check of integrity/frontier.py, which the sequencer makes before every signature).
Each failure raises StartupError with a message that says what to do.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from ..formats.checkpoint import open_checkpoint
from ..formats.note import NoteVerifier
from ..merkle import MerkleError, verify_consistency
from ..read.tree_reader import TreeReader
from ..storage import CheckpointRow
from .checkpoint_file import read_checkpoint_file
from .frontier import FrontierError, check_frontier, frontier_tile_keys

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The server must not start; the message says why."""


async def check_not_stale(reader: TreeReader, checkpoint_file: Path, verifiers: Iterable[NoteVerifier]) -> None:
    # The file first, then the database: a file is written only after its checkpoint
    # committed, so read in this order they are comparable even while other
    # processes sharing this data directory keep committing (the other order can see
    # a file newer than the database it just read).
    saved = read_checkpoint_file(checkpoint_file)
    latest = await reader.refresh_latest()
    if saved is None:
        return
    try:
        cp, _ = open_checkpoint(saved.note.encode(), verifiers)
    except Exception as e:
        raise StartupError(
            f"the saved checkpoint in {checkpoint_file} is not signed by this log's key ({e}); "
            "is this data directory from another log?"
        ) from None
    if cp.size > latest.tree_size:
        raise StartupError(
            f"the database is behind the newest checkpoint this server signed: database size "
            f"{latest.tree_size}, signed size {cp.size} (recorded in {checkpoint_file}). "
            "It looks restored from an old backup; signing from it would fork the log, and the entries "
            f"from size {latest.tree_size} on were acknowledged. Restore a database that holds at least "
            f"{cp.size} entries (a newer backup, the synchronous standby, or the WAL archive replayed "
            "to its end), then start again; do not delete or edit the checkpoint file to get past this "
            "(docs/operations.md, \"Backup and restore\")."
        )
    try:
        proof = await reader.consistency_proof(cp.size, latest.tree_size)
        verify_consistency(cp.size, latest.tree_size, cp.root, latest.root, proof)
    except MerkleError as e:
        raise StartupError(
            f"the database's tree (size {latest.tree_size}) is not consistent with the checkpoint this "
            f"server signed at size {cp.size}: {e}. The database holds another history; refusing to start."
        ) from None


async def check_tiles(reader: TreeReader) -> CheckpointRow:
    """The stored right edge reproduces the latest checkpoint (integrity/frontier.py,
    the check the sequencer also makes before every signature). Reads the database
    itself, never a cache: O(log n) tiles, so start-up stays fast at any size."""
    latest = await reader.refresh_latest()
    stored = await reader.store.read_tiles(frontier_tile_keys(latest.tree_size))
    try:
        check_frontier(latest.tree_size, latest.root, stored, checkpoint="latest checkpoint")
    except FrontierError as e:
        raise StartupError(f"{e}. Run `logserver fsck` to locate the corruption.") from None
    return latest
