"""Choosing the database (configured server or embedded) and opening the asyncpg pool."""
from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from .embedded import embedded_postgres_uri

# Database errors that mean "the database is unavailable right now" rather than
# "this request or this code is wrong". The HTTP layer answers them with 503.
DATABASE_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.QueryCanceledError,
    asyncpg.LockNotAvailableError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)


def resolve_database_url(configured: str | None, data_dir: Path) -> tuple[str, bool]:
    """Return (url, embedded): the configured server, or the embedded one when none is.

    `configured` is the config's database_url, to which load_config has already
    applied `DATABASE_URL` (from the environment it was given); reading the
    process environment again here would override a config built with another
    environment. Starting the embedded server blocks for about a second on first use.
    """
    if configured:
        return configured, False
    return embedded_postgres_uri(data_dir), True


async def create_pool(url: str, *, min_size: int = 2, max_size: int = 10,
                      command_timeout: float = 30.0) -> asyncpg.Pool:
    """An asyncpg pool with bounded connect and command times, so an outage fails fast."""
    return await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=5.0,  # connect timeout
        command_timeout=command_timeout,
        max_inactive_connection_lifetime=60.0,
    )
