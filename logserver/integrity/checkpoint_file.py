"""The latest signed checkpoint, kept outside the database.

A log restored from an old database backup would happily sign a new history
from the old size: the classic way logs fork. So the server also records the
newest checkpoint it has signed in a small file in the data directory, written
atomically (temp file, fsync, rename, fsync of the directory), and at start-up
refuses a database that is behind it (see server start-up checks).
"""
from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..formats.strict import json_uint, strict_json


class CheckpointFileError(RuntimeError):
    """The checkpoint file exists but cannot be read as one."""


@dataclass(frozen=True)
class SavedCheckpoint:
    tree_size: int
    signed_at_ms: int
    note: str


def read_checkpoint_file(path: Path) -> SavedCheckpoint | None:
    """The saved checkpoint, or None if the file does not exist yet."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    what = f"checkpoint file {path} is unreadable"
    obj = strict_json(raw, what, CheckpointFileError)
    if not isinstance(obj, dict) or set(obj) != {"tree_size", "signed_at_ms", "note"} \
            or not isinstance(obj["note"], str):
        raise CheckpointFileError(f"{what}: want an object of tree_size, signed_at_ms and note")
    return SavedCheckpoint(json_uint(obj["tree_size"], f"{what}: tree_size", CheckpointFileError),
                           json_uint(obj["signed_at_ms"], f"{what}: signed_at_ms", CheckpointFileError), obj["note"])


def save_checkpoint_file(path: Path, cp: SavedCheckpoint) -> bool:
    """Replace the saved checkpoint with `cp` if `cp` is newer; return whether it was written.

    Several server processes may share one data directory, and they finish
    their commits in any order, so the replace happens under an exclusive lock
    and only moves forward (larger size, or same size and later time). Durable
    on return: the data and the rename are fsynced.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            current = read_checkpoint_file(path)
        except CheckpointFileError:
            current = None
        if current is not None and (current.tree_size, current.signed_at_ms) >= (cp.tree_size, cp.signed_at_ms):
            return False
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        data = json.dumps({"tree_size": cp.tree_size, "signed_at_ms": cp.signed_at_ms, "note": cp.note}).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return True
