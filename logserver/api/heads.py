"""GET /v1/fleets/{fleet_id}/head: the fleet-head proof (docs/fleet-heads.md).

The proof is made at the checkpoint the log publishes (the witness-cosigned one under a
witness policy: api/published.py), from the reader's heads table at that size
(read/heads_reader.py). Every outcome the proof can show is a 200: the fleet's newest
bundle (active or retired) or its verified absence; a client learns which by verifying
it, not from the status code.
"""
from __future__ import annotations

from aiohttp import web

from ..bundle import is_fleet_id
from ..http.errors import ApiError, bad_request, not_found
from ..http.params import query
from ..http.responses import FLEET_HEAD_CACHE, raw_json_response
from ..read.heads_reader import HeadsAheadError, HeadsUnavailableError, NoHeadsLeafError
from .keys import CONFIG, HEADS
from .published import published_covering, published_latest


async def get_fleet_head(request: web.Request) -> web.Response:
    query(request, set())
    fleet_id = request.match_info["fleet_id"]
    if not is_fleet_id(fleet_id):
        raise bad_request(f"fleet_id: got {fleet_id[:140]!r}, want 1-128 of [A-Za-z0-9._:-], not '.' or '..'",
                          code="bad_fleet_id")
    app = request.app
    heads = app[HEADS]
    cp = await published_latest(app)
    try:
        try:
            data = await heads.proof(fleet_id, cp)
        except HeadsAheadError as e:
            # The table was built at the database's size, which the published checkpoint
            # has not reached yet: wait for it (bounded, as a receipt does; 503 past that).
            cp = await published_covering(app, e.size)
            data = await heads.proof(fleet_id, cp)
    except NoHeadsLeafError as e:
        raise not_found(f"no fleet-head proof at the published checkpoint: {e}", code="no_heads_leaf") from None
    except HeadsUnavailableError as e:
        raise ApiError(503, "fleet_heads_unavailable", f"{e}; retry later",
                       retry_after=app[CONFIG].limits.retry_after_s) from None
    return raw_json_response(data, cache=FLEET_HEAD_CACHE)
