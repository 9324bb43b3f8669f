"""Benchmark-only: `python -m bench.heads_off serve --config ...` is `logserver serve`
with the sequencer's HEADS leaves turned off, the "off" side of section 7's A/B
(bench/heads.py): the log as it was before HEADS leaves. It flips the sequencer's
private `_heads_leaves` switch in this process only; it is no configuration key, and
a log run this way gives clients no fleet-head proofs (and trips every monitor's
`heads_missing` check once it had HEADS leaves)."""
from __future__ import annotations

import sys

from logserver.cli import main
from logserver.write.sequencer import Sequencer

Sequencer._heads_leaves = False

sys.exit(main())
