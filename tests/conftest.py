from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/ helpers importable as plain modules

import pg
import static_servers


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run the long variants marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="long variant: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def pg_admin_url():
    """A PostgreSQL server for the whole run (embedded unless DATABASE_URL is set)."""
    url, data_dir = pg.server_admin_url()
    yield url
    pg.remove_data_dir(data_dir)


@pytest.fixture(scope="module")
async def database_url(pg_admin_url, request):
    """A fresh, empty database for one test module."""
    prefix = "t_" + re.sub(r"[^a-z0-9]+", "_", request.module.__name__.lower())[-40:]
    url = await pg.create_database(pg_admin_url, prefix)
    yield url
    await pg.drop_database(pg_admin_url, url)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """One real SeaweedFS S3 server for the whole run (static_servers.SeaweedFS: its
    `endpoint_url`, `client_kwargs()`, `create_bucket(name)`, `public_url(bucket)`).
    Tests use buckets of their own names. A test that stops it starts it again before it
    ends (in a `finally`), or uses `seaweedfs_private`. Stopped by its pid at the end."""
    server = static_servers.SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def seaweedfs_private(tmp_path_factory):
    """A SeaweedFS server of the test's own (about 3 s to start), for a test that stops,
    kills or restarts it. Stopped by its pid at the test's end, whatever happened."""
    server = static_servers.SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def nginx_for(tmp_path_factory):
    """`nginx_for(root)`: a running nginx (static_servers.Nginx: `url`, `pid`, `stop()`)
    serving the published directory `root` with deploy/nginx/logserver.conf. Every one
    started is stopped by its pid at the test's end, whatever happened."""
    started: list[static_servers.Nginx] = []

    def start(root: Path) -> static_servers.Nginx:
        server = static_servers.start_nginx(root, tmp_path_factory.mktemp("nginx"))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def pytest_sessionfinish(session, exitstatus):
    """Leave the counts where scripts/dev.py can repeat them as the run's last line."""
    import os

    path = os.environ.get("LOGSERVER_TEST_SUMMARY")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if not path or reporter is None:
        return
    stats = reporter.stats
    count = lambda key: len([r for r in stats.get(key, []) if getattr(r, "when", "call") in ("call", "setup")])  # noqa: E731
    failed = count("failed") + count("error")
    Path(path).write_text(f"{count('passed')} {failed} {count('skipped')}\n")
