"""Static publication to a directory (issue 19): the published tree is byte-identical
to what the server's own tlog-tiles routes serve, written once, checkpoint last."""
from __future__ import annotations

import pytest

from logserver.api.keys import STORE
from logserver.formats.checkpoint import parse_checkpoint
from logserver.formats.note import parse_note
from publish_support import envelopes, read_file, submit, tree_paths, wait_for
from server_harness import start_server, write_config


def publication(path: str, name: str = "dir") -> str:
    return f'[[publication.targets]]\nname = "{name}"\ntype = "directory"\npath = "{path}"\n'


@pytest.fixture(scope="module")
async def published(database_url, tmp_path_factory):
    directory = tmp_path_factory.mktemp("publish-dir")
    cfg = write_config(directory, database_url, extra=publication("public"))
    server = await start_server(cfg)
    yield server, directory / "public"
    await server.close()


async def served(server, path: str) -> bytes:
    async with server.session.get("/" + path, headers={"Accept-Encoding": "identity"}) as resp:
        assert resp.status == 200, f"{path}: {resp.status}"
        return await resp.read()


async def test_published_tree_is_byte_identical_to_the_routes(published):
    server, root = published
    # Enough for full tiles and bundles at level 0 and a partial at level 1, in several batches.
    for chunk in range(3):
        await submit(server.session, server.url, envelopes(120, f"dir-fleet-{chunk}"))
    served_checkpoint = await served(server, "checkpoint")

    async def caught_up() -> bool:
        return read_file(root, "checkpoint") == await served(server, "checkpoint")

    await wait_for("the directory's checkpoint to be the served one", caught_up)
    checkpoint = read_file(root, "checkpoint")
    assert checkpoint is not None
    size = parse_checkpoint(parse_note(checkpoint).text).size
    assert size >= 360 and size >= parse_checkpoint(parse_note(served_checkpoint).text).size
    paths = tree_paths(size)
    assert "tile/0/000" in paths and "tile/entries/000" in paths and any(p.startswith("tile/1/") for p in paths)
    for path in paths:
        assert read_file(root, path) == await served(server, path), path


async def test_no_temporary_files_are_left_and_progress_is_recorded(published):
    server, root = published
    assert [str(p) for p in root.rglob(".tmp-*")] == []
    checkpoint = parse_checkpoint(parse_note(read_file(root, "checkpoint")).text)
    row = await server.app[STORE].pool.fetchrow("SELECT * FROM publication_progress WHERE target = 'dir'")
    assert (row["tree_size"], bytes(row["root"])) == (checkpoint.size, checkpoint.root)
