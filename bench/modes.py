"""Run sizes. `tiny` is the CI smoke run; `quick` the default; `full` what the README reports."""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Mode:
    name: str
    duration_s: float            # each load-generator run
    warmup_s: float              # untimed run before each measured read run (fills caches) and latency run
    connections: tuple[int, ...]  # submission concurrency levels
    read_connections: int
    bundles: int                 # unique signed bundles per algorithm (>= best rate x duration)
    read_sizes: tuple[int, ...]  # tree sizes for the read benchmarks (bulk loaded)
    read_requests: int           # distinct GET lines per request file
    merkle_leaves: int           # tree size for the Merkle core comparison
    merkle_ops: int              # proofs / verifications timed per kind
    latency_run: bool            # measure p99 at half the best throughput
    workers: tuple[int, ...]     # serve --workers N levels
    static_rate: int = 1000      # section 6: paced submissions per second for the publication lag
    outage_s: float = 5.0        # section 6: how long PostgreSQL is stopped under the static reads
    outage_entries: int = 5_000  # section 6: entries in the log whose static tree is read then
    heads_sizes: tuple[int, ...] = (10_000, 2**23, 10_000_000)  # section 7: tree sizes (large ones virtual);
    # 2^23: the size up to 10M whose last leaf has the longest inclusion proof (23 hashes)
    heads_fleets: tuple[int, ...] = (10, 10_000)          # section 7: fleets in the heads table
    heads_proofs: int = 1_000                             # section 7: proofs built and verified per case


MODES = {
    "tiny": Mode("tiny", 1, 0, (4,), 4, 400, (600,), 2_000, 2_000, 200, True, (1, 2), outage_s=1.0,
                 outage_entries=300, heads_fleets=(10, 100), heads_proofs=10),
    "quick": Mode("quick", 5, 1, (64, 256), 32, 30_000, (10_000, 100_000), 100_000, 20_000, 2_000, True, (1, 2),
                  heads_proofs=300),
    "full": Mode("full", 15, 3, (16, 64, 256), 32, 120_000, (10_000, 1_000_000), 600_000, 100_000, 10_000,
                 True, (1, 2)),
}


def with_10m(mode: Mode) -> Mode:
    return replace(mode, name=mode.name + "+10m", read_sizes=(*mode.read_sizes, 10_000_000))
