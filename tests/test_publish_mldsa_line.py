"""The log's ML-DSA-44 line on a published checkpoint is checked wherever its Ed25519
lines are (publish/publisher.py, `LogKeyVerifiers`): by the publisher's step 9.1, which
reads the target's checkpoint before a pass, and by `fsck --target`
(publish/audit.py). A corrupted ML-DSA-44 signature refuses the note, as a corrupted
Ed25519 one does (C2SP signed-note: every signature by a known key must verify); a
checkpoint without the line (signed before the log had the key) is still this log's.
"""
from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey

from logserver.keys.log_key import LogKey
from logserver.publish.audit import audit_target
from logserver.publish.directory import DirectoryTarget
from logserver.publish.publisher import LogKeyVerifiers
from logserver.publish.targets import ObjectConflictError
from publish_support import publish_log_fixture
from server_harness import ORIGIN

PRIVATE = Ed25519PrivateKey.from_private_bytes(b"\x24" * 32)
KEY = LogKey(ORIGIN, PRIVATE, MLDSA44PrivateKey.from_seed_bytes(b"\x25" * 32))
ED25519_ONLY = LogKey(ORIGIN, PRIVATE)  # the same log before its ML-DSA-44 key was added

log = publish_log_fixture(KEY)


def mldsa_line(note: str) -> int:
    """The index of the note's ML-DSA-44 signature line: the log's line whose signature
    (4-byte key id, then the cosignature) has ML-DSA-44's length (FIPS 204: 2,420 bytes)."""
    lines = note.split("\n")
    found = [i for i, line in enumerate(lines) if line.startswith(f"\u2014 {ORIGIN} ")
             and len(base64.b64decode(line.rsplit(" ", 1)[1])) > 2_000]
    assert len(found) == 1, found
    return found[0]


def corrupted(note: str) -> str:
    """The note with one bit of its ML-DSA-44 signature flipped (the line's base64 stays
    canonical: the bytes are decoded, changed and encoded again)."""
    lines = note.split("\n")
    i = mldsa_line(note)
    head, sig = lines[i].rsplit(" ", 1)
    raw = bytearray(base64.b64decode(sig))
    raw[100] ^= 0x01  # inside the signature, past the key id
    lines[i] = f"{head} {base64.b64encode(bytes(raw)).decode()}"
    return "\n".join(lines)


def test_the_mldsa_line_is_verified_when_present():
    verifiers = LogKeyVerifiers.of(KEY)
    assert verifiers.mldsa44 is not None
    note = KEY.sign_checkpoint(5, bytes(range(32)), 1_700_000_000_000)
    assert verifiers.open(note.encode()).size == 5
    with pytest.raises(Exception, match="signature"):
        verifiers.open(corrupted(note).encode())
    # Without the ML-DSA-44 verifier the corrupted line is a stranger's, ignored: what
    # the check adds.
    assert LogKeyVerifiers.of(ED25519_ONLY).open(corrupted(note).encode()).size == 5
    # A checkpoint signed before the log had the key (no such line) is still the log's.
    older = ED25519_ONLY.sign_checkpoint(4, bytes(32), 1_600_000_000_000)
    assert verifiers.open(older.encode()).size == 4


async def test_a_corrupted_mldsa_line_on_a_target_halts_its_publisher_and_fsck_names_it(log, tmp_path):
    await log.append(20)
    target = DirectoryTarget("public", tmp_path / "public")
    await log.publisher(target).publish(log.latest)
    path = tmp_path / "public" / "checkpoint"
    good = path.read_text()
    assert mldsa_line(good) > 0  # the published checkpoint carries the log's ML-DSA-44 line
    clean = await audit_target(target, store=log.store, progress=log.progress, verifiers=log.verifiers)
    assert clean.problems == [], clean.problems

    path.write_text(corrupted(good))
    report = await audit_target(target, store=log.store, progress=log.progress, verifiers=log.verifiers)
    assert len(report.problems) == 1, report.problems
    assert report.problems[0].startswith("checkpoint: is not a checkpoint of this log signed by its key ("), \
        report.problems[0]

    # Step 9.1 of a publisher that did not write it (another process, a restart).
    await log.append(3)
    with pytest.raises(ObjectConflictError, match="is not a checkpoint of this log signed by its key"):
        await log.publisher(target).publish(log.latest)
    assert path.read_text() == corrupted(good)  # never overwritten
