"""Clients of a static copy of the log's tree (issue 19): `LogClient(tiles_url=...)`,
`logserver monitor --tiles` and `logserver verify --tiles`, against the server itself
and against a copy served under a path prefix as an S3 bucket's URL is
(tests/static_copy.py). Covers a receipt newer than the copy's checkpoint (the API
asked, or the copy awaited), corrupted objects named by the monitor, and the
full-tile fallback for a partial tile the copy does not have."""
from __future__ import annotations

import asyncio
import json

import pytest

import pg
from logserver.client import (
    LogClient,
    LogClientError,
    NoApiError,
    TileMismatchError,
    TilesBehindError,
    TrustPolicy,
    verified_consistency_proof,
    verify_receipt_online,
)
from logserver.client.verify import CheckLog
from logserver.formats import parse_checkpoint, parse_note
from logserver.keys.log_key import generate_log_key_pem
from logserver.merkle import EntriesTileID, TileID, leaf_hash
from logserver.monitor import Monitor
from server_harness import free_port, start_server, write_config
from static_copy import PREFIX, StaticCopy
from test_client_cli import cli as verify_cli
from test_client_cli import verify_args, write_bundle
from test_client_support import trust_policy_for
from test_monitor_catchup import Collected, fill
from test_monitor_cli import cli as monitor_cli

ENTRIES = 300  # one full entry bundle and a partial one
KEY_PEM = generate_log_key_pem()


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory):
    s = await start_server(write_config(tmp_path_factory.mktemp("static"), database_url, key_pem=KEY_PEM))
    await fill(s, ENTRIES, fleets=10, prefix="static")
    yield s
    await s.close()


@pytest.fixture(scope="module")
async def policy_files(server, tmp_path_factory) -> tuple[TrustPolicy, str]:
    policy, path = await trust_policy_for(server, tmp_path_factory.mktemp("policy"))
    return policy, str(path)


@pytest.fixture
async def copy(tmp_path):
    c = await StaticCopy(tmp_path / "bucket").start()
    yield c
    await c.close()


async def size_of(client: LogClient) -> int:
    return parse_checkpoint(parse_note(await client.checkpoint()).text).size


# --- LogClient ---------------------------------------------------------------------------


