"""Corrupted data served to the monitor (through a byte-flipping proxy) raises an
alert, never a crash; a second log with the same key but another history is a split
view whose evidence re-verifies."""
from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

import pg
from logserver.client import LogClient, verify_evidence
from logserver.keys.log_key import generate_log_key_pem
from logserver.monitor import Monitor
from server_harness import start_server, write_config
from test_client_support import Proxy, trust_policy_for
from test_monitor_catchup import Collected, fill

KEY_PEM = generate_log_key_pem()
ENTRIES = 300  # one full entry bundle and a partial one


def flip(position: int) -> Callable[[bytes], bytes]:
    def mutate(body: bytes) -> bytes:
        out = bytearray(body)
        out[position] ^= 0x40
        return bytes(out)

    return mutate


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory):
    s = await start_server(write_config(tmp_path_factory.mktemp("corrupt"), database_url, key_pem=KEY_PEM))
    await fill(s, ENTRIES, fleets=10, prefix="corrupt")
    yield s
    await s.close()


@pytest.fixture
async def proxy(server):
    p = Proxy(server.url)
    await p.start()
    yield p
    await p.close()


@pytest.fixture(scope="module")
async def policy(server, tmp_path_factory):
    return (await trust_policy_for(server, tmp_path_factory.mktemp("policy")))[0]


async def run_monitor(proxy, policy, state_path, alerts, **kwargs) -> tuple[bool, Monitor]:
    async with LogClient(proxy.url) as client:
        monitor = Monitor(client, policy, state_path, emit=alerts, **kwargs)
        return await monitor.poll_once(), monitor


async def test_corrupted_entry_is_an_alert_and_blocks_progress(server, proxy, policy, tmp_path):
    # Entry 256 is the first of bundle 1; flip a byte 120 bytes into it (after its 2-byte
    # length). Where a batch ended there, entry 256 is a 49-byte HEADS leaf and the byte
    # falls in entry 257, the bundle after it (docs/fleet-heads.md).
    async with server.session.get("/v1/entries", params={"start": 256, "end": 257}) as resp:
        first = (await resp.json())["entries"][0]
    corrupted = 257 if "heads" in first else 256
    proxy.rules.append((lambda p: p.startswith("/tile/entries/001"), flip(2 + 120)))
    alerts = Collected()
    ok, monitor = await run_monitor(proxy, policy, tmp_path / "s.json", alerts)
    assert not ok
    assert alerts.kinds() == ["corrupt_entry"]
    assert alerts[0]["details"]["index"] == corrupted
    assert monitor.state.verified.size == 0  # both bundles are one chunk: nothing committed
    # Served correctly again, the monitor catches up without further alerts.
    proxy.rules.clear()
    alerts.clear()
    ok, monitor = await run_monitor(proxy, policy, tmp_path / "s.json", alerts)
    assert ok and alerts == []
    assert monitor.state.verified.root() == monitor.latest.root


async def test_corrupted_tile_is_an_alert_and_the_entries_still_verify(proxy, policy, tmp_path):
    proxy.rules.append((lambda p: p == "/tile/0/000", flip(32 * 7 + 3)))
    alerts = Collected()
    ok, monitor = await run_monitor(proxy, policy, tmp_path / "s.json", alerts)
    assert ok
    assert alerts.kinds() == ["corrupt_tile"]
    assert alerts[0]["details"]["index"] == 7
    assert monitor.state.verified.root() == monitor.latest.root


@pytest.mark.parametrize("path, mutate, kind", [
    ("/tile/entries/000", lambda b: b[:-1], "malformed_data"),
    ("/tile/entries/000", lambda b: b"\xff\xff" + b, "malformed_data"),
    ("/tile/0/000", lambda b: b[:-5], "corrupt_tile"),
])
async def test_malformed_resources_are_alerts(proxy, policy, tmp_path, path, mutate, kind):
    proxy.rules.append((lambda p: p == path, mutate))
    alerts = Collected()
    ok, _ = await run_monitor(proxy, policy, tmp_path / "s.json", alerts)
    assert kind in alerts.kinds()
    assert ok == (kind == "corrupt_tile")


