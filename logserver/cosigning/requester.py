"""One witness, one checkpoint: the client half of C2SP tlog-witness add-checkpoint.

The request carries the size the witness last cosigned ("old") and a consistency
proof from it. When our idea of that size is wrong (first contact, another log
process got cosignatures, the witness lost a response) the witness answers 409
with its size as text/x.tlog.size, and we resend with a proof from there.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp

from ..formats import (
    TLOG_SIZE_CONTENT_TYPE,
    AddCheckpointRequest,
    FormatError,
    VerificationError,
    parse_signature_lines,
    parse_tlog_size,
)
from ..formats.tlog_policy import PolicyWitness
from ..storage import CheckpointRow
from ..storage.cosignatures import CosignatureLine

MAX_ATTEMPTS = 3
"""Requests per round: a first guess of the old size and two 409 follow-ups."""

MAX_RESPONSE_BYTES = 64 * 1024


class CosigningFailed(Exception):
    """No cosignature from this witness for this checkpoint. `reason` is a metric label."""

    def __init__(self, reason: str, message: str, *, witness_size: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.witness_size = witness_size


@dataclass(frozen=True)
class Cosigned:
    lines: tuple[CosignatureLine, ...]
    size: int


ProofSource = Callable[[int, int], Awaitable[Sequence[bytes]]]


async def request_cosignature(
    session: aiohttp.ClientSession,
    witness: PolicyWitness,
    checkpoint: CheckpointRow,
    signed_note: str,
    old_size: int,
    consistency_proof: ProofSource,
) -> Cosigned:
    """Ask `witness` to cosign `checkpoint` (whose log-signed note is `signed_note`),
    starting from `old_size`. Returns the verified cosignature lines; raises
    CosigningFailed (with the witness's size when it told us one)."""
    assert witness.url is not None, "load_witness_policy refuses a witness without a URL"
    url = f"{witness.url.rstrip('/')}/add-checkpoint"
    size = checkpoint.tree_size
    for _ in range(MAX_ATTEMPTS):
        if old_size > size:
            raise CosigningFailed("witness_ahead", f"witness {witness.name!r} has cosigned size {old_size}, "
                                  f"beyond this checkpoint's {size}", witness_size=old_size)
        proof = tuple(await consistency_proof(old_size, size)) if 0 < old_size < size else ()
        body = AddCheckpointRequest(old_size, proof, signed_note).format()
        async with session.post(url, data=body.encode(), headers={"Content-Type": "text/plain; charset=utf-8"}) as resp:
            data = await resp.content.read(MAX_RESPONSE_BYTES + 1)
            ctype = resp.headers.get("Content-Type", "").split(";")[0].strip()
            status = resp.status
        if len(data) > MAX_RESPONSE_BYTES:
            raise CosigningFailed("bad_response", f"witness {witness.name!r}: response over {MAX_RESPONSE_BYTES} bytes")
        if status == 200:
            return Cosigned(_verified_lines(witness, checkpoint, signed_note, data), size)
        if status == 409 and ctype == TLOG_SIZE_CONTENT_TYPE:
            try:
                witness_size = parse_tlog_size(data)
            except FormatError as e:
                raise CosigningFailed("bad_response", f"witness {witness.name!r}: 409 body: {e}") from None
            if witness_size == old_size:
                # The old size was right, so the conflict is the root at that size: the
                # witness cosigned another tree of ours (tlog-witness: same size, other
                # root is 409). A loud failure: a fork, or a witness gone wrong.
                raise CosigningFailed("conflict", f"witness {witness.name!r} refuses size {size} at its size "
                                      f"{witness_size}: it has cosigned a different root", witness_size=witness_size)
            old_size = witness_size
            continue
        raise CosigningFailed(f"http_{status}", f"witness {witness.name!r}: HTTP {status}: "
                              f"{data[:200].decode('utf-8', 'replace')!r}")
    raise CosigningFailed("conflict", f"witness {witness.name!r}: still 409 after {MAX_ATTEMPTS} attempts",
                          witness_size=old_size)


def _verified_lines(witness: PolicyWitness, checkpoint: CheckpointRow, signed_note: str,
                    data: bytes) -> tuple[CosignatureLine, ...]:
    """The response's lines by this witness's key, each verified over the checkpoint
    body. tlog-witness: "The client MUST ignore any cosignatures from unknown keys"."""
    try:
        signatures = parse_signature_lines(data)
    except FormatError as e:
        raise CosigningFailed("bad_response", f"witness {witness.name!r}: response: {e}") from None
    verifier = witness.verifier
    body = signed_note[: signed_note.rindex("\n\n") + 1].encode("utf-8")
    lines = []
    for sig in signatures:
        if (sig.name, sig.key_id) != (verifier.name, verifier.key_id):
            continue
        try:
            verifier.verify(body, sig.signature)
        except VerificationError as e:
            raise CosigningFailed("bad_signature", f"witness {witness.name!r}: {e}") from None
        lines.append(CosignatureLine(witness.name, sig.key_id, sig.line()))
    if not lines:
        raise CosigningFailed("bad_response", f"witness {witness.name!r}: got {len(signatures)} signature "
                              f"line(s), none by its key {verifier.vkey}")
    return tuple(lines[:1])  # one cosignature per witness key is all a client counts
