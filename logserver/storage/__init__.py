"""PostgreSQL storage: the embedded server, migrations and the Store."""
from .database import DATABASE_UNAVAILABLE, create_pool, resolve_database_url
from .migrate import MigrationError, migrate
from .store import (
    CheckpointRow,
    CommitRolledBackError,
    ConcurrentUpdateError,
    ExistingEntry,
    IdentityMismatchError,
    LeafRow,
    NewLeaf,
    Prefetch,
    Prefetched,
    SequencingTransaction,
    StorageError,
    Store,
)

__all__ = [
    "DATABASE_UNAVAILABLE", "create_pool", "resolve_database_url", "MigrationError", "migrate",
    "CheckpointRow", "CommitRolledBackError", "ConcurrentUpdateError", "ExistingEntry", "IdentityMismatchError", "LeafRow",
    "NewLeaf", "Prefetch", "Prefetched", "SequencingTransaction", "StorageError", "Store",
]
