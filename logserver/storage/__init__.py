"""PostgreSQL storage: the embedded server, migrations and the Store."""
from .database import DATABASE_UNAVAILABLE, create_pool, resolve_database_url
from .errors import CommitRolledBackError, ConcurrentUpdateError, IdentityMismatchError, StorageError
from .migrate import MigrationError, migrate
from .rows import CheckpointRow, ExistingEntry, LeafRow, NewLeaf, Prefetch, Prefetched, TileKey
from .sequencing import SequencingTransaction
from .store import Store

__all__ = [
    "DATABASE_UNAVAILABLE", "create_pool", "resolve_database_url", "MigrationError", "migrate",
    "CheckpointRow", "CommitRolledBackError", "ConcurrentUpdateError", "ExistingEntry", "IdentityMismatchError", "LeafRow",
    "NewLeaf", "Prefetch", "Prefetched", "SequencingTransaction", "StorageError", "Store", "TileKey",
]
