"""PostgreSQL stops for 10 s under a running server, then comes back.

The database is a PRIVATE embedded PostgreSQL (its own data directory), so stopping it
disturbs no other test. The server is a real `logserver serve` process. During the
outage:

* every submission returns promptly (client timeouts bound each one) with 503, a
  `Retry-After` header and the JSON error body (never a traceback);
* reads the server can answer from memory keep working: /checkpoint and /v1/log (the
  newest checkpoint it knows), proofs and hash tiles on its cached right edge;
* reads that need the database answer 503 database_unavailable (JSON, Retry-After);
* /readyz says 503 database_unavailable, /healthz stays 200.

When PostgreSQL is back the server recovers by itself, without a restart: /readyz is
200 again and submissions are appended, after the entries acknowledged before.
"""
from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

import pytest
from aiohttp import ClientSession, ClientTimeout

from bundle_factory import BundleFactory
from independent_merkle import check_inclusion
from logserver.storage.embedded import embedded_postgres_uri
from server_harness import ServerProcess, write_config

pytestmark = pytest.mark.fault

OUTAGE_S = 10.0
RETRY_AFTER_S = 2
REQUEST_DEADLINE_S = 15.0  # a client timeout: any request slower than this fails the test
RECOVERY_DEADLINE_S = 60.0
JSON = {"Content-Type": "application/json"}


class PrivatePostgres:
    """An embedded PostgreSQL of our own that the test may stop and start again."""

    def __init__(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="logserver-outage-pg-"))
        self.data_dir.chmod(0o755)  # the embedded server runs as its own user when we are root
        self.url = embedded_postgres_uri(self.data_dir)
        import embedded_postgres

        self.server = embedded_postgres.get_server((self.data_dir / "postgres").resolve(), cleanup_mode="stop")
        self.socket_dir = self.server.get_postmaster_info().socket_path.parent  # .../.s.PGSQL.5432

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres._commands import pg_ctl

        pg_ctl(list(args), pgdata=self.server.pgdata, user=self.server.system_user, timeout=60)

    def stop(self) -> None:
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        # The same options the wheel starts it with: Unix socket only, in the same directory.
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.server.log), "start")

    def is_running(self) -> bool:
        return (self.server.pgdata / "postmaster.pid").exists()

    def remove(self) -> None:
        if self.is_running():
            self.stop()
        import shutil

        shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
async def private_pg():
    pg = await asyncio.to_thread(PrivatePostgres)
    yield pg
    await asyncio.to_thread(pg.remove)


@pytest.fixture(scope="module")
async def server(private_pg, tmp_path_factory):
    extra = (f"[limits]\nretry_after_s = {RETRY_AFTER_S}\n"
             "[sequencer]\ncheckpoint_interval_s = 0.5\ncommit_timeout_s = 10\n")
    cfg = write_config(tmp_path_factory.mktemp("outage"), private_pg.url, extra=extra)
    proc = ServerProcess(cfg, private_pg.url)
    await proc.start()
    yield proc
    await proc.stop()
    proc.kill_now()


async def submit(session: ClientSession, url: str, body: bytes) -> tuple[int, dict, bytes]:
    async with session.post(url + "/v1/bundles", data=body, headers=JSON) as r:
        return r.status, dict(r.headers), await r.read()


def assert_json_503(status: int, headers: dict, body: bytes, what: str) -> None:
    assert status == 503, (what, status, body[:300])
    assert headers.get("Retry-After") == str(RETRY_AFTER_S), (what, headers)
    assert headers.get("Content-Type", "").startswith("application/json"), (what, headers)
    error = json.loads(body)["error"]
    assert set(error) == {"code", "message"}, (what, error)
    assert "Traceback" not in error["message"] and 'File "' not in error["message"], (what, error)


