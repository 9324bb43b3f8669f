"""Replaying logged envelopes costs the log nothing lasting (issue 23, section 1).

Logged envelopes are public: anyone can resubmit them. A batch of duplicates (and
refusals) only is an idle tick: it signs no checkpoint, stores no row and asks no
witness unless the checkpoint is due anyway. Before, one client made ~274
checkpoint rows a second this way with the tree size unchanged.
"""
from __future__ import annotations

import pytest

from bundle_factory import BundleFactory
from independent_merkle import check_inclusion
from logserver.api.keys import STORE
from logserver.formats.checkpoint import parse_checkpoint
from logserver.formats.note import parse_note
from server_harness import start_server, write_config

JSON = {"Content-Type": "application/json"}
REPLAYS = 100


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory):
    # The idle re-sign would add a row every interval: make it long, so every row
    # this test sees was caused by a submission.
    cfg = write_config(tmp_path_factory.mktemp("replay"), database_url,
                       extra="[sequencer]\ncheckpoint_interval_s = 3600\n")
    s = await start_server(cfg)
    yield s
    await s.close()


async def checkpoint_rows(server) -> int:
    return await server.app[STORE].pool.fetchval("SELECT count(*) FROM checkpoints")


async def post(server, body: bytes) -> tuple[int, dict]:
    async with server.session.post("/v1/bundles", data=body, headers=JSON) as resp:
        return resp.status, await resp.json()


async def test_replayed_envelopes_sign_and_store_nothing(server):
    factory = BundleFactory(fleet_id="replayed")
    first, second = factory.envelope_json(sequence=0), factory.envelope_json(sequence=5)
    # Each bundle is submitted alone: its batch appends it and a HEADS leaf
    # (docs/fleet-heads.md), so the tree holds four leaves.
    for n, body in enumerate((first, second)):
        status, receipt = await post(server, body)
        assert status == 201 and (receipt["index"], receipt["tree_size"]) == (2 * n, 2 * n + 2), receipt
    rows = await checkpoint_rows(server)
    for i in range(REPLAYS):
        status, receipt = await post(server, first if i % 2 else second)
        assert status == 200 and receipt["duplicate"] is True, receipt
        cp = parse_checkpoint(parse_note(receipt["checkpoint"]).text)
        assert cp.size == 4 and receipt["index"] in (0, 2), receipt
        check_inclusion(receipt["index"], cp.size, bytes.fromhex(receipt["leaf_hash"]),
                        [bytes.fromhex(h) for h in receipt["inclusion_proof"]], cp.root)
    # Refusals cost nothing either: an older sequence than the fleet's head, and another
    # payload for a logged sequence.
    status, error = await post(server, factory.envelope_json(sequence=3))
    assert status == 409 and error["error"]["code"] == "rollback", error
    status, error = await post(server, factory.envelope_json(sequence=0, not_after="2099-01-01T00:00:00Z"))
    assert status == 409 and error["error"]["code"] == "equivocation", error
    assert await checkpoint_rows(server) == rows


async def test_a_new_entry_after_replays_is_signed_as_usual(server):
    rows = await checkpoint_rows(server)
    status, receipt = await post(server, BundleFactory(fleet_id="after-replays").envelope_json())
    assert status == 201
    assert await checkpoint_rows(server) == rows + 1
    # The new bundle at index 4, then its batch's HEADS leaf.
    assert receipt["index"] == 4
    assert parse_checkpoint(parse_note(receipt["checkpoint"]).text).size == 6
