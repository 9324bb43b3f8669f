"""Choosing the database (configured server or embedded) and opening the asyncpg pool."""
from __future__ import annotations

import asyncio
import os
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
    """Return (url, embedded). `DATABASE_URL` beats the config; neither means embedded.

    Starting the embedded server blocks for about a second on first use.
    """
    url = os.environ.get("DATABASE_URL") or configured
    if url:
        return url, False
    return embedded_postgres_uri(data_dir), True


async def create_pool(url: str, *, min_size: int = 2, max_size: int = 10, command_timeout: float = 30.0) -> asyncpg.Pool:
    """An asyncpg pool with bounded connect and command times, so an outage fails fast."""
    return await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=5.0,  # connect timeout
        command_timeout=command_timeout,
        max_inactive_connection_lifetime=60.0,
    )
