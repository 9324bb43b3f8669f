"""A directory target: the static tree as files, served by nginx (deploy/nginx/).

The layout is the URL layout: `<root>/checkpoint`, `<root>/tile/0/x001/234.p/7`, ...
Every write goes through a temporary file in the same directory, whose name starts
with `.tmp-` (deploy/nginx/logserver.conf never serves dotfiles):

* an immutable object is written to its temporary file (created exclusively),
  fsynced, then link(2)ed to its name. link fails if the name exists, so an object is
  never replaced (rename(2) would silently replace it); an existing one is compared
  byte for byte instead. The temporary name is then removed;
* `sync` fsyncs every directory on the way from each object to the root, so the
  objects (and the directories made for them) survive a crash before the checkpoint
  names them; also for an object found already there, whose pass may have died
  before its own `sync`;
* the checkpoint is written to a temporary file, fsynced, and renamed over
  `checkpoint` (atomic: readers see the old or the new one), then the root directory
  is fsynced. Publishers on one host serialise on an flock of `.checkpoint.lock`,
  and each re-reads the checkpoint under the lock: it is replaced only if it is still
  what the publisher read (`replace_checkpoint`).

* a mutable object (a fleet-head proof, `put_many`) is written to a temporary file in
  `<root>/.staging/` and renamed over its name (atomic: readers see the old or the new
  one); `sync` fsyncs its directory. The file itself is not fsynced: a pass may rewrite
  ten thousand of them, and each is rewritten in full by the next pass that writes it,
  so one lost to a crash (empty, or the previous proof) costs a reader one failed fetch
  until then, which the reader detects (it verifies the proof).

All file work runs in a thread, off the event loop.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
from pathlib import Path

from ..config import user_name
from .targets import CHECKPOINT_PATH, ObjectConflictError, StaticObject, TargetError

LOCK_NAME = ".checkpoint.lock"
PUT_TMP = ".staging"  # temporary files (.tmp-*) of `put_many`, kept out of the directories nginx serves


class DirectoryTarget:
    def __init__(self, name: str, root: Path):
        self.name = name
        self.root = root
        self._dirty: set[Path] = set()  # directories with entries not yet fsynced

    def describe(self) -> str:
        return f"directory {self.root}"

    async def check(self) -> None:
        await asyncio.to_thread(self._check)

    def _check(self) -> None:
        where = f"publication target {self.name!r}: directory {self.root}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise TargetError(f"{where} is not a directory") from None
        except OSError as e:
            raise TargetError(f"{where} cannot be created: {e.strerror or e}") from None
        if not self.root.is_dir():
            raise TargetError(f"{where} is not a directory")
        probe = self.root / f".tmp-check-{secrets.token_hex(8)}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise TargetError(
                f"{where} is not writable by user {user_name()}: {e.strerror or e}; "
                "make it theirs or choose another path") from None

    async def create(self, obj: StaticObject) -> bool:
        return await asyncio.to_thread(self._create, obj)

    def _create(self, obj: StaticObject) -> bool:
        final = self.root / obj.path
        parent = final.parent
        self._make_dirs(parent)
        tmp = parent / f".tmp-{final.name}-{secrets.token_hex(8)}"
        _write_synced(tmp, obj.data)
        try:
            try:
                os.link(tmp, final)
            except FileExistsError:
                existing = final.read_bytes()
                if existing != obj.data:
                    raise ObjectConflictError(
                        self.name, obj.path, f"exists with other bytes ({len(existing)} bytes, want "
                        f"{len(obj.data)}); it is never overwritten: find out who changed it "
                        "(logserver fsck --target)") from None
                created = False
            else:
                created = True
        finally:
            os.unlink(tmp)
        # Every directory from the object's up to the root is fsynced before the checkpoint
        # names it, also when it was there already: a pass killed before its own sync may
        # have linked the object or made a directory on the way (sync fsyncs each once).
        self._dirty.update(d for d in (parent, *parent.parents) if d.is_relative_to(self.root))
        return created

    def _make_dirs(self, directory: Path) -> None:
        missing = []
        d = directory
        while not d.is_dir():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            with contextlib.suppress(FileExistsError):  # another publisher made it meanwhile
                d.mkdir()

    async def put_many(self, objs: list[StaticObject]) -> None:
        await asyncio.to_thread(self._put_many, objs)

    def _put_many(self, objs: list[StaticObject]) -> None:
        # One thread hop for the lot: per object it is an open, a write and a rename.
        tmp_dir = self.root / PUT_TMP
        made: set[Path] = set()
        for obj in objs:
            final = self.root / obj.path
            for d in (final.parent, tmp_dir):
                if d not in made:
                    self._make_dirs(d)
                    made.add(d)
            tmp = tmp_dir / f".tmp-{secrets.token_hex(8)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(obj.data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            try:
                os.replace(tmp, final)
            except BaseException:
                os.unlink(tmp)
                raise
            self._dirty.update(d for d in (final.parent, *final.parent.parents) if d.is_relative_to(self.root))

    async def sync(self) -> None:
        dirty, self._dirty = self._dirty, set()
        if dirty:
            try:
                await asyncio.to_thread(_fsync_dirs, sorted(dirty))
            except BaseException:
                self._dirty |= dirty  # not known to be durable: sync them again next time
                raise

    async def read(self, path: str) -> bytes | None:
        return await asyncio.to_thread(_read_or_none, self.root / path)

    async def read_checkpoint(self) -> tuple[bytes | None, object]:
        data = await self.read(CHECKPOINT_PATH)
        return data, data

    async def replace_checkpoint(self, data: bytes, version: object) -> bool:
        return await asyncio.to_thread(self._replace_checkpoint, data, version)

    def _replace_checkpoint(self, data: bytes, version: object) -> bool:
        fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by close, also when the process dies
            if _read_or_none(self.root / CHECKPOINT_PATH) != version:
                return False
            tmp = self.root / f".tmp-{CHECKPOINT_PATH}-{secrets.token_hex(8)}"
            _write_synced(tmp, data)
            try:
                os.rename(tmp, self.root / CHECKPOINT_PATH)
            except BaseException:
                os.unlink(tmp)
                raise
            _fsync_dirs([self.root])
            return True
        finally:
            os.close(fd)

    async def close(self) -> None:
        pass


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)


def _fsync_dirs(dirs: list[Path]) -> None:
    for d in dirs:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
