"""Where does this data directory's log live? A check before the database is opened.

The checkpoint file (checkpoint_file.py) is written next to the log's data whichever
database holds it. Found in a data directory without an embedded database, while no
database is configured, it means the log's database is elsewhere and the operator forgot
to say where (DATABASE_URL unset in this shell). Opening the embedded database instead
would start a new, empty log, which the stale-restore check then refuses with a message
about old backups: true, but not the cause.
"""
from __future__ import annotations

from pathlib import Path

from .checkpoint_file import CheckpointFileError, read_checkpoint_file

# Where storage/embedded.py keeps the embedded server (initdb writes PG_VERSION first).
EMBEDDED_DIR = "postgres"


class LogLocationError(RuntimeError):
    """The data directory belongs to a log whose database is not the one about to be used."""


def check_log_location(data_dir: Path, checkpoint_file: Path, database_url: str | None) -> None:
    """Raise LogLocationError if the embedded database would be used for a log that lives elsewhere."""
    if database_url:
        return  # a configured server: the start-up checks compare it with the file
    try:
        saved = read_checkpoint_file(checkpoint_file)
    except CheckpointFileError:
        return  # reported, with its cause, by the start-up checks
    if saved is None or (data_dir / EMBEDDED_DIR / "PG_VERSION").exists():
        return
    origin = saved.note.split("\n", 1)[0]
    raise LogLocationError(
        f"{checkpoint_file} holds checkpoint {saved.tree_size} of log {origin!r}, but {data_dir} has no "
        f"embedded database ({data_dir / EMBEDDED_DIR}), so the log's database is elsewhere and none is "
        "configured: set DATABASE_URL (or database_url in the config) to it"
    )
