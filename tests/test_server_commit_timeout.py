"""sequencer.commit_timeout_s: a submission that is not committed in time gets 503
commit_timeout, and a retry after the log recovers is answered from the log."""
from __future__ import annotations

import asyncpg

from bundle_factory import BundleFactory
from server_harness import start_server, write_config

JSON = {"Content-Type": "application/json"}


async def test_commit_timeout_then_the_retry_is_answered(database_url, tmp_path):
    # The sequencer would wait 20 s for the log lock; the submitter only 1 s.
    cfg = write_config(tmp_path, database_url,
                       extra="[sequencer]\ncommit_timeout_s = 1\nlock_timeout_ms = 20000\n")
    server = await start_server(cfg)
    holder = await asyncpg.connect(database_url)
    try:
        body = BundleFactory(fleet_id="commit-timeout").envelope_json()
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT 1 FROM log_state FOR UPDATE")  # as another sequencer would
        async with server.session.post("/v1/bundles", data=body, headers=JSON) as resp:
            # commit_timeout, not the sequencer's lock timeout (database_unavailable after 20 s).
            assert resp.status == 503, await resp.text()
            assert (await resp.json())["error"]["code"] == "commit_timeout"
            assert resp.headers["Retry-After"]
        await tx.rollback()  # the log recovers: the waiting batch gets the lock and commits

        async with server.session.post("/v1/bundles", data=body, headers=JSON) as resp:
            receipt = await resp.json()
            # The entry was in the batch waiting for the lock: it was committed, and
            # the retry is its duplicate.
            assert resp.status == 200, receipt
            assert receipt["duplicate"] is True
        # Appended once: the entry, then the HEADS leaf ending its batch (docs/fleet-heads.md).
        async with server.session.get("/v1/log") as resp:
            assert (await resp.json())["tree_size"] == receipt["index"] + 2 == receipt["tree_size"]
    finally:
        await holder.close()
        await server.close()
