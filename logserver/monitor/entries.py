"""Verifying the entries of one entry bundle (pure).

Each entry is a leaf (docs/formats.md, "Leaf encoding"): decode it, apply the
dual-signature policy (both authority signatures over the PAE, the payload schema,
a well-formed validity window) and hash it. Expiry is not judged: an entry that was
valid when logged may have expired since. Work is per bundle (256 entries) so the
caller's per-entry overhead is one function call.

Each entry also yields what the monitor's fold of the heads table needs
(monitor/heads.py, docs/fleet-heads.md): a bundle leaf its `HeadsRow` (also when its
signatures fail the policy: the log folded it when it appended it, and a third party's
`bundle.heads.fold` does too), a HEADS leaf its bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import BrokenExecutor, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from hashlib import sha256

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..bundle import AuthoritySet, BundleError, Role, decode_leaf, load_authority_key_pem, verify_envelope
from ..bundle.heads import HeadsError, HeadsRow, bundle_row, is_heads_leaf
from .alerts import POLICY_FAILURE, Alert
from .fleets import LoggedBundle
from .heads import FoldItem

log = logging.getLogger(__name__)

# verify_envelope checks not_after against this time; the beginning of time disables
# the expiry test but keeps the window check (not_before < not_after).
_BEGINNING = datetime(1, 1, 1, tzinfo=UTC)


@dataclass
class BundleResult:
    """Leaf hashes of the verified range, the entries that passed, policy alerts, the
    fold's input in log order, and the range's last leaf (for a checkpoint's end)."""

    leaf_hashes: list[bytes]
    verified: list[LoggedBundle]
    failures: list[Alert]
    fold_items: list[FoldItem] = field(default_factory=list)
    last_leaf: bytes | None = None


def verify_entries(leaves: Sequence[bytes], first_index: int, authorities: AuthoritySet) -> BundleResult:
    """Verify consecutive entries starting at log index `first_index`."""
    hashes: list[bytes] = []
    verified: list[LoggedBundle] = []
    failures: list[Alert] = []
    items: list[FoldItem] = []
    for offset, leaf in enumerate(leaves):
        index = first_index + offset
        h = sha256(b"\x00" + leaf).digest()  # RFC 6962 §2.1 leaf hash
        hashes.append(h)
        if is_heads_leaf(leaf):
            # A HEADS leaf (docs/fleet-heads.md): no bundle, no signatures; the fold
            # decodes and checks it.
            items.append(FoldItem(index, heads=leaf))
            continue
        try:
            result = verify_envelope(decode_leaf(leaf), authorities, _BEGINNING)
        except BundleError as exc:
            failures.append(Alert(
                POLICY_FAILURE,
                f"entry {index} fails the policy: {exc}",
                {"index": index, "leaf_hash": h.hex(), "code": exc.code},
                key=f"policy:{index}",
            ))
            # Not a bundle with a valid payload: no row in anyone's fold.
            with contextlib.suppress(BundleError, HeadsError):
                items.append(FoldItem(index, row=bundle_row(index, leaf)))
            continue
        bundle = result.bundle
        verified.append(LoggedBundle(index, bundle.fleet_id, bundle.sequence, result.payload_digest, h))
        items.append(FoldItem(index, row=HeadsRow(bundle.fleet_id, bundle.sequence, index, h, bundle.status)))
    return BundleResult(hashes, verified, failures, items, leaves[-1] if leaves else None)


class EntryVerifier:
    """verify_entries for a monitor, inline or in `processes` child processes.

    The two signature checks of every entry are the monitor's CPU: inline it
    verifies about as fast as one server process appends. Entry bundles are
    independent, so with child processes several verify at once while the event
    loop fetches the next ones; results are the same objects as inline (the
    children get the authority keys once, as DER, at start). Children are
    started with `spawn` (no fork of a process running an event loop).
    """

    def __init__(self, authorities: AuthoritySet, processes: int = 0):
        if processes < 0:
            raise ValueError(f"processes: got {processes}, want >= 0")
        self.authorities = authorities
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None  # started on first use

    async def verify(self, leaves: Sequence[bytes], first_index: int) -> BundleResult:
        """verify_entries(leaves, first_index, authorities). A child that died (killed,
        out of memory) breaks the pool: a new pool is started and the bundle tried
        again once, then verified inline, so a monitor never stops over it."""
        if self.processes:
            loop = asyncio.get_running_loop()
            for _attempt in range(2):
                pool = self._pool or self._start_pool()
                try:
                    return await loop.run_in_executor(pool, _child_verify, list(leaves), first_index)
                except BrokenExecutor as e:
                    log.warning("entry verification process died (%r); starting new ones", e)
                    if self._pool is pool:
                        pool.shutdown(wait=False, cancel_futures=True)
                        self._pool = None
        return verify_entries(leaves, first_index, self.authorities)

    def _start_pool(self) -> ProcessPoolExecutor:
        self._pool = ProcessPoolExecutor(
            self.processes, mp_context=multiprocessing.get_context("spawn"),
            initializer=_child_init, initargs=(_pem_keys(self.authorities),),
        )
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


_child_authorities: AuthoritySet | None = None


def _pem_keys(authorities: AuthoritySet) -> list[tuple[bytes, str, Role]]:
    """The authority keys as (PEM SPKI, authority, role), which pickle (the key objects do not)."""
    pem = Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    return [(k.public_key.public_bytes(*pem), k.authority, k.role) for k in authorities.values()]


def _child_init(keys: list[tuple[bytes, str, Role]]) -> None:
    global _child_authorities
    _child_authorities = AuthoritySet(load_authority_key_pem(*key) for key in keys)


def _child_verify(leaves: list[bytes], first_index: int) -> BundleResult:
    assert _child_authorities is not None, "initializer did not run"
    return verify_entries(leaves, first_index, _child_authorities)
