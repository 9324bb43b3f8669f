"""Bad input, generated from the contract: schemathesis over every route of openapi.yaml.

A real server (real PostgreSQL, a real port) holding a few hundred entries is sent
at least 1,000 generated requests: schema-valid ones (positive) and schema-violating
ones (negative) for every operation, plus cases aimed at data that exists (real leaf
hashes, fleets, tiles). Every response must pass schemathesis's checks:

* `not_a_server_error`, and stricter: no 5xx at all (not even 503; nothing here
  overloads the server or touches the database's availability);
* `status_code_conformance`, `content_type_conformance`,
  `response_headers_conformance`, `response_schema_conformance`: the status is
  documented for the operation and the headers and body match the document;
* `negative_data_rejection`: a request the document says is invalid is refused
  (with one of the 4xx the API uses), so the document is never stricter than the server.

`positive_data_acceptance` is not used: schema-valid requests are refused when they
name state that does not exist (a tree size beyond the latest checkpoint: 400),
which the document states but a schema cannot express.

The number of examples can be raised with LOGSERVER_LONG_FAULTS=1 (x10).
"""
from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bundle_factory import BundleFactory
from server_harness import start_server, write_config

pytestmark = pytest.mark.fault

SPEC_PATH = Path(__file__).resolve().parents[1] / "openapi.yaml"
LONG = os.environ.get("LOGSERVER_LONG_FAULTS") == "1"
SCALE = 10 if LONG else 1
MIN_TOTAL_EXAMPLES = 1000
SEED_ENTRIES = 300  # one full hash tile and entry bundle, and a partial one after it

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection]
# Every refusal status the API documents; negative_data_rejection accepts any of them.
REFUSALS = ["400", "404", "405", "408", "409", "413", "415", "422"]


def load_schema(base_url: str):
    config = schemathesis.Config.from_dict({
        "checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}},
    })
    schema = schemathesis.openapi.from_path(SPEC_PATH, config=config)
    schema.config.update(base_url=base_url)
    return schema


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory):
    extra = "[limits]\nrequest_timeout_s = 5\n"
    s = await start_server(write_config(tmp_path_factory.mktemp("schemathesis"), database_url, extra=extra))
    yield s
    await s.close()


async def seed(server) -> dict[str, list[str]]:
    """Fill the log so that generated requests can also hit existing entries and tiles."""
    bodies = [BundleFactory(fleet_id=f"st-fleet-{i}").envelope_json() for i in range(SEED_ENTRIES)]
    receipts = []
    for start in range(0, len(bodies), 50):
        rs = await asyncio.gather(*(server.session.post("/v1/bundles", data=b,
                                                       headers={"Content-Type": "application/json"})
                                    for b in bodies[start:start + 50]))
        for r in rs:
            assert r.status == 201, await r.text()
            receipts.append(await r.json())
    return {
        "leaf_hash": [r["leaf_hash"] for r in receipts[:5]],
        "fleet_id": ["st-fleet-0", "st-fleet-1", f"st-fleet-{SEED_ENTRIES - 1}"],
        "N": ["000", "000.p/7", "001.p/44", "001"],
    }


def strategies_for(op, known: dict[str, list[str]]):
    """Positive and negative generated cases, plus cases naming existing data."""
    has_input = bool(list(op.iter_parameters())) or op.body
    parts = [op.as_strategy(GenerationMode.POSITIVE)]
    if has_input:
        parts.append(op.as_strategy(GenerationMode.NEGATIVE))
    names = {p.name for p in op.path_parameters}
    for name in names & known.keys():
        for value in known[name]:
            fixed = {name: value}
            if "L" in names:
                fixed["L"] = "0"
            parts.append(op.as_strategy(GenerationMode.POSITIVE, path_parameters=fixed))
    return st.one_of(*parts), (140 if has_input else 10) * SCALE


def run_operation(op, strategy, max_examples: int, base_url: str, counts: Counter, statuses: Counter) -> None:
    session = requests.Session()

    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def one(case):
        response = case.call(base_url=base_url, session=session, timeout=30)
        counts[op.label] += 1
        statuses[response.status_code] += 1
        assert response.status_code < 500, (
            f"{op.label}: {response.status_code} {response.text[:300]!r} for {case.as_curl_command()}")
        case.validate_response(response, checks=CHECKS)

    try:
        one()
    finally:
        session.close()


async def test_schemathesis_every_route(server):
    known = await seed(server)
    schema = load_schema(server.url)
    operations = [result.ok() for result in schema.get_all_operations()]
    documented = {(method.upper(), path) for path, item in schema.raw_schema["paths"].items()
                  for method in item if method in ("get", "post", "put", "delete", "patch")}
    assert {(op.method.upper(), op.path) for op in operations} == documented
    counts: Counter = Counter()
    statuses: Counter = Counter()

    def fuzz_all() -> None:
        for op in operations:
            strategy, n = strategies_for(op, known)
            run_operation(op, strategy, n, server.url, counts, statuses)

    await asyncio.to_thread(fuzz_all)  # schemathesis is synchronous; the server runs on this loop

    assert set(counts) == {op.label for op in operations}, counts  # every route was exercised
    total = sum(counts.values())
    assert total >= MIN_TOTAL_EXAMPLES, (total, counts)
    # The data-aware cases found real data, and the refusals were exercised too.
    assert statuses[200] > 0 and statuses[400] > 0 and statuses[404] > 0, statuses
    assert not [s for s in statuses if s >= 500], statuses
    print(f"\nschemathesis: {total} examples; by operation {dict(counts)}; by status {dict(statuses)}")
