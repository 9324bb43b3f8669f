"""The storage layer's own errors (a database outage is asyncpg's; see DATABASE_UNAVAILABLE)."""
from __future__ import annotations


class StorageError(RuntimeError):
    """Base class for storage-level failures that are not plain database outages."""


class IdentityMismatchError(StorageError):
    """The database belongs to another log (origin or public key differ)."""


class ConcurrentUpdateError(StorageError):
    """The compare-and-swap on log_state failed: another sequencer moved the log."""


class CommitRolledBackError(StorageError):
    """COMMIT answered ROLLBACK: the transaction had been aborted, nothing was stored.

    PostgreSQL does not raise for a COMMIT of an aborted transaction (a statement
    in it failed and its error was caught); it rolls back and says so in the
    command status. Nothing of the batch is durable; the sequencer answers its
    submitters 503 (a retry is safe).
    """
