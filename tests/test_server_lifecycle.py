"""Server processes over their lifetime: restart, identity checks, stale restores.

These run `python -m logserver.cli serve` as child processes against the test
PostgreSQL server, each test on a fresh database of its own.
"""
from __future__ import annotations

import subprocess
import sys


def test_python_m_logserver_cli_runs():
    """`python -m logserver.cli` is how the docs and the tests start the server."""
    out = subprocess.run([sys.executable, "-m", "logserver.cli", "serve", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--config" in out.stdout
