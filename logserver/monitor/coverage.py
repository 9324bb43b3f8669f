"""Cosignature coverage: of the distinct checkpoints the monitor saw served, how many
each witness of the policy cosigned, and how many met the quorum."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from ..client.checkpoints import VerifiedCheckpoint


class Coverage:
    def __init__(self, witnesses: Iterable[str]):
        self.witnesses = tuple(witnesses)
        self.checkpoints = 0
        self.quorum_met = 0
        self.cosigned: Counter[str] = Counter()
        self._last: tuple[int, bytes, int | None] | None = None

    def observe(self, checkpoint: VerifiedCheckpoint, quorum_met: bool) -> bool:
        """Count a served checkpoint once (the same tree and signing time served again
        is not a new one). Returns whether it was new."""
        key = (checkpoint.size, checkpoint.root, checkpoint.signed_at)
        if key == self._last:
            return False
        self._last = key
        self.checkpoints += 1
        self.quorum_met += quorum_met
        for name in checkpoint.witnesses:
            self.cosigned[name] += 1
        return True

    def fraction(self, name: str) -> float:
        return self.cosigned[name] / self.checkpoints if self.checkpoints else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoints": self.checkpoints,
            "quorum_met": self.quorum_met,
            "witnesses": {name: {"cosigned": self.cosigned[name], "fraction": round(self.fraction(name), 4)}
                          for name in self.witnesses},
        }
