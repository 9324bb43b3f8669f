"""PostgreSQL storage: the embedded server, migrations, opening a log (open_log), the
Store and its sequencing transaction, and the seam's protocols."""
from .database import DATABASE_UNAVAILABLE, create_pool, resolve_database_url
from .errors import CommitRolledBackError, ConcurrentUpdateError, IdentityMismatchError, StorageError
from .migrate import MigrationError, migrate
from .open import open_log
from .protocols import LogStore, Sequencing, TileSource
from .rows import (
    BUNDLE_LEAF,
    HEADS_LEAF,
    CheckpointRow,
    ExistingEntry,
    FleetHead,
    HeadsChange,
    HeadsSnapshot,
    LeafRow,
    NewLeaf,
    Prefetch,
    Prefetched,
    SizedHeadsSnapshot,
    TileKey,
)
from .sequencing import SequencingTransaction
from .store import Store

__all__ = [
    "BUNDLE_LEAF",
    "DATABASE_UNAVAILABLE",
    "HEADS_LEAF",
    "CheckpointRow",
    "CommitRolledBackError",
    "ConcurrentUpdateError",
    "ExistingEntry",
    "FleetHead",
    "HeadsChange",
    "HeadsSnapshot",
    "IdentityMismatchError",
    "LeafRow",
    "LogStore",
    "MigrationError",
    "NewLeaf",
    "Prefetch",
    "Prefetched",
    "Sequencing",
    "SequencingTransaction",
    "SizedHeadsSnapshot",
    "StorageError",
    "Store",
    "TileKey",
    "TileSource",
    "create_pool",
    "migrate",
    "open_log",
    "resolve_database_url",
]