async def test_entry_and_tile_corrupted_consistently_is_a_root_mismatch(proxy, policy, tmp_path):
    # Flip a byte of entry 3 in the bundle and put the matching hash into the tile: the
    # two agree, so only the root check against the signed checkpoint can catch it.
    corrupted_hash = {}

    def entries(body: bytes) -> bytes:
        out, pos = bytearray(body), 0
        for _ in range(3):
            pos += 2 + int.from_bytes(out[pos:pos + 2], "big")
        n = int.from_bytes(out[pos:pos + 2], "big")
        out[pos + 2 + 100] ^= 0x40
        corrupted_hash["h"] = hashlib.sha256(b"\x00" + bytes(out[pos + 2:pos + 2 + n])).digest()
        return bytes(out)

    def tile(body: bytes) -> bytes:
        return body[:3 * 32] + corrupted_hash["h"] + body[4 * 32:] if "h" in corrupted_hash else body

    proxy.rules += [(lambda p: p == "/tile/entries/000", entries), (lambda p: p == "/tile/0/000", tile)]
    alerts = Collected()
    async with LogClient(proxy.url, concurrency=1) as client:  # bundle before tile
        monitor = Monitor(client, policy, tmp_path / "s.json", emit=alerts, chunk_bundles=1)
        assert not await monitor.poll_once()
    assert "root_mismatch" in alerts.kinds()
    assert monitor.state.verified.size == 0
    evidence = alerts[alerts.kinds().index("root_mismatch")]["evidence"]
    assert evidence["checkpoint"] and evidence["computed_size"] == 256


async def test_corrupted_checkpoint_is_an_alert(proxy, policy, tmp_path):
    proxy.rules.append((lambda p: p == "/checkpoint", flip(-5)))  # inside the last signature line
    alerts = Collected()
    ok, _ = await run_monitor(proxy, policy, tmp_path / "s.json", alerts)
    assert not ok
    assert alerts.kinds() == ["checkpoint_invalid"]


async def test_split_view_between_two_logs_with_one_key(server, proxy, policy, pg_admin_url, tmp_path):
    alerts = Collected()
    ok, _ = await run_monitor(proxy, policy, tmp_path / "s.json", alerts)
    assert ok and alerts == []
    url = await pg.create_database(pg_admin_url, "t_monitor_fork")
    fork = await start_server(write_config(tmp_path / "fork", url, key_pem=KEY_PEM))
    try:
        await fill(fork, ENTRIES + 20, fleets=3, prefix="fork")
        async with LogClient(fork.url) as client:
            monitor = Monitor(client, policy, tmp_path / "s.json", emit=alerts)
            assert not await monitor.poll_once()
    finally:
        await fork.close()
        await pg.drop_database(pg_admin_url, url)
    assert alerts.kinds() == ["split_view"]
    verdict = verify_evidence(alerts[0]["evidence"], policy)
    assert not verdict.conclusive and verdict.checkpoints[1].size > verdict.checkpoints[0].size


async def test_corrupted_tile_on_the_proof_path_is_not_taken_for_a_split_view(server, proxy, policy, tmp_path):
    alerts = Collected()
    ok, first = await run_monitor(proxy, policy, tmp_path / "s.json", alerts)
    assert ok
    await fill(server, 10, fleets=1, prefix="proofpath")
    # The consistency proof from the stored size is computed from tiles, among them the
    # level-1 tile; corrupted, it does not hash to the signed root (client.tile_proofs):
    # that tile is named in a corrupt_tile alert, never taken for a split view, and the
    # JSON API's proof is used instead.
    proxy.rules.append((lambda p: p.startswith("/tile/1/"), flip(5)))
    ok, monitor = await run_monitor(proxy, policy, tmp_path / "s.json", alerts)
    assert ok and alerts.kinds() == ["corrupt_tile"]
    # A frontier tile: the signed root alone cannot tell it from the other frontier tiles.
    assert "tile/1/000.p/1" in alerts[0]["details"]["tiles"]
    assert proxy.url + "/tile/1/000.p/1" in alerts[0]["details"]["urls"]
    assert proxy.url + "/tile/1/000.p/1" in alerts[0]["message"]
    assert monitor.state.verified.size > first.state.verified.size
    assert "/v1/proof/consistency" in monitor.checkpoint_account
