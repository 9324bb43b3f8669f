"""Which checkpoint the log publishes (GET /checkpoint, /v1/log, receipts).

* `DirectPublisher` (no witness policy): the latest signed checkpoint, as before.
* `WitnessedPublisher`: after each commit (`offer`), a background round asks every
  witness of the policy, in parallel and within `request_timeout_s`, to cosign the
  newest checkpoint. Verified cosignatures are stored; when they meet the quorum
  the checkpoint is published with the cosignature lines stapled to its note.
  Fail closed (default): without a quorum nothing new is published, and callers
  waiting for a checkpoint covering their entry give up after `max_wait_s`
  (`NotPublishedError`, a 503). Fail open publishes every checkpoint with
  whatever cosignatures it got.

Rounds coalesce: a round always takes the newest committed checkpoint, so a burst
of commits costs one round, and a witness is always asked about a checkpoint
consistent with (larger than) what it cosigned. Only the process that committed a
checkpoint asks about it; every process polls the published table, so several
processes sharing a database serve the same published checkpoint.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

import aiohttp

from ..config import WitnessingConfig
from ..formats import Policy, QuorumNotMetError
from ..read.tree_reader import BeyondTreeError, TreeReader
from ..storage import CheckpointRow
from ..storage.cosignatures import CosignatureLine, CosignatureStore
from .metrics import CosigningMetrics
from .requester import CosigningFailed, request_cosignature

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often a process re-reads the checkpoint other processes published


class NotPublishedError(Exception):
    """No published checkpoint covers the requested size in time (fail closed)."""


class Publisher(Protocol):
    witnessed: bool

    def offer(self, checkpoint: CheckpointRow) -> None: ...

    async def latest(self) -> CheckpointRow: ...

    async def covering(self, size: int, *, wait_s: float | None = None) -> CheckpointRow: ...

    async def run(self) -> None:
        """The publisher's background task (server/app.py starts it); runs until cancelled."""
        ...


class DirectPublisher:
    """No witnesses: the latest signed checkpoint is the published one."""

    witnessed = False

    def __init__(self, reader: TreeReader):
        self.reader = reader

    def offer(self, checkpoint: CheckpointRow) -> None:
        pass

    async def latest(self) -> CheckpointRow:
        return await self.reader.latest_or_cached()  # a database outage still serves the cached one

    async def covering(self, size: int, *, wait_s: float | None = None) -> CheckpointRow:
        return await self.reader.covering(size)

    async def run(self) -> None:
        await asyncio.Event().wait()