async def test_log_client_reads_a_copy_under_a_path_prefix_and_has_no_api(server, copy):
    size = await copy.publish(server.url)
    async with LogClient(server.url) as direct, LogClient(tiles_url=copy.url) as static:
        assert static.tiles_url == copy.url and not static.has_api
        assert await static.checkpoint() == await direct.checkpoint()
        cp = parse_checkpoint(parse_note(await static.checkpoint()).text)
        assert await static.tile_root(size) == cp.root
        assert await static.tile_consistency_proof(7, size) == await direct.consistency_proof(7, size)
        last = EntriesTileID((size - 1) // 256, (size - 1) % 256 + 1)
        assert await static.entry_bundle(last) == await direct.entry_bundle(last)
        assert await verified_consistency_proof(static, 7, size, size=size, root=cp.root) == \
            await direct.consistency_proof(7, size)
        with pytest.raises(NoApiError, match=r"reads only the tiles at .*/bucket/prefix"):
            await static.log_info()
        with pytest.raises(NoApiError):
            await static.fleet("static-1")
    # Every request kept the bucket prefix; none asked the copy for a JSON API.
    assert copy.requests and all(p.startswith(PREFIX + "/") for p in copy.requests)
    assert not any("/v1/" in p for p in copy.requests)


async def test_a_copy_serving_another_tree_of_the_receipts_size_is_a_split_view(server, policy_files, copy, tmp_path,
                                                                              pg_admin_url, capsys):
    # The same log key, another history of the same size (a fork), published to the copy.
    env, rec = await write_bundle(server, tmp_path, "static-split")
    size = json.loads(rec.read_text())["tree_size"]
    url = await pg.create_database(pg_admin_url, "t_static_fork")
    fork = await start_server(write_config(tmp_path / "fork", url, key_pem=KEY_PEM))
    try:
        await fill_exactly(fork, size)
        assert await copy.publish(fork.url) == size
    finally:
        await fork.close()
        await pg.drop_database(pg_admin_url, url)
    state = tmp_path / "state"
    code, out, _ = await verify_cli(capsys, *verify_args(env, rec, policy_files[1], "--tiles", copy.url,
                                                         "--state", str(state)))
    assert code == 1 and "FAILED: SplitViewError in check 'consistency_with_latest'" in out, out
    (evidence,) = state.glob("split-view-*.json")
    code, out, _ = await verify_cli(capsys, "verify", "--evidence", str(evidence), "--policy", policy_files[1],
                                    "--json")
    assert code == 0 and json.loads(out)["conclusive"] is True


async def fill_exactly(server, size: int) -> None:
    """Grow an empty in-process log to exactly `size` leaves: `size - 1` bundles queued in
    the same tick reach the sequencer as one batch, which its HEADS leaf ends."""
    from datetime import UTC, datetime

    from bundle_factory import BundleFactory, default_authorities
    from logserver.api.keys import SEQUENCER
    from logserver.bundle.admit import admit

    sequencer, authorities = server.app[SEQUENCER], default_authorities().authority_set
    assert 2 <= size <= sequencer.max_batch_size
    admitted = [admit(BundleFactory(fleet_id=f"static-fork-{i}").envelope_json(), authorities, datetime.now(UTC))
                for i in range(size - 1)]
    await asyncio.gather(*(sequencer.submit(a.leaf, leaf_hash(a.leaf), a.fleet_id, a.sequence, a.payload_digest)
                           for a in admitted))
    async with server.session.get("/v1/log") as resp:
        assert (await resp.json())["tree_size"] == size


@pytest.mark.parametrize("url, message", [
    ("ftp://127.0.0.1/x", "want an http:// or https:// URL"),
    ("http://127.0.0.1/bucket?x=1", "want a base URL without a query or fragment"),
    ("127.0.0.1:8080", "want an http:// or https:// URL"),
])
def test_log_client_refuses_a_bad_tiles_url(url, message):
    with pytest.raises(ValueError, match=f"tiles URL: {message}"):
        LogClient(tiles_url=url)
    with pytest.raises(ValueError, match="want the log's URL, a tiles URL, or both"):
        LogClient()


@pytest.mark.parametrize("missing_status", [404, 403])
async def test_a_partial_tile_missing_from_the_copy_falls_back_to_the_full_tile(server, tmp_path, policy_files,
                                                                               missing_status):
    copy = await StaticCopy(tmp_path / "bucket", missing_status=missing_status).start()
    try:
        size = await copy.publish(server.url)
        assert size % 256, "want a partial tile at the copy's size"
        # The log grows past the tile boundary; the copy gets the new tiles (the full
        # tile among them) but still serves the old checkpoint, whose partial tiles it
        # no longer has (deleted, as a publisher may once the full tile exists).
        await fill(server, 256 - size % 256 + 3, fleets=2, prefix=f"fallback{missing_status}")
        await copy.publish(server.url, checkpoint=False)
        index, width = size // 256, size % 256
        for rel in (f"tile/0/{index:03d}.p/{width}", f"tile/entries/{index:03d}.p/{width}"):
            copy.path(rel).unlink()
        async with LogClient(server.url) as direct, LogClient(tiles_url=copy.url) as static:
            assert await size_of(static) == size
            assert await static.tile(TileID(0, index, width)) == await direct.tile(TileID(0, index, width))
            leaves = await static.entry_bundle(EntriesTileID(index, width))
            assert len(leaves) == width
            assert b"".join(leaf_hash(x) for x in leaves) == await direct.tile(TileID(0, index, width))
            # The monitor, from scratch, verifies the whole copy through the fallback.
            alerts = Collected()
            monitor = Monitor(static, policy_files[0], tmp_path / "m.json", emit=alerts)
            assert await monitor.poll_once()
            assert alerts == [] and monitor.state.verified.size == size
        assert PREFIX + f"/tile/0/{index:03d}" in copy.requests
    finally:
        await copy.close()


# --- the monitor -------------------------------------------------------------------------


@pytest.mark.parametrize("gzip_bundles", [False, True], ids=["raw", "gzip"])
async def test_monitor_with_only_the_tiles_url_verifies_the_whole_copy(server, policy_files, tmp_path, capsys,
                                                                       gzip_bundles):
    copy = await StaticCopy(tmp_path / "bucket", gzip_bundles=gzip_bundles).start()
    try:
        size = await copy.publish(server.url)
        args = ["monitor", "--tiles", copy.url, "--policy", policy_files[1], "--state", str(tmp_path / "state"),
                "--once"]
        code, lines, err = await monitor_cli(capsys, *args)
        assert code == 0, err
        summary = lines[-1]
        assert summary["alerts"] == {} and summary["caught_up"]
        assert summary["verified_size"] == summary["checkpoint_size"] == size
        assert summary["verified_root"] == summary["checkpoint_root"]
        assert f"Monitored {copy.url} (tiles only, no JSON API)" in err
        # The log grows and the copy follows: the next run proves the new checkpoint
        # consistent with the stored one from the copy's tiles alone, and catches up.
        await fill(server, 20, fleets=2, prefix=f"grow{gzip_bundles}")
        bigger = await copy.publish(server.url)
        code, lines, err = await monitor_cli(capsys, *args)
        assert code == 0, err
        assert lines[-1]["verified_size"] == bigger and lines[-1]["entries_verified"] == bigger - size
        assert f"tiles of {copy.url} at size {bigger}" in lines[-1]["checkpoint_check"]
        assert not any("/v1/" in p for p in copy.requests)
    finally:
        await copy.close()


async def test_monitor_with_the_server_as_tiles_url_and_no_api(server, policy_files, tmp_path, capsys):
    code, lines, err = await monitor_cli(capsys, "monitor", "--tiles", server.url, "--policy", policy_files[1],
                                         "--state", str(tmp_path), "--once")
    assert code == 0, err
    assert lines[-1]["caught_up"] and lines[-1]["alerts"] == {}
    assert lines[-1]["verified_root"] == lines[-1]["checkpoint_root"]


async def test_monitor_with_the_api_and_a_copy(server, policy_files, copy, tmp_path, capsys):
    await copy.publish(server.url)
    code, lines, err = await monitor_cli(capsys, "monitor", "--log", server.url, "--tiles", copy.url, "--policy",
                                         policy_files[1], "--state", str(tmp_path), "--once")
    assert code == 0, err
    assert lines[-1]["caught_up"] and f"Monitored {copy.url} (tiles; JSON API at {server.url})" in err


async def test_monitor_usage_needs_tiles_or_log(policy_files, tmp_path, capsys):
    code, _, err = await monitor_cli(capsys, "monitor", "--policy", policy_files[1], "--state", str(tmp_path),
                                     "--once")
    assert code == 2 and "missing --tiles URL or --log URL" in err


async def run_monitor(copy, policy, state, alerts, **kwargs) -> tuple[bool, Monitor]:
    async with LogClient(tiles_url=copy.url) as client:
        monitor = Monitor(client, policy, state, emit=alerts, **kwargs)
        return await monitor.poll_once(), monitor


async def test_monitor_names_a_corrupted_entry_bundle_of_the_copy(server, policy_files, copy, tmp_path):
    await copy.publish(server.url)
    copy.flip("tile/entries/000", 2 + 100)  # inside entry 0, after its 2-byte length
    alerts = Collected()
    ok, monitor = await run_monitor(copy, policy_files[0], tmp_path / "s.json", alerts)
    assert not ok and alerts.kinds() == ["corrupt_entry"]
    details = alerts[0]["details"]
    assert details["index"] == 0 and details["entry_bundle_url"] == copy.url + "/tile/entries/000"
    assert copy.url + "/tile/entries/000" in alerts[0]["message"]
    assert monitor.state.verified.size == 0


async def test_monitor_names_a_corrupted_level0_tile_of_the_copy(server, policy_files, copy, tmp_path):
    await copy.publish(server.url)
    copy.flip("tile/0/000", 32 * 9 + 1)
    alerts = Collected()
    ok, monitor = await run_monitor(copy, policy_files[0], tmp_path / "s.json", alerts)
    assert ok and alerts.kinds() == ["corrupt_tile"]
    assert alerts[0]["details"]["index"] == 9
    assert alerts[0]["details"]["tile_url"] == copy.url + "/tile/0/000"
    assert copy.url + "/tile/0/000" in alerts[0]["message"]
    assert monitor.state.verified.root() == monitor.latest.root


async def test_monitor_names_an_entry_bundle_and_tile_replaced_together(server, policy_files, copy, tmp_path):
    # The bundle and its level-0 tile agree with each other, not with the signed tree:
    # only the tiles above, checked against the signed root, can say which objects.
    await copy.publish(server.url)
    bundle = bytearray(copy.path("tile/entries/000").read_bytes())
    n = int.from_bytes(bundle[:2], "big")
    bundle[2 + 100] ^= 0x40
    copy.path("tile/entries/000").write_bytes(bytes(bundle))
    tile = copy.path("tile/0/000").read_bytes()
    copy.path("tile/0/000").write_bytes(leaf_hash(bytes(bundle[2:2 + n])) + tile[32:])
    alerts = Collected()
    ok, monitor = await run_monitor(copy, policy_files[0], tmp_path / "s.json", alerts)
    assert not ok and alerts.kinds() == ["root_mismatch"]
    (suspect,) = alerts[0]["details"]["suspects"]
    assert suspect["urls"] == [copy.url + "/tile/0/000"]
    assert suspect["entry_bundle_urls"] == [copy.url + "/tile/entries/000"]
    assert copy.url + "/tile/0/000" in alerts[0]["message"] and copy.url + "/tile/entries/000" in alerts[0]["message"]
    assert monitor.state.verified.size == 0


async def test_a_corrupted_upper_tile_of_the_copy_is_named_not_taken_for_a_split_view(server, policy_files, copy,
                                                                                     tmp_path):
    await copy.publish(server.url)
    alerts = Collected()
    ok, _ = await run_monitor(copy, policy_files[0], tmp_path / "s.json", alerts)
    assert ok and alerts == []
    await fill(server, 5, fleets=1, prefix="uppertile")
    size = await copy.publish(server.url)
    # The consistency proof to the new checkpoint reads the level-1 tile of its tree.
    copy.flip(f"tile/1/000.p/{size // 256}", 3)
    async with LogClient(tiles_url=copy.url) as client:
        monitor = Monitor(client, policy_files[0], tmp_path / "s.json", emit=alerts)
        with pytest.raises(TileMismatchError) as info:
            await verified_consistency_proof(client, 7, size, size=size, root=(await _signed_root(client)))
        with pytest.raises(LogClientError, match="no consistency proof"):
            await monitor.poll_once()  # no JSON API to ask instead: the poll cannot finish
    assert f"tile/1/000.p/{size // 256}" in info.value.paths
    assert alerts.kinds() == ["corrupt_tile"]
    assert copy.url + f"/tile/1/000.p/{size // 256}" in alerts[0]["details"]["urls"]


async def _signed_root(client: LogClient) -> bytes:
    return parse_checkpoint(parse_note(await client.checkpoint()).text).root


# --- verify ------------------------------------------------------------------------------


async def test_verify_with_tiles_from_the_copy(server, policy_files, copy, tmp_path, capsys):
    env, rec = await write_bundle(server, tmp_path, "static-verify")
    await copy.publish(server.url)
    code, out, _ = await verify_cli(capsys, *verify_args(env, rec, policy_files[1], "--log", server.url,
                                                         "--tiles", copy.url))
    assert code == 0, out
    assert f"online against log {server.url} (tiles {copy.url})" in out
    assert f"the tiles at {copy.url} serve a valid checkpoint" in out
    for check in ("latest_checkpoint", "consistency_with_latest", "fleet_latest"):
        assert f"[  ok] {check}" in out
    # Tiles only, with state over two receipts: every proof from the copy's tiles.
    state = str(tmp_path / "state")
    code, out, _ = await verify_cli(capsys, *verify_args(env, rec, policy_files[1], "--tiles", copy.url,
                                                         "--state", state))
    assert code == 0, out
    assert "fleet_latest" not in out and "(tiles only: add --log URL" in out
    env2, rec2 = await write_bundle(server, tmp_path / "2", "static-verify-2")
    await fill(server, 3, fleets=1, prefix="static-verify-more")
    await copy.publish(server.url)
    code, out, _ = await verify_cli(capsys, *verify_args(env2, rec2, policy_files[1], "--tiles", copy.url,
                                                         "--state", state, "--json"))
    account = json.loads(out)
    assert code == 0 and account["ok"], out
    checks = {c["check"]: c for c in account["checks"]}
    assert f"tiles of {copy.url}" in checks["checkpoint_consistency"]["detail"]
    assert checks["latest_vs_stored"]["ok"]


async def test_receipt_newer_than_the_copy_is_proved_by_the_api(server, policy_files, copy, tmp_path, capsys):
    await copy.publish(server.url)
    env, rec = await write_bundle(server, tmp_path, "static-newer-api")  # after the copy's checkpoint
    code, out, _ = await verify_cli(capsys, *verify_args(env, rec, policy_files[1], "--log", server.url,
                                                         "--tiles", copy.url, "--json"))
    account = json.loads(out)
    assert code == 0 and account["ok"], out
    checks = {c["check"]: c for c in account["checks"]}
    assert "older than the receipt's" in checks["newer_checkpoint"]["detail"]
    assert f"the log's API at {server.url} serves a valid checkpoint" in checks["newer_checkpoint"]["detail"]
    assert checks["tiles_checkpoint_consistency"]["ok"] and checks["fleet_latest"]["ok"]


async def test_receipt_newer_than_the_copy_waits_for_the_copy(server, policy_files, copy, tmp_path, capsys):
    await copy.publish(server.url)
    env, rec = await write_bundle(server, tmp_path, "static-newer-wait")
    reads = copy.checkpoint_reads()
    run = asyncio.ensure_future(verify_cli(capsys, *verify_args(env, rec, policy_files[1], "--tiles", copy.url,
                                                                "--wait", "60", "--json")))
    while copy.checkpoint_reads() < reads + 2 and not run.done():  # it read the old one, and polled again
        await asyncio.sleep(0.05)
    await copy.publish(server.url)
    code, out, err = await run
    account = json.loads(out)
    assert code == 0 and account["ok"], (out, err)
    checks = {c["check"]: c for c in account["checks"]}
    assert "no API URL was given" in checks["newer_checkpoint"]["detail"]
    assert "they serve a valid checkpoint" in checks["newer_checkpoint"]["detail"]
    assert checks["consistency_with_latest"]["ok"]
    # The copy's older checkpoint against the receipt's: proved from the copy's new tiles.
    assert f"tiles of {copy.url}" in checks["tiles_checkpoint_consistency"]["detail"]


async def test_receipt_newer_than_the_copy_with_the_api_down(server, policy_files, copy, tmp_path):
    # The library, with a log URL nobody answers at: the copy is awaited as without one.
    await copy.publish(server.url)
    env, rec = await write_bundle(server, tmp_path, "static-api-down")
    checks = CheckLog()
    async with LogClient(f"http://127.0.0.1:{free_port()}", tiles_url=copy.url) as client:
        task = asyncio.ensure_future(verify_receipt_online(
            client, env.read_bytes(), rec.read_bytes(), policy_files[0], checks=checks, check_fleet=False,
            wait_s=60, poll_s=0.1))
        reads = copy.checkpoint_reads()
        while copy.checkpoint_reads() < reads + 2 and not task.done():
            await asyncio.sleep(0.05)
        await copy.publish(server.url)
        result = await task
    assert result.fleet_id == "static-api-down"
    newer = [c for c in checks.results if c.name == "newer_checkpoint"]
    assert len(newer) == 1 and newer[0].ok and "the log's API does not answer" in newer[0].detail


async def test_a_copy_that_never_catches_up_is_a_clear_error(server, policy_files, copy, tmp_path, capsys):
    size = await copy.publish(server.url)
    env, rec = await write_bundle(server, tmp_path, "static-stuck")
    code, out, err = await verify_cli(capsys, *verify_args(env, rec, policy_files[1], "--tiles", copy.url,
                                                           "--wait", "0.3"))
    assert code == 1 and out == ""
    assert "the static tree has not caught up with the log" in err
    assert "This is not a verification failure" in err
    assert f"serve a checkpoint of size {size}, older than the receipt's" in err
    async with LogClient(tiles_url=copy.url) as client:
        with pytest.raises(TilesBehindError) as info:
            await verify_receipt_online(client, env.read_bytes(), rec.read_bytes(), policy_files[0], wait_s=0)
    assert info.value.tiles_size == size and info.value.want_size == json.loads(rec.read_text())["tree_size"]


async def test_verify_usage_of_wait(policy_files, tmp_path, capsys):
    args = verify_args(tmp_path / "e.json", tmp_path / "r.json", policy_files[1])
    code, _, err = await verify_cli(capsys, *args, "--wait", "5")
    assert code == 2 and "--wait is how long to wait for the tiles" in err
    code, _, err = await verify_cli(capsys, *args, "--tiles", "http://127.0.0.1:9", "--wait", "-1")
    assert code == 2 and "want a number of seconds >= 0" in err
    code, _, err = await verify_cli(capsys, *args, "--tiles", "http://127.0.0.1:9/bucket?list-type=2")
    assert code == 2 and "--tiles" in err and "want a base URL without a query or fragment" in err
