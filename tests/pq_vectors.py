"""The published ML-DSA-44 vector of tests/testdata/pq (see SOURCES.md there)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

VECTOR = Path(__file__).parent / "testdata" / "pq" / "torchwood-litewitness-mldsa.txt"


@dataclass(frozen=True)
class LiteWitnessVector:
    seed: bytes
    log_vkey: str
    request: str  # the exact add-checkpoint body


def litewitness_vector() -> LiteWitnessVector:
    head, body = VECTOR.read_text(encoding="utf-8").split("\n\n", 1)
    fields = {}
    for line in head.splitlines():
        key, sep, value = line.removeprefix("# ").partition(": ")
        if sep:
            fields[key] = value
    return LiteWitnessVector(bytes.fromhex(fields["gentest seed"]), fields["log vkey"], body)