class WitnessedPublisher:
    witnessed = True

    def __init__(self, policy: Policy, store: CosignatureStore, reader: TreeReader, config: WitnessingConfig,
                 metrics: CosigningMetrics):
        self.policy = policy
        self.store = store
        self.reader = reader
        self.config = config
        self.metrics = metrics
        self.published: CheckpointRow | None = None
        self._sizes: dict[str, int] = {}       # witness name -> size it last cosigned, as far as we know
        self._newest: CheckpointRow | None = None
        self._attempted_id = 0
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()  # set, then replaced, whenever `published` moves
        self._session: aiohttp.ClientSession | None = None

    # --- state ---------------------------------------------------------------------------

    async def load(self) -> None:
        """Read the published checkpoint and the witnesses' sizes from the database."""
        self._sizes = {name: size for name, size in (await self.store.witness_sizes()).items()
                       if name in self.policy.witnesses}
        for name, size in self._sizes.items():
            self.metrics.cosigned_size.labels(name).set(size)
        await self._adopt(await self.store.latest_published())

    async def _adopt(self, checkpoint: CheckpointRow | None) -> None:
        if checkpoint is None:
            return
        if self.published is not None and checkpoint.id <= self.published.id:
            return
        self.published = checkpoint
        self.metrics.published_size.set(checkpoint.tree_size)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def offer(self, checkpoint: CheckpointRow) -> None:
        """A checkpoint this process committed: cosign it (or a newer one) soon."""
        if self._newest is None or checkpoint.id > self._newest.id:
            self._newest = checkpoint
            self._wake.set()

    # --- reads ---------------------------------------------------------------------------

    async def latest(self) -> CheckpointRow:
        if self.published is None:
            await self._adopt(await self.store.latest_published())
        if self.published is None:
            raise NotPublishedError("no checkpoint has been cosigned by a quorum of witnesses yet")
        return self.published

    async def covering(self, size: int, *, wait_s: float | None = None) -> CheckpointRow:
        """The published checkpoint once it covers `size`, waiting up to `wait_s`
        (default: the configured max_wait_s). Raises NotPublishedError on timeout,
        BeyondTreeError when the log has not even signed that size."""
        await self.reader.covering(size)
        deadline = time.monotonic() + (self.config.max_wait_s if wait_s is None else wait_s)
        while True:
            cp = self.published
            if cp is not None and cp.tree_size >= size:
                return cp
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                have = "none" if cp is None else f"size {cp.tree_size}"
                raise NotPublishedError(
                    f"no checkpoint covering size {size} has a witness quorum yet (published: {have})")
            # run() adopts what this or another process publishes, within POLL_S.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    # --- the cosigning loop --------------------------------------------------------------

    async def run(self) -> None:
        """Cosign what `offer` brings, and pick up what other processes published."""
        timeout = aiohttp.ClientTimeout(total=self.config.request_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._session = session
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_S)
                self._wake.clear()
                try:
                    newest = self._newest
                    if newest is not None and newest.id > self._attempted_id:
                        self._attempted_id = newest.id
                        await self.cosign(newest)
                    await self._adopt(await self.store.latest_published())
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # a database outage: the next commit or poll retries
                    log.warning("cosigning round failed: %r", e)

    async def cosign(self, checkpoint: CheckpointRow) -> bool:
        """One round for `checkpoint`; returns whether it was published."""
        if self.published is not None and self.published.id >= checkpoint.id:
            self.metrics.rounds.labels("superseded").inc()
            return False
        session = self._session
        assert session is not None, "run() owns the HTTP session"
        names = list(self.policy.witnesses)
        results = await asyncio.gather(*(self._cosign_one(session, name, checkpoint) for name in names))
        lines = [line for result in results for line in result]
        await self.store.add(checkpoint.id, lines)
        witnessed = {line.witness for line in lines}
        try:
            self.policy.check_quorum(witnessed)
            met = True
        except QuorumNotMetError as e:
            met = False
            log.warning("checkpoint %d (size %d): %s", checkpoint.id, checkpoint.tree_size, e)
        self.metrics.quorum_met.set(1 if met else 0)
        if not met and not self.config.fail_open:
            self.metrics.rounds.labels("quorum_missing").inc()
            return False
        # Policy order, so the same cosignatures always staple the same way.
        note = checkpoint.note + "".join(line.line for line in sorted(lines, key=lambda c: names.index(c.witness)))
        if not await self.store.publish(checkpoint, note, met):
            self.metrics.rounds.labels("superseded").inc()
            return False
        self.metrics.rounds.labels("published" if met else "published_without_quorum").inc()
        await self._adopt(CheckpointRow(checkpoint.id, checkpoint.tree_size, checkpoint.root,
                                        checkpoint.signed_at_ms, note))
        return True

    async def _cosign_one(
        self, session: aiohttp.ClientSession, name: str, checkpoint: CheckpointRow,
    ) -> tuple[CosignatureLine, ...]:
        witness = self.policy.witnesses[name]
        started = time.perf_counter()
        outcome = "ok"
        try:
            result = await asyncio.wait_for(
                request_cosignature(session, witness, checkpoint, checkpoint.note, self._sizes.get(name, 0),
                                    self._consistency_proof),
                self.config.request_timeout_s,
            )
        except CosigningFailed as e:
            outcome = e.reason
            if e.witness_size is not None:
                self._sizes[name] = e.witness_size
            log.warning("cosigning size %d: %s", checkpoint.tree_size, e)
            self.metrics.failures.labels(name, e.reason).inc()
            return ()
        except (TimeoutError, aiohttp.ClientError, OSError, BeyondTreeError) as e:
            outcome = "timeout" if isinstance(e, asyncio.TimeoutError) else "unreachable"
            log.warning("cosigning size %d: witness %r: %s %r", checkpoint.tree_size, name, outcome, e)
            self.metrics.failures.labels(name, outcome).inc()
            return ()
        finally:
            self.metrics.request_seconds.labels(name, outcome).observe(time.perf_counter() - started)
        self._sizes[name] = result.size
        self.metrics.cosigned_size.labels(name).set(result.size)
        return result.lines

    async def _consistency_proof(self, old: int, new: int) -> list[bytes]:
        return await self.reader.consistency_proof(old, new)
