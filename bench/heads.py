"""Section 7: fleet heads (issue 20 §6; docs/fleet-heads.md).

1. **Proofs.** For each tree size (10k and 10M leaves) and fleet count (10 and
   10,000): a heads table of that many fleets, each fleet's newest bundle a real
   dual-signed envelope (Ed25519 signer, ECDSA P-256 countersigner, two HSM keys) at
   an index spread over the tree, a HEADS leaf at N - 1 committing to the table, and a
   checkpoint signed by the log (Ed25519 note signature and cosignature/v1) and one
   witness. Measured in this process: the proof **build rate** (the heads row and its
   proof from the in-memory `HeadsTable`, the HEADS leaf's and the bundle's inclusion
   proofs, the envelope, `build_fleet_head_proof`'s canonical JSON), the **verify
   time** (`verify_fleet_head`: strict parse, checkpoint and witness signatures,
   freshness, three Merkle paths, both envelope signatures), and the **size**: hashes
   in the proof, binary bytes (the hashes, the 49-byte HEADS leaf and the row, the
   figure of the issue's target), and JSON bytes with and without the witness's
   cosignature line.

   The 10M-leaf tree is not stored: an inclusion proof's length and its verification
   depend only on the index and the size, so the log's tree is a *virtual* tree
   (`VirtualTree`) in which the leaves the proofs name are real and every complete
   subtree holding none of them has a stand-in hash (SHA-256 of its coordinates).
   Roots and proofs are the RFC 6962 ones of that tree, computed by
   `logserver.merkle`. Building excludes reading the log's hashes from storage (a
   server reads them from its tile cache): it is the CPU of assembling a proof.

2. **Submissions with HEADS leaves on and off**, on a fresh log each time, in ABBA
   order (ON_OFF_SCHEDULE) with the sequencer's HEADS leaf (the release) and without it
   (`bench/heads_off.py`: `logserver serve` with the sequencer's private,
   benchmark-only `_heads_leaves` switch off, which is today's log before HEADS
   leaves); the ratio is of the means (ON_OFF_SCHEDULE). Target >= 0.95. Two loads,
   both Ed25519, section 1's largest client count, closed loop:
   * **new fleets**: section 1's own bundle file, where each bundle is its own fleet,
     so every bundle adds a row to a table that grows to tens of thousands of rows
     (appended, and its predecessor's link changed: O(log fleets) hashes,
     docs/fleet-heads.md, "The heads tree");
   * **known fleets**: `KNOWN_FLEETS` fleets, line j of the file fleet j mod F with
     sequence j div F + 1, so each bundle is a fleet's next sequence (a row replaced:
     O(log fleets) hashes). A fleet's next sequence is sent F requests after the
     previous one, long after it was answered at these rates, so none is refused as
     a rollback (the 2xx counts say so).
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import random
import statistics
import sys
import time
from bisect import bisect_left

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from logserver.bundle import (
    PAYLOAD_TYPE,
    HeadsTable,
    bundle_row,
    decode_leaf,
    encode_leaf,
    is_heads_leaf,
    load_authority_key_pem,
    sign_envelope,
)
from logserver.client import TrustPolicy, verify_fleet_head
from logserver.formats import Checkpoint, CosignatureSigner, Ed25519NoteSigner
from logserver.formats.checkpoint import sign_checkpoint
from logserver.formats.fleet_head import BundleProof, HeadsLeafProof, build_fleet_head_proof
from logserver.merkle import (
    EMPTY_ROOT,
    TILE_WIDTH,
    EntriesTileID,
    decode_entry_bundle,
    frontier_ids,
    inclusion_proof,
    leaf_hash,
    node_hash,
    tile_path,
)

from .bundles import payload_template
from .env import BenchEnv, serve_process

ORIGIN = "bench.example/heads"
WITNESS = "bench.example/witness"
# ABBA order: a drift over the runs (the machine warming up, PostgreSQL's files growing
# from run to run) weighs on both sides alike; plain alternation (off, on, off, on)
# charged it to "on", which always ran second.
ON_OFF_SCHEDULE = ("off", "on", "on", "off", "off", "on", "on", "off")
KNOWN_FLEETS = 2_000
TINY_SCHEDULE = ("off", "on")
HASH = 32


class VirtualTree:
    """An RFC 6962 tree of `size` leaves of which only `real` (index -> leaf hash) are
    known; every complete subtree that holds none of them hashes to a stand-in. Nodes
    are computed on demand: O(log n) per real leaf."""

    def __init__(self, size: int, real: dict[int, bytes]) -> None:
        self.size = size
        self.real = real
        self._indexes = sorted(real)
        self._nodes: dict[tuple[int, int], bytes] = {}

    def node(self, level: int, index: int) -> bytes:
        key = (level, index)
        h = self._nodes.get(key)
        if h is None:
            lo = index << level
            i = bisect_left(self._indexes, lo)
            if i == len(self._indexes) or self._indexes[i] >= lo + (1 << level):
                h = hashlib.sha256(b"virtual subtree %d %d" % key).digest()
            elif level == 0:
                h = self.real[lo]
            else:
                h = node_hash(self.node(level - 1, 2 * index), self.node(level - 1, 2 * index + 1))
            self._nodes[key] = h
        return h

    def inclusion(self, index: int) -> tuple[bytes, ...]:
        return tuple(inclusion_proof(index, self.size, lambda ids: [self.node(level, i) for level, i in ids]))

    def root(self) -> bytes:
        hashes = [self.node(level, index) for level, index in frontier_ids(self.size)]
        root = hashes.pop() if hashes else EMPTY_ROOT
        for h in reversed(hashes):
            root = node_hash(h, root)
        return root


class _Keys:
    def __init__(self) -> None:
        self.signer = ed25519.Ed25519PrivateKey.generate()
        self.counter = ec.generate_private_key(ec.SECP256R1())
        self.log = ed25519.Ed25519PrivateKey.generate()
        self.witness = ed25519.Ed25519PrivateKey.generate()

    def policy(self, max_age_s: int) -> TrustPolicy:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        pem = [k.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
               for k in (self.signer, self.counter)]
        authorities = [load_authority_key_pem(pem[0], "bench-signer", "signer"),
                       load_authority_key_pem(pem[1], "bench-countersigner", "countersigner")]
        log_vkey = Ed25519NoteSigner(ORIGIN, self.log).vkey
        witness_vkey = CosignatureSigner(WITNESS, self.witness).vkey
        return TrustPolicy.from_parts(authorities, f"log {log_vkey}\nwitness w1 {witness_vkey}\nquorum w1\n",
                                      max_age_s=max_age_s)

    def checkpoint(self, size: int, root: bytes, at: int) -> str:
        return sign_checkpoint(Checkpoint(ORIGIN, size, root), [
            Ed25519NoteSigner(ORIGIN, self.log), CosignatureSigner(ORIGIN, self.log).at(at),
            CosignatureSigner(WITNESS, self.witness).at(at)])


def _envelopes(keys: _Keys, fleets: int) -> list[bytes]:
    """One bundle leaf per fleet (fleet ids fleet-00000...), signed once per run."""
    template = payload_template()
    leaves = []
    for i in range(fleets):
        template["fleet_id"] = f"fleet-{i:05d}"
        payload = json.dumps(template, separators=(",", ":")).encode()
        leaves.append(encode_leaf(sign_envelope(PAYLOAD_TYPE, payload, [keys.signer, keys.counter])))
    return leaves


def _witness_line_bytes(note: str) -> int:
    """The length of the witness's cosignature line inside the proof's JSON string (what
    the size target excludes): escaped as the builder writes it (ASCII, `\\n`, `\\u2014`)."""
    return sum(len(json.dumps(line + "\n")) - 2 for line in note.split("\n") if line.startswith(f"\u2014 {WITNESS} "))


def _proof_row(keys: _Keys, policy: TrustPolicy, leaves: list[bytes], size: int, sample: int,
               rng: random.Random) -> dict:
    fleets = len(leaves)
    size = max(size, fleets + 1)  # one bundle per fleet, and the HEADS leaf
    heads_index = size - 1
    # Bundles spread evenly over [0, N - 1): old bundles have the longest proofs.
    indexes = [j * (size - 1) // fleets for j in range(fleets)]
    rows = [bundle_row(i, leaf) for i, leaf in zip(indexes, leaves, strict=True)]
    table = HeadsTable.from_rows(rows)
    heads = table.heads_leaf(max(0, heads_index - 1)).encode()
    real = {i: r.leaf_hash for i, r in zip(indexes, rows, strict=True)} | {heads_index: leaf_hash(heads)}
    tree = VirtualTree(size, real)
    now = int(time.time())
    note = keys.checkpoint(size, tree.root(), now)
    envelope_of = {r.fleet_id: decode_leaf(leaf).to_dict() for r, leaf in zip(rows, leaves, strict=True)}
    chosen = [table.row(p).fleet_id for p in sorted(rng.sample(range(fleets), min(sample, fleets)))]

    def build(fleet_id: str) -> bytes:
        position = table.position(fleet_id)
        assert position is not None
        row = table.proved_row(position)
        return build_fleet_head_proof(
            fleet_id, note, HeadsLeafProof(heads_index, heads, tree.inclusion(heads_index)), row=row,
            bundle=BundleProof(envelope_of[fleet_id], tree.inclusion(row.leaf_index)))

    # Warm: the virtual tree's nodes on every path the proofs read are computed first
    # (a real log has them stored; its server reads them from its tile cache).
    for fleet_id in chosen:
        build(fleet_id)
    t0 = time.perf_counter()
    proofs = [build(f) for f in chosen]
    build_s = time.perf_counter() - t0
    at = dt.datetime.fromtimestamp(now + 1, dt.UTC)
    verify_fleet_head(proofs[0], policy, at, fleet_id=chosen[0])  # warm: first use of the keys
    verify_ms = []
    for fleet_id, proof in zip(chosen, proofs, strict=True):
        t0 = time.perf_counter()
        head = verify_fleet_head(proof, policy, at, fleet_id=fleet_id)
        verify_ms.append(1000 * (time.perf_counter() - t0))
        assert head.fleet_id == fleet_id
    sizes = []
    witness_line = _witness_line_bytes(note)
    for proof in proofs:
        obj = json.loads(proof)
        hashes = sum(len(base64.b64decode(p)) // HASH for p in (
            obj["heads_leaf"]["inclusion_proof"], obj["row"]["proof"], obj["bundle"]["inclusion_proof"]))
        # The HeadsEntry: the row, then its next fleet id (docs/fleet-heads.md, "The heads tree").
        row_bytes = 1 + len(obj["row"]["fleet_id"]) + 8 + 8 + HASH + 1 + 1 + len(obj["row"]["next_fleet_id"])
        sizes.append({"hashes": hashes, "binary": hashes * HASH + len(heads) + row_bytes, "json": len(proof),
                      "json_without_witness": len(proof) - witness_line,
                      "envelope_json": len(json.dumps(obj["bundle"]["envelope"], separators=(",", ":")))})

    def stat(key: str) -> dict:
        values = [s[key] for s in sizes]
        return {"min": min(values), "mean": round(statistics.fmean(values), 1), "max": max(values)}

    verify_ms.sort()
    return {
        "size": size, "fleets": fleets, "proofs": len(proofs),
        "build_per_s": round(len(proofs) / build_s, 1) if build_s else None,
        "verify_ms": {"mean": round(statistics.fmean(verify_ms), 3), "p50": round(verify_ms[len(verify_ms) // 2], 3),
                      "p99": round(verify_ms[min(len(verify_ms) - 1, int(0.99 * len(verify_ms)))], 3)},
        "hashes": stat("hashes"), "binary_bytes": stat("binary"), "json_bytes": stat("json"),
        "json_bytes_without_witness": stat("json_without_witness"), "envelope_json_bytes": stat("envelope_json"),
    }


def run_proofs(mode, log) -> list[dict]:
    keys = _Keys()
    policy = keys.policy(max_age_s=600)
    rng = random.Random(20)
    out = []
    for fleets in mode.heads_fleets:
        log(f"heads: signing {fleets:,} bundles")
        leaves = _envelopes(keys, fleets)
        for size in mode.heads_sizes:
            log(f"heads: proofs at {size:,} leaves x {fleets:,} fleets ({min(mode.heads_proofs, fleets)} proofs)")
            out.append(_proof_row(keys, policy, leaves, size, mode.heads_proofs, rng))
    return out


# --- 2. submissions with HEADS leaves on and off ----------------------------------------------


def _heads_off_process(config, database_url: str, log_path):
    proc = serve_process(config, database_url, log_path)
    # bench/heads_off.py: the same `logserver serve` with the sequencer's switch off.
    proc.argv = [sys.executable, "-m", "bench.heads_off", *proc.argv[3:]]
    return proc


def known_fleets_file(env: BenchEnv, algorithm: str, count: int, fleets: int = KNOWN_FLEETS):
    """A request file of `count` bundles of `fleets` fleets, line j fleet j mod F with
    sequence j div F + 1 (made once, cached beside section 1's)."""
    from cryptography.hazmat.primitives import serialization

    directory = env.data_dir / "bundles"
    directory.mkdir(exist_ok=True)
    path = directory / f"known-fleets-{algorithm}-{fleets}-{count}.tsv"
    if path.exists():
        return path
    keys = [serialization.load_pem_private_key(env.authority(algorithm, role)[0].read_bytes(), password=None)
            for role in ("signer", "countersigner")]
    template = payload_template()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as out:
        for j in range(count):
            template["fleet_id"] = f"known-{j % fleets:05d}"
            template["sequence"] = j // fleets + 1
            payload = json.dumps(template, separators=(",", ":")).encode()
            body = sign_envelope(PAYLOAD_TYPE, payload, keys).to_json().decode()
            out.write(f"POST\t/v1/bundles\t{body}\n")
    tmp.rename(path)
    return path


def run_on_off(env: BenchEnv, mode, loadgen, log, *, load: str = "new fleets") -> dict:
    from .bundles import bundle_file
    from .static import ALGORITHM

    c = max(mode.connections)
    if load == "new fleets":
        requests = bundle_file(env, ALGORITHM, mode.bundles)
    else:
        log(f"heads: known-fleets bundle file ({mode.bundles:,} bundles of {KNOWN_FLEETS:,} fleets; made once)")
        requests = known_fleets_file(env, ALGORITHM, mode.bundles)
    runs = []
    schedule = TINY_SCHEDULE if mode.name == "tiny" else ON_OFF_SCHEDULE
    for i, heads in enumerate(schedule):
        tag = f"heads_submit_{'known' if load != 'new fleets' else 'new'}_{i}"
        db_name = f"bench_{tag}"
        url = env.database(db_name, fresh=True)
        run_dir = env.runs / tag
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        cfg = env.write_config(run_dir, url, ALGORITHM)
        proc = (serve_process if heads == "on" else _heads_off_process)(cfg, url, run_dir / "server.log")
        log(f"heads submissions ({load}): {c} connections, HEADS leaves {heads}")
        with proc.start() as server:
            res = loadgen.run(server.url, requests, connections=c, duration_s=mode.duration_s, server=server)
            res["tree_size"], res["ends_with_heads_leaf"] = _tree_end(server.url)
        env.drop_database(db_name)
        res["heads"] = heads
        runs.append(res)
        time.sleep(0.5)

    def mean(which: str) -> float:
        rates = [r["ok_rps"] for r in runs if r["heads"] == which]
        return sum(rates) / len(rates)

    def cpu_ms(which: str) -> float | None:
        # The server's CPU per appended bundle: steadier than req/s on a shared machine,
        # where the other tenants' load moves the rate from run to run.
        runs_of = [r for r in runs if r["heads"] == which and r["ok_rps"] and r.get("server_cpu_cores")]
        if not runs_of:
            return None
        return sum(1000 * r["server_cpu_cores"] / r["ok_rps"] for r in runs_of) / len(runs_of)

    off, on = mean("off"), mean("on")
    cpu_off, cpu_on = cpu_ms("off"), cpu_ms("on")
    return {"load": load, "algorithm": ALGORITHM, "connections": c, "runs": runs, "off_rps": round(off, 1),
            "on_rps": round(on, 1), "ratio": round(on / off, 3) if off else None,
            "server_cpu_ms_per_bundle": {"off": None if cpu_off is None else round(cpu_off, 4),
                                         "on": None if cpu_on is None else round(cpu_on, 4)},
            "cpu_ratio": round(cpu_off / cpu_on, 3) if cpu_off and cpu_on else None}


def _tree_end(url: str) -> tuple[int, bool]:
    """The served tree's size, and whether its last leaf is a HEADS leaf (what tells the
    two sides of the A/B apart)."""
    import urllib.request

    def get(path: str) -> bytes:
        with urllib.request.urlopen(f"{url}/{path}", timeout=10) as resp:  # 127.0.0.1: the log just started
            return resp.read()

    size = int(get("checkpoint").decode().split("\n")[1])
    if size == 0:
        return 0, False
    base = (size - 1) - (size - 1) % TILE_WIDTH
    last = decode_entry_bundle(get(tile_path(EntriesTileID((size - 1) // TILE_WIDTH, size - base))))[-1]
    return size, is_heads_leaf(last)


def run_heads(env: BenchEnv, mode, loadgen, log) -> dict:
    return {"proofs": run_proofs(mode, log), "submissions": run_on_off(env, mode, loadgen, log),
            "submissions_known_fleets": run_on_off(env, mode, loadgen, log, load="known fleets")}
