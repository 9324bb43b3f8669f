"""Fleet-head proofs on the static targets (docs/fleet-heads.md, "Static publication"):
a real server publishing to S3 (SeaweedFS) and to a directory served by the shipped
nginx configuration. Each fleet's object is byte-identical to the route's answer at the
same checkpoint, carries the documented headers, verifies, and follows a rotation."""
from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime

import aiohttp
import pytest

import pg
from bundle_factory import BundleFactory
from logserver.client import TrustPolicy
from logserver.client.fleet_head import verify_fleet_head
from logserver.formats.fleet_head import parse_fleet_head_proof
from logserver.keys.log_key import LogKey
from publish_support import wait_for
from server_harness import ORIGIN, start_server, write_config
from static_servers import start_nginx, start_seaweedfs
from test_client_support import submit, write_trust_policy
from test_publish_s3 import s3_credentials  # noqa: F401  (a fixture: SeaweedFS takes any key)

BUCKET = "fleet-heads"
PREFIX = "log"
FLEETS = (".dot-first", "fleet-a", "fleet:b", "fleet_c")  # in byte order ('.' < 'f', '-' < ':' < '_')


def targets(endpoint: str) -> str:
    return f"""
[publication]
fleet_heads_interval_s = 0.2

[[publication.targets]]
name = "bucket"
type = "s3"
bucket = "{BUCKET}"
endpoint_url = "{endpoint}"
prefix = "{PREFIX}"

[[publication.targets]]
name = "dir"
type = "directory"
path = "public"
"""


@pytest.fixture(scope="module")
async def published(database_url, tmp_path_factory, s3_credentials):  # noqa: F811 (the fixture imported above)
    weed = start_seaweedfs(tmp_path_factory.mktemp("weed"))
    try:
        weed.create_bucket(BUCKET)
        directory = tmp_path_factory.mktemp("heads-static")
        server = await start_server(write_config(directory, database_url, extra=targets(weed.endpoint_url)))
        nginx = start_nginx(directory / "public", tmp_path_factory.mktemp("nginx"))
        try:
            yield server, [weed.public_url(BUCKET, PREFIX), nginx.url]
        finally:
            nginx.stop()
            await server.close()
    finally:
        weed.stop()


