"""Apply the database migrations (the server also does this when it starts)."""
from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from ..config import load_config
from ..storage import create_pool, migrate, resolve_database_url

HELP = "apply database migrations"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=Path, help="server config file (TOML)")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    url, _ = resolve_database_url(config.database_url, config.data_dir)

    async def go() -> list[str]:
        pool = await create_pool(url, min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn:
                return await migrate(conn)
        finally:
            await pool.close()

    applied = asyncio.run(go())
    print("applied: " + ", ".join(applied) if applied else "the database is up to date")
    return 0
