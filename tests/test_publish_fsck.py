"""`logserver fsck --target NAME` (logserver/publish/audit.py, docs/cli.md): a
publication target checked against the database, run as an operator runs it (a child
process, `python -m logserver.cli fsck`).

The module's log is published once to a directory (target "public"); each case checks
a copy of it, with the config's target "public" pointing at the copy (so the progress
PostgreSQL recorded for "public" is compared with it), after one change:
* nothing: exit 0, every object counted, the progress row agreeing;
* a flipped bit in a hash tile, in an entry bundle; an object deleted: exit 1, each
  named by its path with got and want (size and SHA-256) and where it first differs;
* the checkpoint replaced: by another key's, by a split view (the log's key, another
  root), by an older checkpoint of this log (the target restored from an old backup:
  PostgreSQL records more than it holds), or deleted: exit 1, named;
* an unknown target name: exit 2 naming the configured ones; a target that cannot be
  read: exit 6; neither prints a traceback.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from logserver.keys.log_key import LogKey
from logserver.merkle import EntriesTileID, TileID, tile_path
from memory_target import needed_paths
from publish_support import PublishLog, publish_log_fixture, static_tree
from server_harness import ORIGIN, write_config

PRIVATE = Ed25519PrivateKey.from_private_bytes(b"\x23" * 32)
KEY = LogKey(ORIGIN, PRIVATE)
PEM = PRIVATE.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
log = publish_log_fixture(KEY)

SIZE = 700  # level-0 tiles and bundles 0 and 1 full, 2 partial; a partial level-1 tile


@pytest.fixture(scope="module")
async def pristine(log, tmp_path_factory) -> tuple[Path, int]:
    """The log at SIZE published to a directory as target "public": (its root, its size)."""
    from logserver.publish.directory import DirectoryTarget

    await log.append(300)  # (a checkpoint of an older size, for a target "restored from a backup")
    await log.append(SIZE - log.latest.tree_size - 1)  # one batch: its bundles and its HEADS leaf
    root = tmp_path_factory.mktemp("pristine") / "public"
    publisher = log.publisher(DirectoryTarget("public", root))
    await publisher.publish(log.latest)
    assert (await log.progress.progress("public")).tree_size == SIZE
    await log.append(5)  # the log moves on: the target is behind, which is no problem
    return root, SIZE


def target_table(name: str, path: Path) -> str:
    return f'[[publication.targets]]\nname = "{name}"\ntype = "directory"\npath = "{path}"\n'


async def fsck(database_url: str, tmp_path: Path, target_path: Path, *extra: str,
               name: str = "public") -> tuple[int, str, str]:
    """Run `logserver fsck --target NAME` in a child process: (status, stdout, stderr)."""
    config = write_config(tmp_path / "config", database_url, key_pem=PEM,
                          extra=target_table("public", target_path) + target_table("other", tmp_path / "other"))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "logserver.cli", "fsck", "--config", str(config), "--target", name, "--quiet",
        *extra, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert "Traceback" not in out.decode() + err.decode(), err.decode()
    return proc.returncode, out.decode(), err.decode()


def copy_of(pristine: tuple[Path, int], tmp_path: Path) -> Path:
    root = tmp_path / "target"
    shutil.copytree(pristine[0], root)
    return root


def problems(out: str) -> list[str]:
    return [line.removeprefix("PROBLEM: ") for line in out.splitlines() if line.startswith("PROBLEM: ")]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_a_clean_target_passes(log, database_url, pristine, tmp_path):
    _root, size = pristine
    status, out, err = await fsck(database_url, tmp_path, copy_of(pristine, tmp_path))
    objects = len(needed_paths(size))
    assert status == 0, out + err
    assert problems(out) == []
    assert out.splitlines()[-1] == (f"fsck: target 'public' (directory {tmp_path / 'target'}): checkpoint size {size}; "
                                    f"{objects} objects checked; no problems")
    assert f"fsck: PostgreSQL records size {size} as published to this target, as it holds" in out
    assert log.latest.tree_size == size + 6  # five bundles and their batch's HEADS leaf
    assert f"fsck: the log's latest checkpoint has size {log.latest.tree_size}: the target is 6 entries behind" in out


@pytest.mark.parametrize("kind", ["hash tile", "upper-level tile", "entry bundle", "partial entry bundle"])
async def test_a_corrupted_object_is_named_with_where_it_differs(log, database_url, pristine, tmp_path, kind):
    _, size = pristine
    path = {"hash tile": tile_path(TileID(0, 1)), "upper-level tile": tile_path(TileID(1, 0, size // 256)),
            "entry bundle": tile_path(EntriesTileID(0)),
            "partial entry bundle": tile_path(EntriesTileID(size // 256, size % 256))}[kind]
    root = copy_of(pristine, tmp_path)
    want = (root / path).read_bytes()
    assert want == static_tree(*await log.leaves(size))[path]  # (the copy is what the log gives)
    at = 40 if kind != "upper-level tile" else 33
    got = bytearray(want)
    got[at] ^= 0x10
    (root / path).write_bytes(bytes(got))
    status, out, err = await fsck(database_url, tmp_path, root)
    assert status == 1, out + err
    where = f"first difference at byte {at}" + (" (hash 1)" if "tile" in kind else "")
    assert problems(out) == [f"{path}: differs: got {len(got)} bytes, sha256 {sha(bytes(got))}, want {len(want)} "
                             f"bytes, sha256 {sha(want)}; {where}"], out
    assert out.splitlines()[-1].endswith("1 problem(s)"), out


async def test_missing_objects_are_each_named(log, database_url, pristine, tmp_path):
    _, size = pristine
    root = copy_of(pristine, tmp_path)
    gone = [tile_path(TileID(0, size // 256, size % 256)), tile_path(EntriesTileID(1))]
    wants = {p: (root / p).read_bytes() for p in gone}
    for p in gone:
        (root / p).unlink()
    status, out, err = await fsck(database_url, tmp_path, root)
    assert status == 1, out + err
    assert sorted(problems(out)) == sorted(f"{p}: missing (want {len(w)} bytes, sha256 {sha(w)})"
                                           for p, w in wants.items()), out


def checkpoints(log: PublishLog, size: int) -> dict[str, bytes]:
    cp = log.latest
    other = LogKey(ORIGIN, Ed25519PrivateKey.from_private_bytes(b"\x24" * 32))
    return {
        "another key's": other.sign_checkpoint(size, cp.root, cp.signed_at_ms).encode(),
        "a split view": KEY.sign_checkpoint(size, bytes(32), cp.signed_at_ms).encode(),
    }


@pytest.mark.parametrize("case", ["another key's", "a split view", "an older one of this log", "deleted"])
async def test_a_replaced_checkpoint_is_named(log, database_url, pristine, tmp_path, case):
    _, size = pristine
    root = copy_of(pristine, tmp_path)
    if case == "deleted":
        (root / "checkpoint").unlink()
    elif case == "an older one of this log":  # the target restored from an old backup
        older = [c for c in await log.store.checkpoints(0, 10_000) if 0 < c.tree_size < size][-1]
        (root / "checkpoint").write_text(older.note)
        for path, data in static_tree(*await log.leaves(older.tree_size)).items():  # the backup had its objects
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(data)
    else:
        (root / "checkpoint").write_bytes(checkpoints(log, size)[case])
    status, out, err = await fsck(database_url, tmp_path, root)
    assert status == 1, out + err
    found = problems(out)
    assert len(found) == 1, out
    want = {
        "another key's": r"^checkpoint: is not a checkpoint of this log signed by its key \(.+\)$",
        "a split view": rf"^checkpoint: has size {size} with root 0{{64}}, but the log signed root [0-9a-f]{{64}} "
                        r"for that size: a split view on the target$",
        "an older one of this log": rf"^PostgreSQL records size {size} \(root [0-9a-f]{{64}}\) as published to "
                                    rf"this target, but its checkpoint has size \d+: the target lost what it had",
        "deleted": rf"^checkpoint: missing, but PostgreSQL records size {size} \(root [0-9a-f]{{64}}\) as "
                   r"published to this target",
    }[case]
    assert re.search(want, found[0]), found[0]
    summary = {"another key's": "a checkpoint that does not match the log; 0 objects checked",
               "a split view": "a checkpoint that does not match the log; 0 objects checked",
               "deleted": "no checkpoint; 0 objects checked"}.get(case, "; 5 objects checked")
    assert out.splitlines()[-1].endswith(f"{summary}; 1 problem(s)"), out


async def test_an_unknown_target_is_a_usage_error_naming_the_configured_ones(database_url, pristine, tmp_path):
    status, out, err = await fsck(database_url, tmp_path, pristine[0], name="nosuch")
    assert status == 2, out + err
    line = err.splitlines()[-1]
    assert line.startswith("logserver fsck: error: --target nosuch: ") and line.endswith(
        "has no publication target of that name ([[publication.targets]] configured: other, public)"), err


async def test_a_target_that_cannot_be_read_exits_6(database_url, tmp_path):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_bytes(b"")
    status, out, err = await fsck(database_url, tmp_path, not_a_directory)
    assert status == 6, out + err
    assert err.splitlines() == [f"logserver fsck: error: publication target 'public' (directory {not_a_directory}): "
                                f"cannot read checkpoint: NotADirectoryError: [Errno 20] Not a directory: "
                                f"'{not_a_directory / 'checkpoint'}'"], err
