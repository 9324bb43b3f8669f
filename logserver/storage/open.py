"""Opening a log's database: the one way the server, the bench and the tests do it."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

import asyncpg

from ..merkle import EMPTY_ROOT
from .migrate import migrate
from .store import Store

log = logging.getLogger(__name__)


class LogSigner(Protocol):
    """What opening a log needs of its key (keys.log_key.LogKey is one)."""

    @property
    def origin(self) -> str: ...
    @property
    def public_key_bytes(self) -> bytes: ...
    @property
    def vkey(self) -> str: ...
    @property
    def vkeys(self) -> tuple[str, ...]: ...
    def sign_checkpoint(self, size: int, root: bytes, signed_at_ms: int) -> str: ...


async def open_log(pool: asyncpg.Pool, key: LogSigner, *, clock: Callable[[], float] = time.time) -> Store:
    """The Store of `key`'s log in the database behind `pool`, ready to sequence.

    In order: apply the migrations; record the log's identity (origin and public
    key) on first use, or refuse another log's database (IdentityMismatchError);
    record its checkpoint keys (vkeys), or refuse a key set that drops one it has
    published (IdentityMismatchError);
    on a new log, create the size-0 state with its first checkpoint, signed now
    (`clock`, POSIX seconds). Each step is atomic, durable on return and safe to
    repeat, so processes opening one database together, or one retrying after a
    failure, open the same log. The pool stays the caller's to close.
    """
    async with pool.acquire() as conn:
        await migrate(conn)
    store = Store(pool)
    await store.ensure_identity(key.origin, key.public_key_bytes, key.vkey)
    # Before anything is signed: a key is recorded before its first signature, and a
    # configuration dropping a recorded key signs nothing (IdentityMismatchError).
    for vkey in await store.ensure_published_keys(key.vkeys):
        log.info("log %s: recorded its checkpoint key %s", key.origin, vkey[:80])
    now_ms = int(clock() * 1000)
    if await store.initialize_state(key.sign_checkpoint(0, EMPTY_ROOT, now_ms), EMPTY_ROOT, now_ms):
        log.info("new log %s initialised at size 0", key.origin)
    return store
