"""The checkpoint the API publishes: the hook between the routes and witnessing.

Without `witness_policy` these return the latest signed checkpoint, exactly as
before. With one, they return the latest checkpoint cosigned by a witness quorum
(logserver/cosigning/publisher.py) and turn "not cosigned in time" into 503.
"""
from __future__ import annotations

from aiohttp import web

from ..config import Config
from ..cosigning import DirectPublisher, NotPublishedError, Publisher, WitnessedPublisher, load_witness_policy
from ..cosigning.metrics import CosigningMetrics
from ..formats import Policy
from ..http.errors import ApiError
from ..keys.log_key import LogKey
from ..storage import CheckpointRow
from ..storage.cosignatures import CosignatureStore
from .keys import CONFIG, METRICS, PUBLISHER, READER, STORE, WITNESS_POLICY


def load_policy(config: Config, log_key: LogKey) -> Policy | None:
    """The parsed witness policy, or None (ConfigError when it is unusable)."""
    if config.witness_policy is None:
        return None
    keys = [log_key.public_key_bytes] + ([log_key.mldsa44_public_key_bytes] if log_key.mldsa44_public_key_bytes else [])
    return load_witness_policy(config.witness_policy, config.origin, keys)


async def start_publisher(app: web.Application) -> Publisher:
    """Build the publisher (after storage is up) and load its state."""
    policy = app[WITNESS_POLICY]
    if policy is None:
        publisher: Publisher = DirectPublisher(app[READER])
    else:
        publisher = WitnessedPublisher(policy, CosignatureStore(app[STORE].pool), app[READER],
                                       app[CONFIG].witnessing, CosigningMetrics(app[METRICS].registry))
        await publisher.load()
        latest = app[READER].latest
        if latest is not None:
            publisher.offer(latest)
    app[PUBLISHER] = publisher
    return publisher


def _unavailable(app: web.Application, e: NotPublishedError) -> ApiError:
    return ApiError(503, "witness_quorum_unavailable", f"{e}; retry later (retries are idempotent)",
                    retry_after=app[CONFIG].limits.retry_after_s)


async def published_latest(app: web.Application) -> CheckpointRow:
    """The checkpoint GET /checkpoint and /v1/log serve."""
    try:
        return await app[PUBLISHER].latest()
    except NotPublishedError as e:
        raise _unavailable(app, e) from None


async def published_covering(app: web.Application, size: int, *, wait: bool = True) -> CheckpointRow:
    """A published checkpoint of at least `size` for a receipt; with witnesses, waits
    up to `witnessing.max_wait_s` (without `wait`, not at all) and then answers 503."""
    try:
        return await app[PUBLISHER].covering(size, wait_s=None if wait else 0)
    except NotPublishedError as e:
        raise _unavailable(app, e) from None


async def receipt_checkpoint(app: web.Application, index: int, committed: CheckpointRow,
                             proof: list[bytes]) -> tuple[CheckpointRow, list[bytes]]:
    """The checkpoint and inclusion proof for the receipt of an entry just appended at
    `index` under `committed` (with its proof). With witnesses: the published checkpoint
    covering it, and a proof against that one when it is another checkpoint."""
    if not app[PUBLISHER].witnessed:
        return committed, proof
    cp = await published_covering(app, index + 1)
    if cp.id == committed.id:
        return cp, proof
    return cp, await app[READER].inclusion_proof(index, cp.tree_size)
