"""Apply the database migrations (the server also does this when it starts)."""
from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from ..config import load_config
from ..storage import migrate
from .preflight import create_checked_pool, resolve_database

HELP = "apply database migrations"
EXAMPLES = """\
  logserver migrate --config logserver.toml
  DATABASE_URL=postgresql://logserver@db.example:5432/logserver logserver migrate --config logserver.toml
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=Path, help="server config file (TOML)")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    url = resolve_database(config)

    async def go() -> list[str]:
        pool = await create_checked_pool(config, url, min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn:
                return await migrate(conn)
        finally:
            await pool.close()

    applied = asyncio.run(go())
    print("applied: " + ", ".join(applied) if applied else "the database is up to date")
    return 0