async def fetch(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes, dict[str, str]]:
    async with session.get(url, headers={"Accept-Encoding": "identity"}) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def test_each_fleets_object_is_the_routes_proof_and_follows_a_rotation(published, tmp_path):
    server, bases = published
    factories = {f: BundleFactory(fleet_id=f) for f in FLEETS}
    for factory in factories.values():
        await submit(server.session, factory.envelope())
    trust = write_trust_policy(tmp_path, LogKey.load(server.config.log_key, ORIGIN).vkey)
    trust.write_text(trust.read_text().replace("\n\n", "\nmax_age_s = 600\n\n", 1))
    policy = TrustPolicy.load(trust)

    async with aiohttp.ClientSession() as session:
        async def same_as_route(fleet: str) -> bool:
            # The route answers at the published checkpoint, which an idle re-sign moves:
            # poll until a target's object and the route's answer name the same one.
            _, want, _ = await fetch(session, f"{server.url}/v1/fleets/{fleet}/head")
            for base in bases:
                status, got, _ = await fetch(session, f"{base}/fleet-head/{fleet}")
                if status != 200 or got != want:
                    return False
            return True

        for fleet in FLEETS:
            await wait_for(f"the targets to hold the route's proof of {fleet}", lambda f=fleet: same_as_route(f))
            for base in bases:
                status, data, headers = await fetch(session, f"{base}/fleet-head/{fleet}")
                assert status == 200
                assert headers.get("Content-Type") == "application/json", (base, headers)
                assert headers.get("Cache-Control") == "public, max-age=5", (base, headers)
                head = verify_fleet_head(data, policy, datetime.now(UTC), fleet_id=fleet)
                assert head.sequence == 0
                # The chained layout: the row sits where its fleet first appeared and links
                # to the next fleet id in byte order, the last to the first (FLEETS is both).
                i = FLEETS.index(fleet)
                row = parse_fleet_head_proof(data).row
                assert (row.position, row.next_fleet_id) == (i, FLEETS[(i + 1) % len(FLEETS)])
            # A fleet never logged has no object: absence proofs come from the route.
            for base in bases:
                assert (await fetch(session, f"{base}/fleet-head/never-logged"))[0] == 404

        # The fleet rotates: its object names the new bundle at the next pass.
        await submit(server.session, factories["fleet-a"].envelope())

        async def rotated() -> bool:
            for base in bases:
                status, data, _ = await fetch(session, f"{base}/fleet-head/fleet-a")
                if status != 200 or parse_fleet_head_proof(data).row.sequence != 1:
                    return False
            return True

        await wait_for("the targets to hold fleet-a's new head", rotated)
        for base in bases:
            _, data, _ = await fetch(session, f"{base}/fleet-head/fleet-a")
            assert verify_fleet_head(data, policy, datetime.now(UTC), fleet_id="fleet-a").sequence == 1

    # verify --head reads the static copy (--tiles) alone; a fleet it has no object for
    # needs the log (--log) for its absence proof.
    for base in bases:
        done = await verify_head("fleet-a", "--tiles", base, "--policy", str(trust))
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"from {base}/fleet-head/fleet-a" in done.stdout and "sequence 1" in done.stdout, done.stdout
        done = await verify_head("never-logged", "--tiles", base, "--policy", str(trust))
        assert done.returncode == 1 and "no fleet-head/never-logged object" in done.stderr, done.stderr
        done = await verify_head("never-logged", "--tiles", base, "--log", server.url, "--policy", str(trust))
        assert done.returncode == 8, done.stdout + done.stderr
        # 'never-logged' sorts after every fleet: the wrapping link, last id to first, covers it.
        assert "link 'fleet_c' -> '.dot-first' passes over it" in done.stdout, done.stdout


async def verify_head(fleet: str, *args: str) -> subprocess.CompletedProcess:
    # In a thread: the server runs in this test's event loop.
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "logserver.cli", "verify", "--head", fleet,
                                                    *args], capture_output=True, text=True, timeout=120)


async def test_a_changed_fleet_is_written_at_once_the_others_per_interval(pg_admin_url, tmp_path):
    extra = ('[publication]\nfleet_heads_interval_s = 3600\n\n'
             '[[publication.targets]]\nname = "dir"\ntype = "directory"\npath = "public"\n')
    database = await pg.create_database(pg_admin_url, "t_heads_interval")
    server = await start_server(write_config(tmp_path / "log", database, extra=extra))
    try:
        root = tmp_path / "log" / "public"
        x, y = BundleFactory(fleet_id="interval-x"), BundleFactory(fleet_id="interval-y")
        await submit(server.session, x.envelope())
        await submit(server.session, y.envelope())

        async def written(fleet: str, sequence: int) -> bool:
            path = root / "fleet-head" / fleet
            return path.exists() and parse_fleet_head_proof(path.read_bytes()).row.sequence == sequence

        await wait_for("both fleets' proofs", lambda: _all(written("interval-x", 0), written("interval-y", 0)))
        y_before = (root / "fleet-head" / "interval-y").read_bytes()
        await submit(server.session, x.envelope())
        await wait_for("interval-x's new head", lambda: written("interval-x", 1))
        # y's row did not change and the interval has not passed: its object is untouched,
        # still a valid proof at its older checkpoint.
        assert (root / "fleet-head" / "interval-y").read_bytes() == y_before
        x_proof = parse_fleet_head_proof((root / "fleet-head" / "interval-x").read_bytes())
        assert x_proof.checkpoint.size > parse_fleet_head_proof(y_before).checkpoint.size
        assert not list((root / ".staging").iterdir())  # no temporary file left behind
    finally:
        await server.close()
        await pg.drop_database(pg_admin_url, database)


async def _all(*checks) -> bool:
    return all([await c for c in checks])
