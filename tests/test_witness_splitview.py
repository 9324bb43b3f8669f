"""Split view: a log that shows two witnesses two different trees gets each witness to
cosign at most one history, and a client requiring both witnesses rejects both views."""
from __future__ import annotations

import pytest

import pg
from logserver.client import CheckpointVerificationError, TrustPolicy, WitnessQuorumError
from logserver.client.checkpoints import verify_checkpoint
from test_client_support import write_trust_policy
from witness_harness import ScriptedLog, start_witness, write_witness_config

ORIGIN = "splitview.example/log"


@pytest.fixture(scope="module")
async def setup(pg_admin_url, tmp_path_factory):
    base = tmp_path_factory.mktemp("split")
    log = ScriptedLog(ORIGIN)
    witnesses, dbs = [], []
    for name in ("a", "b"):
        db = await pg.create_database(pg_admin_url, f"t_split_{name}")
        dbs.append(db)
        witnesses.append(await start_witness(write_witness_config(base / name, f"split.test/{name}", db,
                                                                  [log.vkey])))
    lines = "".join(f"witness {n} {w.vkey} {w.url}\n" for n, w in zip("ab", witnesses, strict=True))
    both = TrustPolicy.load(write_trust_policy(base / "client", log.vkey, extra_policy=lines + "group both all a b\n",
                                               quorum="both", name="both.toml"))
    yield log, witnesses, both
    for w in witnesses:
        await w.close()
    for db in dbs:
        await pg.drop_database(pg_admin_url, db)


def staple(note: str, *responses: str) -> str:
    return note + "".join(responses)


async def test_each_witness_cosigns_at_most_one_history(setup):
    log, (a, b), both = setup
    honest = log.leaves
    log.append(10)
    evil = [b"evil" + leaf for leaf in honest]  # another tree of the same size
    # Witness a sees the honest tree, witness b the other one.
    status_a, _, cosig_a = await a.add_checkpoint(log.request(0, 10))
    status_b, _, cosig_b = await b.add_checkpoint(log.request(0, 10, evil))
    assert (status_a, status_b) == (200, 200)
    honest_view = staple(log.checkpoint(10), cosig_a)
    evil_view = staple(log.checkpoint(10, evil), cosig_b)

    # Neither witness can now be brought to cosign the other history: not at the same
    # size (409, kept as evidence), not extended with a proof (422), not from scratch (409).
    status, ctype, body = await a.add_checkpoint(log.request(10, 10, evil))
    assert (status, ctype, body) == (409, "text/x.tlog.size", "10\n")
    evil_longer = evil + [b"evil more %d" % i for i in range(5)]
    status, _, _ = await a.add_checkpoint(log.request(10, 15, evil_longer))
    assert status == 422
    status, _, body = await a.add_checkpoint(log.request(0, 15, evil_longer))
    assert (status, body) == (409, "10\n")
    log.append(5)
    status, _, _ = await b.add_checkpoint(log.request(10, 15))
    assert status == 422
    assert {e["kind"] for e in (await a.get_json("/evidence"))["evidence"]} == {"root_conflict",
                                                                               "inconsistent_proof"}

    # A client requiring both witnesses accepts neither view ...
    for view in (honest_view, evil_view):
        with pytest.raises(WitnessQuorumError):
            verify_checkpoint(view, both)
    # ... and the log cannot merge them: b's cosignature is over the other root, so it
    # does not verify on the honest checkpoint, which the client then rejects outright.
    merged = staple(honest_view, cosig_b)
    with pytest.raises(CheckpointVerificationError, match=r"cosignature by split\.test/b"):
        verify_checkpoint(merged, both)
