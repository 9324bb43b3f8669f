"""Server processes over their lifetime: restart, identity checks, stale restores.

These run `python -m logserver.cli serve` as child processes against the test
PostgreSQL server, each test on a fresh database of its own.
"""
from __future__ import annotations

import subprocess
import sys

from logserver.config import load_config
from server_harness import write_config


def test_python_m_logserver_cli_runs():
    """`python -m logserver.cli` is how the docs and the tests start the server."""
    out = subprocess.run([sys.executable, "-m", "logserver.cli", "serve", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--config" in out.stdout


def test_environment_overrides_the_config_files_database_url_and_listen(tmp_path):
    """DATABASE_URL and LOGSERVER_LISTEN override the file; the file's keys stay valid."""
    cfg = write_config(tmp_path, "postgresql://file-host/file-db")
    env = {"DATABASE_URL": "postgresql://env-host/env-db", "LOGSERVER_LISTEN": "127.0.0.1:9999"}
    config = load_config(cfg, environ=env)
    assert config.database_url == env["DATABASE_URL"]
    assert config.host_port == ("127.0.0.1", 9999)
    config = load_config(cfg, environ={})
    assert config.database_url == "postgresql://file-host/file-db"
    assert config.host_port == ("127.0.0.1", 0)
