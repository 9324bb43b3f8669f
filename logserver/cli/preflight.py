"""Checks `serve`, `migrate` and `fsck` make before they start, so that an operator's
mistake ends in one line naming the value at fault, where it came from, and what to do.

Each raises a CliError subclass (cli/errors.py, exit statuses in docs/cli.md). The
checks run once, before the app or the pool exists; what they miss (a database that
goes away a moment later) is still reported by the server itself.
"""
from __future__ import annotations

import asyncio
import errno
import os
import socket
from typing import Any

import asyncpg

from ..config import Config, redact_url, user_name
from ..integrity.location import LogLocationError, check_log_location
from .errors import DatabaseError, FileAccessError, ListenError

CONNECT_TIMEOUT_S = 5.0  # as storage/database.py's pool


def check_data_dir(config: Config, *, create: bool = True) -> None:
    """The data directory exists (or can be made) and this user can create files in it."""
    d = config.data_dir
    source = config.sources.get("data_dir", "data_dir")
    try:
        if create:
            d.mkdir(parents=True, exist_ok=True)
        probe = d / f".logserver-write-test.{os.getpid()}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        probe.unlink()
    except OSError as e:
        if isinstance(e, PermissionError) or e.errno == errno.EROFS:
            user = user_name()
            advice = (f"this process runs as user {user}: make it theirs (`chown -R {user} {d}`) "
                      "or set data_dir to a directory they can write")
        else:
            advice = "set data_dir to a directory"
        raise FileAccessError(f"data directory {d} (from {source}) is not writable: {e.strerror}; {advice}") from None


def check_listen(config: Config) -> None:
    """The listen address can be bound now (it is bound for real only after start-up)."""
    host, port = config.host_port
    source = config.sources.get("listen", "listen")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ListenError(f"cannot listen on {host}:{port} (from {source}): {e.strerror}; give an address "
                          "of this host, e.g. --listen 127.0.0.1:8080") from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as s:
            # As asyncio's create_server, which aiohttp uses: SO_REUSEADDR on POSIX.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(address)
            except OSError as e:
                raise listen_error(host, port, source, e) from None


def listen_error(host: str, port: int, source: str, e: OSError) -> ListenError:
    if e.errno == errno.EADDRINUSE:
        advice = "another process listens there (a server already running?): stop it or choose another port"
    elif e.errno == errno.EACCES:
        advice = "ports below 1024 need privileges: choose a port from 1024 up"
    elif e.errno == errno.EADDRNOTAVAIL:
        advice = "that address is not one of this host's: give one of its addresses, e.g. 127.0.0.1"
    else:
        advice = "choose another address"
    reason = (e.strerror or str(e)).lower()
    return ListenError(
        f"cannot listen on {host}:{port} (from {source}): {reason}; {advice}, e.g. --listen 127.0.0.1:8081"
    )


def check_location(config: Config) -> None:
    """A data directory of a log on another database is not opened on the embedded one."""
    try:
        check_log_location(config.data_dir, config.checkpoint_file, config.database_url)
    except LogLocationError as e:
        raise DatabaseError(str(e)) from None


def database_error(e: BaseException, url: str, source: str) -> DatabaseError | None:
    """The one-line account of a failed connection, or None if `e` is not one."""
    shown = redact_url(url)
    if isinstance(e, asyncpg.InvalidCatalogNameError):
        advice = "create it (e.g. `createdb NAME` as a PostgreSQL superuser) or fix the database name in the URL"
    elif isinstance(e, asyncpg.InvalidAuthorizationSpecificationError):
        advice = "create that role (CREATE ROLE NAME LOGIN), or fix the user name in the URL"
    elif isinstance(e, asyncpg.InvalidPasswordError):
        advice = "fix the password (in the URL, or ~/.pgpass)"
    elif isinstance(e, asyncpg.PostgresError):
        advice = "fix the URL or the server's settings (pg_hba.conf) for this user and database"
    elif isinstance(e, asyncpg.ClientConfigurationError):
        advice = "fix the URL: postgresql://USER@HOST:5432/DATABASE"
    elif isinstance(e, (TimeoutError, asyncio.TimeoutError)):
        return DatabaseError(f"cannot connect to the database {shown} (from {source}): no answer within "
                             f"{CONNECT_TIMEOUT_S:g} s; check the host and port, and any firewall between")
    elif isinstance(e, socket.gaierror):
        advice = "check the host name in the URL"
    elif isinstance(e, OSError):
        advice = "check that PostgreSQL runs there and listens on that host and port"
        if source == "DATABASE_URL":
            advice += ", or unset DATABASE_URL to use the embedded database"
    else:
        return None
    reason = _one_line(e)
    return DatabaseError(f"cannot use the database {shown} (from {source}): {reason}; {advice}")


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and not isinstance(e, socket.gaierror) and e.errno and e.errno > 0:
        text = os.strerror(e.errno).lower()  # asyncio's own text repeats the address
    elif isinstance(e, OSError) and e.strerror:
        text = e.strerror
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())


def check_database(config: Config) -> None:
    """Connect once to the configured database (the embedded one is started by the server)."""
    if not config.database_url:
        return
    asyncio.run(_try_connect(config.database_url, config.sources.get("database_url", "database_url")))


async def _try_connect(url: str, source: str) -> None:
    try:
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
    except Exception as e:
        error = database_error(e, url, source)
        if error is None:
            raise
        raise error from None
    await conn.close()


def resolve_database(config: Config) -> str:
    """The database URL, starting the embedded server if none is configured (blocking)."""
    from ..storage import resolve_database_url
    from ..storage.embedded import EmbeddedPostgresError

    check_location(config)
    if not config.database_url:
        check_data_dir(config)
    try:
        url, _ = resolve_database_url(config.database_url, config.data_dir)
    except EmbeddedPostgresError as e:
        raise embedded_error(e) from None
    return url


def embedded_error(e: Exception) -> DatabaseError:
    return DatabaseError(f"{_one_line(e)}; set DATABASE_URL or database_url to use another PostgreSQL server")


async def create_checked_pool(config: Config, url: str, **kwargs: Any) -> asyncpg.Pool:
    """storage.create_pool, with a failed connection reported as a DatabaseError."""
    from ..storage import create_pool

    source = config.sources.get("database_url", "the embedded database")
    try:
        return await create_pool(url, **kwargs)
    except Exception as e:
        error = database_error(e, url, source)
        if error is None:
            raise
        raise error from None
