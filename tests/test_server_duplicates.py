"""Resubmissions are idempotent: the log holds each payload once, whatever the signatures."""
from __future__ import annotations

import asyncio
import json

import pytest

from bundle_factory import BundleFactory, make_envelope
from independent_merkle import check_inclusion
from logserver.formats.checkpoint import parse_checkpoint
from server_harness import start_server, write_config

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory):
    s = await start_server(write_config(tmp_path_factory.mktemp("dups"), database_url))
    yield s
    await s.close()


async def submit(server, body: bytes) -> tuple[int, dict]:
    async with server.session.post("/v1/bundles", data=body, headers=JSON) as resp:
        return resp.status, await resp.json()


async def tree_size(server) -> int:
    async with server.session.get("/v1/log") as resp:
        assert resp.status == 200
        return (await resp.json())["tree_size"]


async def all_entries(server) -> list[dict]:
    size = await tree_size(server)
    out: list[dict] = []
    while len(out) < size:
        async with server.session.get("/v1/entries", params={"start": len(out), "end": size}) as resp:
            assert resp.status == 200, await resp.text()
            out += (await resp.json())["entries"]
    assert [e["index"] for e in out] == list(range(size))
    return out


def canonical(envelope: dict) -> dict:
    """The envelope as the log stores it: the leaf keeps signatures in ascending keyid order."""
    return {**envelope, "signatures": sorted(envelope["signatures"], key=lambda s: s["keyid"].encode())}


def check_receipt(receipt: dict) -> None:
    """The receipt's inclusion proof leads to its checkpoint's root (independent check)."""
    cp = parse_checkpoint(receipt["checkpoint"].split("\n\n")[0] + "\n")
    assert cp.size == receipt["tree_size"]
    check_inclusion(receipt["index"], cp.size, bytes.fromhex(receipt["leaf_hash"]),
                    [bytes.fromhex(h) for h in receipt["inclusion_proof"]], cp.root)


async def test_identical_resubmission_is_a_duplicate(server):
    body = BundleFactory(fleet_id="dup-identical").envelope_json()
    status, first = await submit(server, body)
    assert status == 201, first
    assert first["duplicate"] is False
    size = await tree_size(server)

    status, again = await submit(server, body)
    assert status == 200, again
    assert again["duplicate"] is True
    assert (again["index"], again["leaf_hash"]) == (first["index"], first["leaf_hash"])
    assert "envelope" not in again  # the logged envelope is the one submitted
    check_receipt(again)
    assert await tree_size(server) == size


async def test_resigned_payload_is_a_duplicate_carrying_the_logged_envelope(server):
    payload = BundleFactory(fleet_id="dup-resigned").payload()
    logged, resigned = make_envelope(payload), make_envelope(payload)
    # ECDSA P-256 (the countersigner) signs with a fresh nonce: other bytes, other leaf.
    assert logged.to_json() != resigned.to_json()
    status, first = await submit(server, logged.to_json())
    assert status == 201, first
    size = await tree_size(server)

    status, dup = await submit(server, resigned.to_json())
    assert status == 200, dup
    assert dup["duplicate"] is True
    assert (dup["index"], dup["leaf_hash"]) == (first["index"], first["leaf_hash"])
    assert dup["envelope"] == canonical(logged.to_dict())
    assert dup["envelope"] != canonical(resigned.to_dict())
    check_receipt(dup)
    assert await tree_size(server) == size


async def test_twenty_concurrent_identical_submissions_add_one_leaf(server):
    body = BundleFactory(fleet_id="dup-concurrent").envelope_json()
    before = await tree_size(server)
    results = await asyncio.gather(*(submit(server, body) for _ in range(20)))

    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 19 + [201], results
    assert {(r["index"], r["leaf_hash"]) for _, r in results} == {(before, results[0][1]["leaf_hash"])}
    assert sorted(r["duplicate"] for _, r in results) == [False] + [True] * 19
    for _, r in results:
        check_receipt(r)
    # One bundle leaf, then the HEADS leaf ending its batch (docs/fleet-heads.md); the
    # duplicates append nothing, not even a HEADS leaf.
    assert await tree_size(server) == before + 2
    entries = await all_entries(server)
    assert [e["index"] for e in entries if e["leaf_hash"] == results[0][1]["leaf_hash"]] == [before]
    assert "heads" in entries[before + 1], entries[before + 1]


async def test_twenty_concurrent_resignings_of_one_payload_add_one_leaf(server):
    payload = BundleFactory(fleet_id="dup-concurrent-resigned").payload()
    bodies = [make_envelope(payload).to_json() for _ in range(20)]
    assert len(set(bodies)) == 20
    before = await tree_size(server)
    results = await asyncio.gather(*(submit(server, b) for b in bodies))

    assert sorted(status for status, _ in results) == [200] * 19 + [201], results
    (winner_body,) = [b for b, (status, _) in zip(bodies, results, strict=True) if status == 201]
    winner = next(r for status, r in results if status == 201)
    assert winner["index"] == before
    for status, r in results:
        assert (r["index"], r["leaf_hash"]) == (winner["index"], winner["leaf_hash"])
        if status == 200:
            assert r["envelope"] == canonical(json.loads(winner_body))
        check_receipt(r)
    assert await tree_size(server) == before + 2  # the bundle and its batch's HEADS leaf
    entries = await all_entries(server)
    assert "heads" in entries[before + 1], entries[before + 1]
    bundles = [e for e in entries if "envelope" in e]
    assert sum(1 for e in bundles if e["envelope"]["payload"] == entries[before]["envelope"]["payload"]) == 1
