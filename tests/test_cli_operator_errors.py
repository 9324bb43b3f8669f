"""A new operator's mistakes end in one line, not a traceback (issue 23, section 4).

Each case runs `logserver serve`, `migrate` or `fsck` as a child process, as an operator
would, and checks the exit status (the table in docs/cli.md), that stderr is exactly one
line naming what failed, the value it came from and what to do, and that no traceback
is printed. Permission cases run the child as `nobody` when the tests run as root (root
reads and writes anything), or with the file or directory's mode taken away otherwise.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

import pytest

from server_harness import ServerProcess, write_config

CLI = [sys.executable, "-m", "logserver.cli"]
DB_COMMANDS = ["serve", "migrate", "fsck"]
UNREACHABLE = "postgresql://logserver:s3cret-pw@127.0.0.1:1/nothing"
AS_ROOT = os.geteuid() == 0


def run(cmd: str, config: Path, *extra: str, env: dict[str, str] | None = None, user: str | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "LOGSERVER_LISTEN")}
    return subprocess.run([*CLI, cmd, "--config", str(config), *extra], env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=120, user=user, cwd=cwd or config.parent)


def one_line(done: subprocess.CompletedProcess, cmd: str, status: int) -> str:
    """The one error line of a refused command."""
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    assert done.returncode == status, output
    lines = done.stderr.splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith(f"logserver {cmd}: error: "), lines
    return lines[0]


@pytest.fixture
def shared_dir():
    """A directory `nobody` can enter (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="logserver-operator-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def locked_out(path: Path, mode: int, *, give_nobody: Path | None = None) -> tuple[str | None, str]:
    """(user to run the child as, that user's name) such that `path` is out of its reach:
    `nobody` when the tests run as root (who reads and writes anything; `give_nobody`
    becomes theirs), else this user after `path` gets `mode`."""
    if AS_ROOT:
        if give_nobody is not None:
            nobody = pwd.getpwnam("nobody")
            os.chown(give_nobody, nobody.pw_uid, nobody.pw_gid)
        return "nobody", "nobody"
    path.chmod(mode)
    return None, pwd.getpwuid(os.geteuid()).pw_name


# ---- the database ----------------------------------------------------------------------


@pytest.mark.parametrize("cmd", DB_COMMANDS)
def test_an_unreachable_database_is_one_line_naming_the_config_key(tmp_path, cmd):
    config = write_config(tmp_path, UNREACHABLE)
    line = one_line(run(cmd, config), cmd, 3)
    assert "cannot use the database postgresql://logserver:***@127.0.0.1:1/nothing" in line, line
    assert f"(from database_url in {config})" in line and "connection refused" in line, line
    assert "check that PostgreSQL runs there" in line and "s3cret-pw" not in line, line


@pytest.mark.parametrize("cmd", DB_COMMANDS)
def test_an_unreachable_database_from_the_environment_says_so(tmp_path, cmd):
    config = write_config(tmp_path, "postgresql://file-host/never-used")
    line = one_line(run(cmd, config, env={"DATABASE_URL": UNREACHABLE}), cmd, 3)
    assert "(from DATABASE_URL)" in line and "or unset DATABASE_URL to use the embedded database" in line, line


def _with(url: str, *, user: str | None = None, database: str | None = None) -> str:
    parts = urllib.parse.urlsplit(url)
    if user is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{user}@{host}")
    if database is not None:
        parts = parts._replace(path="/" + database)
    return urllib.parse.urlunsplit(parts)


@pytest.mark.parametrize("cmd", DB_COMMANDS)
def test_a_role_that_does_not_exist_is_named(tmp_path, pg_admin_url, cmd):
    config = write_config(tmp_path, _with(pg_admin_url, user="no_such_role"))
    line = one_line(run(cmd, config), cmd, 3)
    assert 'role "no_such_role" does not exist' in line and "create that role" in line, line


@pytest.mark.parametrize("cmd", DB_COMMANDS)
def test_a_database_that_does_not_exist_is_named(tmp_path, pg_admin_url, cmd):
    config = write_config(tmp_path, _with(pg_admin_url, database="no_such_database"))
    line = one_line(run(cmd, config), cmd, 3)
    assert 'database "no_such_database" does not exist' in line and "create it" in line, line


@pytest.mark.parametrize("cmd", DB_COMMANDS)
@pytest.mark.parametrize("url, says", [
    ("mysql://logserver@db.example/logserver", "want a postgresql:// or postgres:// URL"),
    ("db.example:5432/logserver", "which has no scheme"),
])
def test_a_url_of_the_wrong_scheme_names_the_key(tmp_path, cmd, url, says):
    line = one_line(run(cmd, write_config(tmp_path / "file", url)), cmd, 3)
    assert line.startswith(f"logserver {cmd}: error: database_url: ") and says in line, line
    config = write_config(tmp_path / "env", "postgresql://file-host/never-used")
    line = one_line(run(cmd, config, env={"DATABASE_URL": url}), cmd, 3)
    assert line.startswith(f"logserver {cmd}: error: DATABASE_URL: ") and says in line, line


# ---- files -----------------------------------------------------------------------------


@pytest.mark.parametrize("cmd", ["serve", "fsck"])
def test_an_unreadable_log_key_is_one_line(shared_dir, cmd):
    config = write_config(shared_dir, UNREACHABLE)
    key = shared_dir / "log.key"
    user, who = locked_out(key, 0o000)
    line = one_line(run(cmd, config, user=user), cmd, 5)
    assert f"log_key: cannot read {key}: Permission denied; this process runs as user {who}" in line, line
    assert f"chown {who} {key}" in line, line


@pytest.mark.parametrize("cmd", ["serve", "fsck"])
def test_a_log_key_that_is_a_directory_is_one_line(tmp_path, cmd):
    config = write_config(tmp_path, UNREACHABLE)
    (tmp_path / "log.key").unlink()
    (tmp_path / "log.key").mkdir(mode=0o700)
    line = one_line(run(cmd, config), cmd, 5)
    assert f"log_key: cannot read {tmp_path / 'log.key'}: Is a directory" in line, line


@pytest.mark.parametrize("cmd", DB_COMMANDS)
def test_a_data_directory_that_is_not_writable_is_one_line(shared_dir, cmd):
    # No database_url: the embedded database would live in the data directory.
    config = write_config(shared_dir, "unused")
    config.write_text(config.read_text().replace('database_url = "unused"\n', ""))
    data = shared_dir / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    user, who = locked_out(data, 0o555, give_nobody=shared_dir / "log.key")
    line = one_line(run(cmd, config, user=user), cmd, 5)
    assert f"data directory {data} (from data_dir in {config}) is not writable: Permission denied" in line, line
    assert f"chown -R {who} {data}" in line, line
    assert not (data / "postgres").exists()


# ---- the listen address ----------------------------------------------------------------


@pytest.mark.parametrize("where", ["--listen", "config"])
def test_a_port_in_use_is_one_line(tmp_path, where):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, UNREACHABLE)
        if where == "config":
            config.write_text(config.read_text().replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"'))
            done = run("serve", config)
        else:
            done = run("serve", config, "--listen", f"127.0.0.1:{port}")
    line = one_line(done, "serve", 4)
    source = "--listen" if where == "--listen" else f"listen in {config}"
    assert f"cannot listen on 127.0.0.1:{port} (from {source}): address already in use" in line, line
    assert "another process listens there" in line, line


# ---- DATABASE_URL forgotten ------------------------------------------------------------


async def test_a_forgotten_database_url_names_the_real_cause(tmp_path, database_url):
    config = write_config(tmp_path, "unused")
    config.write_text(config.read_text().replace('database_url = "unused"\n', ""))
    server = ServerProcess(config, database_url)  # DATABASE_URL set in its environment
    try:
        await server.start()
    finally:
        assert await server.stop() == 0, server.output()
    saved = json.loads((tmp_path / "data" / "latest-checkpoint").read_text())
    for cmd in DB_COMMANDS:
        line = one_line(run(cmd, config), cmd, 3)  # the same, without DATABASE_URL
        assert f"holds checkpoint {saved['tree_size']} of log 'test.logserver.example/log'" in line, line
        assert "has no embedded database" in line and "set DATABASE_URL (or database_url in the config)" in line
        assert "old backup" not in line
    assert not (tmp_path / "data" / "postgres").exists()
