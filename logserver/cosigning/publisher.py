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
consistent with (larger than) what it cosigned. Witnesses are asked about each tree
size's first (stored) signature: an idle re-sign (log_state only, issue 23) retries
a round that missed the quorum, and asks nothing once its size is published, so a
witnessed log's published checkpoint keeps its size's first signature, until the
refresh: once it was signed `witnessing.refresh_s` ago, the newest re-sign of the same
size is cosigned and published (migration 0005), so clients can tell the checkpoint is
still current (issue 20, freshness). Only the process that committed a
checkpoint asks about it; every process polls the published table, so several
processes sharing a database serve the same published checkpoint.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
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
DOWN_SUMMARY_S = 300.0  # a witness that stays down is logged once, then once per this


class WitnessHealth:
    """One line when a witness goes down, a summary while it stays down, one when it is back.

    Rounds run every few seconds while the log is busy; a warning per failed request
    (300 characters every 5 s per witness) buried everything else in the log."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        # name -> (down since, last line, failed requests, latest reason)
        self._down: dict[str, tuple[float, float, int, str]] = {}

    def failed(self, name: str, size: int, reason: str) -> None:
        now = self._clock()
        state = self._down.get(name)
        if state is None:
            self._down[name] = (now, now, 1, reason)
            log.warning("witness %r: cosigning size %d failed: %s (logged again every %.0f s while it lasts)",
                        name, size, reason, DOWN_SUMMARY_S)
            return
        since, last, failures, _ = state
        failures += 1
        if now - last >= DOWN_SUMMARY_S:
            log.warning("witness %r: still failing after %.0f s (%d failed requests); latest at size %d: %s",
                        name, now - since, failures, size, reason)
            last = now
        self._down[name] = (since, last, failures, reason)

    def succeeded(self, name: str) -> None:
        state = self._down.pop(name, None)
        if state is not None:
            since, _, failures, _ = state
            log.warning("witness %r: cosigning again after %.0f s (%d failed requests)",
                        name, self._clock() - since, failures)

    def down(self) -> dict[str, str]:
        """Each witness that is down, with its latest failure."""
        return {name: state[3] for name, state in self._down.items()}


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
        self._retry = False  # a re-sign of the newest, unpublished size: ask again
        self._resign: CheckpointRow | None = None  # the newest re-sign of the published size
        self._refresh_tried = -float("inf")  # time.monotonic() of the last refresh round
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()  # set, then replaced, whenever `published` moves
        self._session: aiohttp.ClientSession | None = None
        self.health = WitnessHealth()
        self.quorum_met: bool | None = None  # the last round's outcome (None: no round yet)
        self.quorum_reason = ""
        self.listeners: list[Callable[[], None]] = []  # called when `published` moves (the static publisher)

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
        # By id, then signed time: a cosigned refresh is the same stored row, signed later.
        if self.published is not None and \
                (checkpoint.id, checkpoint.signed_at_ms) <= (self.published.id, self.published.signed_at_ms):
            return
        self.published = checkpoint
        self.metrics.published_size.set(checkpoint.tree_size)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        for listener in self.listeners:
            listener()

    def offer(self, checkpoint: CheckpointRow) -> None:
        """A checkpoint this process committed: cosign it (or a newer one) soon.

        Ids order stored rows, one per tree size: a re-sign keeps its size's id, so
        it is not taken for an older checkpoint, and once its size is published it
        is not cosigned again. Until then (a round missed the quorum) each re-sign,
        once per checkpoint interval, retries the round."""
        if self._newest is None or checkpoint.id > self._newest.id:
            self._newest = checkpoint
            self._wake.set()
        elif checkpoint.id == self._newest.id and (self.published is None or self.published.id < checkpoint.id):
            self._retry = True
            self._wake.set()
        if self._resign is None or (checkpoint.id, checkpoint.signed_at_ms) > \
                (self._resign.id, self._resign.signed_at_ms):
            self._resign = checkpoint  # refreshed once the published one's cosignatures are old

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
                    newest, retry, self._retry = self._newest, self._retry, False
                    if newest is not None and (newest.id > self._attempted_id or retry):
                        self._attempted_id = newest.id
                        await self.cosign(newest)
                    await self._adopt(await self.store.latest_published())
                    await self._refresh_if_due()
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # a database outage: the next commit or poll retries
                    log.warning("cosigning round failed: %r", e)

    async def cosign(self, checkpoint: CheckpointRow) -> bool:
        """One round for `checkpoint`; returns whether it was published."""
        if self.published is not None and self.published.id >= checkpoint.id:
            self.metrics.rounds.labels("superseded").inc()
            return False
        # Witnesses are asked about a size's stored (first) signature, never a re-sign
        # (which lives only in log_state and keeps its size's id): one offered at
        # start-up or as a retry is replaced by that row, which published_checkpoints
        # requires (docs/witness.md; issue 20: freshness).
        checkpoint = await self.store.stored(checkpoint)
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
            if self.quorum_met is not False:  # once per outage, not per round
                log.warning("checkpoint %d (size %d): %s", checkpoint.id, checkpoint.tree_size, e)
        if met and self.quorum_met is False:
            log.warning("checkpoint %d (size %d): the witness quorum is met again", checkpoint.id,
                        checkpoint.tree_size)
        self.metrics.quorum_met.set(1 if met else 0)
        self.quorum_met = met
        self.quorum_reason = "" if met else (
            f"the last checkpoint (size {checkpoint.tree_size}) was cosigned by "
            f"{', '.join(sorted(witnessed)) or 'no witness'}; down: "
            + ", ".join(f"{n} ({r})" for n, r in sorted(self.health.down().items())))
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

    async def _refresh_if_due(self) -> None:
        """Cosigned freshness (issue 20; docs/witness.md "Freshness"): once the published
        checkpoint was signed `refresh_s` ago and the log has re-signed its size since,
        ask the witnesses to cosign that re-sign (same tree, newer time: a witness
        cosigns it with an empty proof), and publish it with their lines. A round that
        misses the quorum is tried again after refresh_s / 4 (at least 1 s)."""
        published, resign = self.published, self._resign
        if published is None or resign is None or resign.id != published.id \
                or resign.signed_at_ms <= published.signed_at_ms:
            return
        refresh_s = self.config.refresh_s
        if time.time() - published.signed_at_ms / 1000 < refresh_s \
                or time.monotonic() - self._refresh_tried < max(1.0, refresh_s / 4):
            return
        self._refresh_tried = time.monotonic()
        await self.refresh(resign)

    async def refresh(self, resign: CheckpointRow) -> bool:
        """One refresh round for `resign`, a re-sign of the published size; returns
        whether it was published."""
        session = self._session
        assert session is not None, "run() owns the HTTP session"
        names = list(self.policy.witnesses)
        results = await asyncio.gather(*(self._cosign_one(session, name, resign) for name in names))
        lines = [line for result in results for line in result]
        try:
            self.policy.check_quorum({line.witness for line in lines})
            met = True
        except QuorumNotMetError:
            met = False
        if not met and not self.config.fail_open:
            self.metrics.rounds.labels("refresh_quorum_missing").inc()
            return False
        note = resign.note + "".join(line.line for line in sorted(lines, key=lambda c: names.index(c.witness)))
        if not await self.store.publish_refresh(resign, note, met):
            self.metrics.rounds.labels("superseded").inc()
            return False
        self.metrics.rounds.labels("refreshed").inc()
        await self._adopt(CheckpointRow(resign.id, resign.tree_size, resign.root, resign.signed_at_ms, note))
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
            self.health.failed(name, checkpoint.tree_size, str(e))
            self.metrics.failures.labels(name, e.reason).inc()
            return ()
        except (TimeoutError, aiohttp.ClientError, OSError, BeyondTreeError) as e:
            outcome = "timeout" if isinstance(e, asyncio.TimeoutError) else "unreachable"
            self.health.failed(name, checkpoint.tree_size, f"{outcome}: {e!r}"[:200])
            self.metrics.failures.labels(name, outcome).inc()
            return ()
        finally:
            self.metrics.request_seconds.labels(name, outcome).observe(time.perf_counter() - started)
        self.health.succeeded(name)
        self._sizes[name] = result.size
        self.metrics.cosigned_size.labels(name).set(result.size)
        return result.lines

    async def _consistency_proof(self, old: int, new: int) -> list[bytes]:
        return await self.reader.consistency_proof(old, new)