async def test_database_outage_then_recovery(server, private_pg):
    timeout = ClientTimeout(total=REQUEST_DEADLINE_S)
    async with ClientSession(timeout=timeout) as s:
        url = server.url
        factory = BundleFactory(fleet_id="outage")
        acknowledged = []
        for _ in range(12):
            status, _, body = await submit(s, url, factory.envelope_json())
            assert status == 201, body
            acknowledged.append(json.loads(body))
        size = acknowledged[-1]["tree_size"]
        # Reads that the server can answer from memory (the right edge it just wrote).
        cached_reads = ["/checkpoint", "/v1/log", f"/v1/proof/inclusion?tree_size={size}&index=3",
                        f"/v1/proof/consistency?first=2&second={size}", f"/tile/0/000.p/{size}", "/healthz"]
        answers_before = {}
        for path in cached_reads:
            async with s.get(url + path) as r:
                assert r.status == 200, (path, await r.text())
                answers_before[path] = await r.read()

        async with s.get(url + "/metrics") as r:
            assert "logserver_database_up 1.0" in await r.text()
        await asyncio.to_thread(private_pg.stop)
        stopped_at = time.monotonic()
        submissions = reads = 0
        try:
            while time.monotonic() - stopped_at < OUTAGE_S:
                # A few submissions at once, then the reads, then the readiness probe.
                results = await asyncio.gather(*(submit(s, url, factory.envelope_json()) for _ in range(3)))
                for status, headers, body in results:
                    assert_json_503(status, headers, body, "submission during the outage")
                    assert json.loads(body)["error"]["code"] == "database_unavailable", body
                    submissions += 1
                for path in cached_reads:
                    async with s.get(url + path) as r:
                        assert r.status == 200, (path, r.status, await r.text())
                        got = await r.read()
                    if path == "/checkpoint":  # the newest it knows (an idle re-sign may be newer)
                        assert got.decode().split("\n")[1] == str(size), got
                    elif path == "/v1/log":
                        assert json.loads(got)["tree_size"] == size, got
                    elif path != "/healthz":
                        assert got == answers_before[path], path  # the same proof and tile, from memory
                    reads += 1
                for path in ("/v1/entries?start=0&end=1", "/v1/fleets/outage"):  # these need the database
                    async with s.get(url + path) as r:
                        body = await r.read()
                        assert_json_503(r.status, dict(r.headers), body, path)
                        assert json.loads(body)["error"]["code"] == "database_unavailable", (path, body)
                async with s.get(url + "/readyz") as r:
                    assert (r.status, r.headers.get("Retry-After")) == (503, str(RETRY_AFTER_S))
                    assert await r.json() == {"status": "database_unavailable"}
                # /metrics still answers, and says so (alert LogserverDatabaseUnavailable).
                async with s.get(url + "/metrics") as r:
                    assert r.status == 200 and "logserver_database_up 0.0" in await r.text()
                await asyncio.sleep(0.2)
        finally:  # PostgreSQL comes back whatever happened above
            await asyncio.to_thread(private_pg.start)
        assert submissions >= 9 and reads >= 18, (submissions, reads)

        # Recovery without a restart: readiness, then a submission is appended.
        recovered_by = time.monotonic() + RECOVERY_DEADLINE_S
        while True:
            async with s.get(url + "/readyz") as r:
                if r.status == 200:
                    break
            assert time.monotonic() < recovered_by, "not ready again after PostgreSQL came back"
            await asyncio.sleep(0.2)
        assert server.proc.poll() is None, "the server exited"
        async with s.get(url + "/metrics") as r:
            assert "logserver_database_up 1.0" in await r.text()
        while True:
            status, headers, body = await submit(s, url, factory.envelope_json())
            if status == 201:
                break
            assert_json_503(status, headers, body, "submission while recovering")
            assert time.monotonic() < recovered_by, "submissions still fail after PostgreSQL came back"
            await asyncio.sleep(0.2)
        after = json.loads(body)
        # Nothing was appended during the outage: the bundle, then its batch's HEADS leaf
        # (docs/fleet-heads.md), right after the entries acknowledged before.
        assert (after["index"], after["tree_size"]) == (size, size + 2), after

        # Every entry acknowledged before the outage is still there, provably.
        new_size = after["tree_size"]
        async with s.get(url + f"/v1/entries?start=0&end={size}") as r:
            entries = (await r.json())["entries"]
        # Each submission was alone in its batch: every bundle is followed by a HEADS leaf.
        assert [e["leaf_hash"] for e in entries[0::2]] == [a["leaf_hash"] for a in acknowledged]
        assert len(entries) == size == 2 * len(acknowledged) and all("heads" in e for e in entries[1::2])
        for a in acknowledged:
            async with s.get(url + f"/v1/proof/inclusion?tree_size={new_size}&index={a['index']}") as r:
                proof = await r.json()
            root = after["checkpoint"].split("\n")[2]
            check_inclusion(a["index"], new_size, bytes.fromhex(a["leaf_hash"]),
                            [bytes.fromhex(h) for h in proof["proof"]], _b64(root))
    output = server.output()
    assert "batch of 3 failed" in output  # the outage was logged, as a warning ...
    assert "internal error" not in output  # ... and never took the unexpected-exception path
    assert "PRIVATE KEY" not in output


def _b64(text: str) -> bytes:
    import base64

    return base64.b64decode(text, validate=True)
