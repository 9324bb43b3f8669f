"""Two server processes on one database keep one linear, fork-free history.

Both processes are started at once on an empty database (concurrent migrations
and initialisation), then several clients submit to both concurrently. Afterwards
the log must be a single history: dense indices, one chain of HEADS leaves, every
receipt matching the stored entry, no index handed out twice, and every checkpoint anyone saw consistent with
the final one (checked with the independent RFC 6962 verifier).
"""
from __future__ import annotations

import asyncio
import itertools

import pytest
from aiohttp import ClientSession

from bundle_factory import BundleFactory
from independent_merkle import check_consistency, check_inclusion, mth
from logserver.formats.checkpoint import open_checkpoint
from logserver.formats.note import Ed25519NoteVerifier
from server_harness import ServerProcess, write_config

JSON = {"Content-Type": "application/json"}
CLIENTS = 6
BUNDLES_PER_CLIENT = 30
SHARED_DUPLICATES = 8  # envelopes every client sends to both servers


@pytest.fixture(scope="module")
async def servers(database_url, tmp_path_factory):
    cfg = write_config(tmp_path_factory.mktemp("multi"), database_url,
                       extra="[sequencer]\nmax_batch_delay_ms = 2\n")
    procs = [ServerProcess(cfg, database_url), ServerProcess(cfg, database_url)]
    try:
        await asyncio.gather(*(p.start() for p in procs))
        yield procs
        for p in procs:
            assert await p.stop() == 0, p.output()
    finally:
        for p in procs:
            p.kill_now()


async def test_two_processes_one_linear_history(servers):
    urls = [p.url for p in servers]
    shared = [BundleFactory(fleet_id=f"shared-{i}").envelope_json() for i in range(SHARED_DUPLICATES)]
    receipts: list[tuple[bytes, int, dict]] = []  # (body, status, receipt)
    appended_by: dict[str, int] = {url: 0 for url in urls}
    seen_notes: list[str] = []

    async def client(number: int) -> None:
        own = [BundleFactory(fleet_id=f"client-{number}-{i}").envelope_json() for i in range(BUNDLES_PER_CLIENT)]
        bodies = own + shared
        targets = itertools.cycle(urls[number % 2:] + urls[:number % 2])
        async with ClientSession() as session:
            for body in bodies:
                url = next(targets)
                async with session.post(url + "/v1/bundles", data=body, headers=JSON) as resp:
                    assert resp.status in (200, 201), await resp.text()
                    receipts.append((body, resp.status, await resp.json()))
                    appended_by[url] += resp.status == 201
                async with session.get(next(targets) + "/checkpoint") as resp:
                    assert resp.status == 200
                    seen_notes.append(await resp.text())

    await asyncio.gather(*(client(n) for n in range(CLIENTS)))
    assert all(appended_by.values()), appended_by  # both processes sequenced entries

    async with ClientSession() as session:
        infos = []
        for url in urls:
            async with session.get(url + "/v1/log") as resp:
                infos.append(await resp.json())
        assert infos[0]["verifier_key"] == infos[1]["verifier_key"]
        final_size = max(info["tree_size"] for info in infos)

        entries: list[dict] = []
        while len(entries) < final_size:
            url = urls[len(entries) % 2]
            async with session.get(url + "/v1/entries", params={"start": len(entries), "end": final_size}) as resp:
                assert resp.status == 200, await resp.text()
                entries += (await resp.json())["entries"]
        assert [e["index"] for e in entries] == list(range(final_size))
        # Every bundle once, each batch of them followed by its HEADS leaf
        # (docs/fleet-heads.md): the HEADS leaves of both processes' batches form one
        # chain, each naming the one before it, and the last leaf is one of them.
        bundle_indexes = [e["index"] for e in entries if "envelope" in e]
        heads = [e for e in entries if "heads" in e]
        assert len(bundle_indexes) == CLIENTS * BUNDLES_PER_CLIENT + SHARED_DUPLICATES
        assert len(bundle_indexes) + len(heads) == final_size
        assert heads and heads[-1]["index"] == final_size - 1
        assert heads[-1]["heads"]["count"] == len(bundle_indexes)  # one fleet per bundle
        assert [h["heads"]["previous"] for h in heads] == [0] + [h["index"] for h in heads[:-1]]
        assert all("envelope" in entries[h["index"] - 1] for h in heads), "a batch without bundles"
        leaf_hashes = [bytes.fromhex(e["leaf_hash"]) for e in entries]
        assert len(set(leaf_hashes)) == final_size

        verifier = Ed25519NoteVerifier.from_vkey(infos[0]["verifier_key"])
        final_note = infos[0]["checkpoint"] if infos[0]["tree_size"] == final_size else infos[1]["checkpoint"]
        final, _ = open_checkpoint(final_note.encode(), [verifier])
        assert final.size == final_size
        assert final.root == mth(leaf_hashes)

        # Every receipt names the stored entry; only one receipt per index says "appended".
        appended = [r for _, status, r in receipts if status == 201]
        assert sorted(r["index"] for r in appended) == bundle_indexes
        for _, status, r in receipts:
            assert r["duplicate"] is (status == 200)
            assert bytes.fromhex(r["leaf_hash"]) == leaf_hashes[r["index"]]
        for body in shared:
            indices = {r["index"] for b, _, r in receipts if b == body}
            assert len(indices) == 1, indices
            assert sum(1 for b, status, _ in receipts if b == body and status == 201) == 1

        # Every checkpoint anyone saw: signed by the log, proofs lead to its root, and
        # it is consistent with the final checkpoint.
        checkpoints = {}
        for r in (r for _, _, r in receipts):
            cp, _ = open_checkpoint(r["checkpoint"].encode(), [verifier])
            check_inclusion(r["index"], cp.size, bytes.fromhex(r["leaf_hash"]),
                            [bytes.fromhex(h) for h in r["inclusion_proof"]], cp.root)
            checkpoints[(cp.size, cp.root)] = cp
        for note in seen_notes:
            cp, _ = open_checkpoint(note.encode(), [verifier])
            checkpoints[(cp.size, cp.root)] = cp
        sizes = [size for size, _ in checkpoints]
        assert len(set(sizes)) == len(sizes), "two roots for one tree size"
        for n, cp in enumerate(checkpoints.values()):
            async with session.get(urls[n % 2] + "/v1/proof/consistency",
                                   params={"first": cp.size, "second": final_size}) as resp:
                assert resp.status == 200, await resp.text()
                proof = [bytes.fromhex(h) for h in (await resp.json())["proof"]]
            check_consistency(cp.size, final_size, cp.root, final.root, proof)
            assert cp.root == mth(leaf_hashes[:cp.size])
