"""Fast bulk loading of synthetic leaves through the real sequencer code path.

    python -m bench.bulkload --database-url URL --log-key KEY --size N [--batch 65536]

Leaves are integrated by `Sequencer.integrate` itself, in large batches: the same
transaction under the log_state row lock, the same pre-sign check, COPY of the
leaves, tile upserts, fleet heads and a signed checkpoint per batch. Only the HTTP
layer and the signature checks are bypassed, and per-entry receipts are skipped.

The leaves are well-formed bundle leaves (the canonical encoding of a DSSE
envelope with a schema-valid payload, fleet "bulk", increasing sequences), but
their two signatures are placeholders that do not verify: a monitor would flag
them. They are for read and scale benchmarks only. Each batch ends with the
sequencer's HEADS leaf, as every batch of a log does (so a log of N leaves holds
N minus its number of batches bundles).
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import time
from pathlib import Path

from logserver.bundle import PAYLOAD_TYPE, Envelope, Signature, encode_leaf
from logserver.keys.log_key import LogKey
from logserver.storage import create_pool, open_log
from logserver.write.outcomes import Pending
from logserver.write.sequencer import Sequencer

SEQ_DIGITS = 13  # every sequence is written with this many digits, so all leaves have one length
SEQ_BASE = 10 ** (SEQ_DIGITS - 1)
_MARK = b"9" * SEQ_DIGITS


def leaf_template() -> tuple[bytes, bytes, bytes, bytes]:
    """(leaf prefix, leaf suffix, payload prefix, payload suffix) around the sequence digits."""
    payload = (b'{"fleet_id":"bulk","sequence":' + _MARK + b',"not_before":"2025-01-01T00:00:00Z",'
               b'"not_after":"2100-01-01T00:00:00Z","keys":[{"key_id":"hsm-1","algorithm":"x25519",'
               b'"public_key":"MCowBQYDK2VuAyEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}]}')
    sigs = (Signature("0" * 64, b"\x01" * 64), Signature("f" * 64, b"\x02" * 70))
    leaf = encode_leaf(Envelope(PAYLOAD_TYPE, payload, sigs))
    assert leaf.count(_MARK) == 1 and payload.count(_MARK) == 1
    lp, ls = leaf.split(_MARK)
    pp, ps = payload.split(_MARK)
    return lp, ls, pp, ps


async def load(database_url: str, log_key: LogKey, size: int, batch: int = 65536,
               progress=lambda done, total, rate: None) -> dict:
    """Grow the log to `size` leaves (no-op if already there). Returns timing figures."""
    pool = await create_pool(database_url, min_size=1, max_size=2, command_timeout=600)
    try:
        store = await open_log(pool, log_key)  # as `serve` opens it
        latest = await store.latest_checkpoint()
        assert latest is not None
        start = latest.tree_size
        if start > size:
            raise SystemExit(f"the database already holds {start} leaves, more than {size}")
        # A batch of 64k leaves is one long transaction: the server's stall timeout (5 s,
        # meant for a frozen sequencer) would abort it on a busy machine.
        seq = Sequencer(store, log_key.sign_checkpoint, max_batch_size=batch, checkpoint_interval_s=3600,
                        lock_timeout_ms=60_000, stall_timeout_ms=600_000)
        lp, ls, pp, ps = leaf_template()
        loop = asyncio.get_running_loop()
        sha = hashlib.sha256
        started = time.perf_counter()
        done = start
        if size - start == 1:
            raise SystemExit(f"cannot grow {start} leaves by one: a batch is a bundle and its HEADS leaf at least")
        while done < size:
            # Each batch is n bundles and the HEADS leaf that ends it (docs/fleet-heads.md):
            # n + 1 leaves, never leaving a single leaf to go (no batch could add it).
            n = min(batch, size - done - 1)
            if size - done - (n + 1) == 1:
                n -= 1
            pending = []
            # Sequences follow the leaf index (strictly increasing); the HEADS leaves skip one.
            for i in range(done, done + n):
                digits = b"%d" % (SEQ_BASE + i)
                leaf = lp + digits + ls
                pending.append(Pending(leaf, sha(b"\x00" + leaf).digest(), "bulk", SEQ_BASE + i,
                                       sha(pp + digits + ps).digest(), loop.create_future()))
            cp = await seq.integrate(pending, with_proofs=False)
            assert cp is not None and cp.tree_size == done + n + 1, (cp, done, n)
            failed = [p.future.exception() for p in pending if p.future.exception() is not None]
            if failed:
                raise RuntimeError(f"bulk batch refused: {failed[0]!r}")
            done += n + 1
            elapsed = time.perf_counter() - started
            progress(done, size, (done - start) / elapsed if elapsed else 0.0)
        elapsed = time.perf_counter() - started
        return {"size": size, "loaded": size - start, "seconds": round(elapsed, 2),
                "leaves_per_s": round((size - start) / elapsed, 1) if elapsed and size > start else None}
    finally:
        await pool.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", required=True)
    p.add_argument("--log-key", type=Path, required=True)
    p.add_argument("--origin", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--batch", type=int, default=65536)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    key = LogKey.load(args.log_key, args.origin)

    def progress(done, total, rate):
        print(f"  {done}/{total} leaves ({rate:,.0f}/s)", flush=True)

    print(json.dumps(asyncio.run(load(args.database_url, key, args.size, args.batch, progress))))


if __name__ == "__main__":
    main()
