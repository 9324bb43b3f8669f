"""End to end: submit a dual-signed bundle and verify the receipt offline."""
from __future__ import annotations

import pytest

from bundle_factory import BundleFactory
from logserver.bundle import encode_leaf, parse_envelope
from logserver.formats.checkpoint import open_checkpoint
from logserver.formats.note import Ed25519NoteVerifier
from logserver.merkle import leaf_hash, verify_inclusion
from server_harness import start_server, write_config


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory):
    cfg = write_config(tmp_path_factory.mktemp("e2e"), database_url)
    s = await start_server(cfg)
    yield s
    await s.close()


async def test_submit_and_verify_receipt_offline(server):
    factory = BundleFactory(fleet_id="e2e-fleet")
    body = factory.envelope_json()
    resp = await server.session.post("/v1/bundles", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 201, await resp.text()
    receipt = await resp.json()
    assert receipt["duplicate"] is False
    info = await (await server.session.get("/v1/log")).json()
    verifier = Ed25519NoteVerifier.from_vkey(info["verifier_key"])
    cp, _ = open_checkpoint(receipt["checkpoint"].encode(), [verifier])
    assert cp.size == receipt["tree_size"]
    lh = leaf_hash(encode_leaf(parse_envelope(body)))
    assert lh.hex() == receipt["leaf_hash"]
    verify_inclusion(receipt["index"], cp.size, lh, [bytes.fromhex(h) for h in receipt["inclusion_proof"]], cp.root)
