"""Every way a submission or a read can be refused: status, error code, and no append.

Each refused submission is followed by a check that the log did not move: the
tree size (GET /v1/log) and every entry (GET /v1/entries) are unchanged.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from collections.abc import Callable

import pytest

from bundle_factory import (
    BundleFactory,
    default_authorities,
    make_authority,
    make_envelope,
    make_key,
    payload_bytes,
)
from logserver.bundle import Envelope
from server_harness import start_server, write_config

JSON = {"Content-Type": "application/json"}
AUTH = default_authorities()
# A second key of the signer authority, pinned in this module's config.
SIGNER_2 = make_authority(AUTH.signer.name, "signer", "ecdsa-p256", seed=2)
UNKNOWN = make_authority("nobody-ca", "signer", "ed25519", seed=7)
ROLLBACK_FLEET = "rollback-fleet"


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory):
    directory = tmp_path_factory.mktemp("rejections")
    cfg = write_config(directory, database_url)
    (directory / "signer2.pem").write_bytes(SIGNER_2.public_pem)
    cfg.write_text(cfg.read_text().replace('keys = ["signer.pem"]', 'keys = ["signer.pem", "signer2.pem"]'))
    s = await start_server(cfg)
    factory = BundleFactory(fleet_id="seed-fleet")
    for _ in range(3):
        async with s.session.post("/v1/bundles", data=factory.envelope_json(), headers=JSON) as resp:
            assert resp.status == 201, await resp.text()
    # Sequence 5 logged for the rollback/equivocation fleet; 0..4 never are.
    async with s.session.post("/v1/bundles", data=rollback_envelope(5).to_json(), headers=JSON) as resp:
        assert resp.status == 201, await resp.text()
    yield s
    await s.close()


def rollback_envelope(sequence: int, key_index: int = 0) -> Envelope:
    keys = [make_key("hsm-0", "ed25519", key_index)]
    return make_envelope(BundleFactory(fleet_id=ROLLBACK_FLEET).payload(sequence=sequence, keys=keys))


async def log_state(server) -> tuple[int, list[dict]]:
    """(tree size, every entry) as served."""
    async with server.session.get("/v1/log") as resp:
        assert resp.status == 200
        size = (await resp.json())["tree_size"]
    entries: list[dict] = []
    while len(entries) < size:
        async with server.session.get("/v1/entries", params={"start": len(entries), "end": size}) as resp:
            assert resp.status == 200, await resp.text()
            entries += (await resp.json())["entries"]
    return size, entries


async def assert_error(resp, status: int, code: str) -> dict:
    body = await resp.read()
    assert resp.status == status, body[:500]
    assert resp.content_type == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    return error


# --- submissions -------------------------------------------------------------------------


def envelope_dict(**changes: object) -> dict:
    d = BundleFactory(fleet_id="refused-fleet").envelope().to_dict()
    d.update(changes)
    return d


def as_json(d: dict) -> bytes:
    return json.dumps(d).encode()


def tampered_payload() -> bytes:
    d = envelope_dict()
    payload = json.loads(base64.b64decode(d["payload"]))
    payload["sequence"] += 1000  # still a valid payload, but not the signed one
    d["payload"] = base64.b64encode(payload_bytes(payload)).decode()
    return as_json(d)


def signed_by(*signers) -> bytes:
    payload = BundleFactory(fleet_id="refused-fleet").payload()
    return make_envelope(payload, signers=signers).to_json()


def invalid_known_signature() -> bytes:
    env = BundleFactory(fleet_id="refused-fleet").envelope()
    other = make_envelope(BundleFactory(fleet_id="other-fleet").payload())  # right keys, other message
    sigs = tuple(s if s.keyid != AUTH.signer.keyid else next(o for o in other.signatures if o.keyid == s.keyid)
                 for s in env.signatures)
    return Envelope(env.payload_type, env.payload, sigs).to_json()


def duplicate_signatures() -> bytes:
    d = envelope_dict()
    d["signatures"] = d["signatures"] + d["signatures"][:1]
    return as_json(d)


def with_payload(**fields: object) -> bytes:
    return make_envelope(BundleFactory(fleet_id="refused-fleet").payload(**fields)).to_json()


def unknown_payload_field() -> bytes:
    payload = BundleFactory(fleet_id="refused-fleet").payload()
    payload["comment"] = "not in the schema"
    return make_envelope(payload).to_json()


async def chunked(data: bytes, chunk: int = 8192):
    for i in range(0, len(data), chunk):
        yield data[i:i + chunk]


REFUSALS: dict[str, tuple[Callable[[], object], dict[str, str], int, str]] = {
    # name: (body maker, headers, status, code)
    "malformed_json": (lambda: b'{"payloadType": "x", "payload": ', JSON, 400, "malformed_envelope"),
    "not_json_object": (lambda: b"[]", JSON, 400, "malformed_envelope"),
    "wrong_content_type": (lambda: BundleFactory(fleet_id="refused-fleet").envelope_json(),
                           {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
    "too_large_with_content_length": (lambda: b"{" + b" " * 70_000 + b"}", JSON, 413, "too_large"),
    "too_large_chunked": (lambda: chunked(b"{" + b" " * 70_000 + b"}"), JSON, 413, "too_large"),
    "unknown_envelope_field": (lambda: as_json(envelope_dict(comment="x")), JSON, 400, "malformed_envelope"),
    "unknown_payload_field": (unknown_payload_field, JSON, 400, "malformed_payload"),
    "bad_base64": (lambda: as_json(envelope_dict(payload="not base64!")), JSON, 400, "malformed_envelope"),
    # "QR==" decodes to b"A" only if the unused low bits are ignored; canonical is "QQ==".
    "non_canonical_base64": (lambda: as_json(envelope_dict(payload="QR==")), JSON, 400, "malformed_envelope"),
    "signer_signature_missing": (lambda: signed_by(AUTH.countersigner), JSON, 422, "signer_signature_missing"),
    "countersigner_missing": (lambda: signed_by(AUTH.signer), JSON, 422, "countersigner_signature_missing"),
    "both_signatures_by_one_authority": (lambda: signed_by(AUTH.signer, SIGNER_2), JSON, 422,
                                         "countersigner_signature_missing"),
    "unknown_key_only": (lambda: signed_by(UNKNOWN), JSON, 422, "signer_signature_missing"),
    "tampered_payload": (tampered_payload, JSON, 422, "invalid_signature"),
    "changed_payload_type": (lambda: as_json(envelope_dict(payloadType="application/json")), JSON, 422,
                             "unsupported_payload_type"),
    "duplicate_signatures": (duplicate_signatures, JSON, 400, "duplicate_signature"),
    "invalid_signature_by_known_key": (invalid_known_signature, JSON, 422, "invalid_signature"),
    "expired": (lambda: with_payload(not_before="2020-01-01T00:00:00Z", not_after="2021-01-01T00:00:00Z"),
                JSON, 422, "expired"),
    "empty_validity_window": (lambda: with_payload(not_before="2090-01-01T00:00:00Z",
                                                   not_after="2090-01-01T00:00:00Z"),
                              JSON, 422, "invalid_validity_window"),
    "inverted_validity_window": (lambda: with_payload(not_before="2095-01-01T00:00:00Z",
                                                      not_after="2090-01-01T00:00:00Z"),
                                 JSON, 422, "invalid_validity_window"),
    "rollback": (lambda: rollback_envelope(3).to_json(), JSON, 409, "rollback"),
    "equivocation": (lambda: rollback_envelope(5, key_index=1).to_json(), JSON, 409, "equivocation"),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
async def test_refused_submission_appends_nothing(server, name):
    make_body, headers, status, code = REFUSALS[name]
    before = await log_state(server)
    async with server.session.post("/v1/bundles", data=make_body(), headers=headers) as resp:
        await assert_error(resp, status, code)
    assert await log_state(server) == before


def test_refusal_cases_are_what_they_claim():
    """The bodies differ from a valid envelope only in the one thing they break."""
    assert SIGNER_2.keyid not in (AUTH.signer.keyid, AUTH.countersigner.keyid)
    assert UNKNOWN.keyid not in (AUTH.signer.keyid, AUTH.countersigner.keyid, SIGNER_2.keyid)
    # The equivocating bundle really is another payload for the same (fleet, sequence).
    a, b = rollback_envelope(5), rollback_envelope(5, key_index=1)
    assert a.payload != b.payload
    assert json.loads(a.payload)["sequence"] == json.loads(b.payload)["sequence"] == 5
    # The invalid signature is a real signature by the signer key, over another message.
    bad = json.loads(invalid_known_signature())
    assert sorted(s["keyid"] for s in bad["signatures"]) == sorted([AUTH.signer.keyid, AUTH.countersigner.keyid])
    assert len(base64.b64decode(next(s["sig"] for s in bad["signatures"] if s["keyid"] == AUTH.signer.keyid))) == 64


async def metric(server, name: str) -> float:
    async with server.session.get("/metrics") as resp:
        text = await resp.text()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


async def test_rollback_below_the_fleet_head(server):
    # Sequence 5 is logged; 3 was never logged and is older.
    async with server.session.get(f"/v1/fleets/{ROLLBACK_FLEET}") as resp:
        assert resp.status == 200
        assert (await resp.json())["sequence"] == 5
    before = await log_state(server)
    async with server.session.post("/v1/bundles", data=rollback_envelope(3).to_json(), headers=JSON) as resp:
        error = await assert_error(resp, 409, "rollback")
    assert "5" in error["message"]
    assert await log_state(server) == before


async def test_equivocation_is_refused_counted_and_logged(server, caplog):
    caplog.set_level(logging.WARNING, logger="logserver.write.sequencer")
    logged, other = rollback_envelope(5), rollback_envelope(5, key_index=1)
    count = await metric(server, "logserver_equivocations_total")
    before = await log_state(server)
    async with server.session.post("/v1/bundles", data=other.to_json(), headers=JSON) as resp:
        await assert_error(resp, 409, "equivocation")
    assert await log_state(server) == before
    assert await metric(server, "logserver_equivocations_total") == count + 1

    digests = hashlib.sha256(logged.payload).hexdigest(), hashlib.sha256(other.payload).hexdigest()
    warnings = [r for r in caplog.records
                if r.levelno == logging.WARNING and r.name == "logserver.write.sequencer"
                and all(d in r.getMessage() for d in digests)]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert ROLLBACK_FLEET in warnings[0].getMessage()


# --- reads -------------------------------------------------------------------------------

H = "ab" * 32  # a well-formed leaf hash no entry has

BAD_READS = [
    "/v1/log?x=1",
    "/checkpoint?x=1",
    "/v1/proof/inclusion?index=0",
    "/v1/proof/inclusion?tree_size=2",
    "/v1/proof/inclusion?tree_size=2&index=0&leaf_hash=" + H,
    "/v1/proof/inclusion?tree_size=02&index=0",
    "/v1/proof/inclusion?tree_size=2&index=-1",
    "/v1/proof/inclusion?tree_size=2&index=+1",
    "/v1/proof/inclusion?tree_size=2&index=1.0",
    "/v1/proof/inclusion?tree_size=2&index= 1",
    "/v1/proof/inclusion?tree_size=2&index=0x1",
    "/v1/proof/inclusion?tree_size=99999999999999999999&index=0",
    "/v1/proof/inclusion?tree_size=2&index=2",
    "/v1/proof/inclusion?tree_size=0&index=0",
    "/v1/proof/inclusion?tree_size=1000000&index=0",
    "/v1/proof/inclusion?tree_size=2&index=0&index=1",
    "/v1/proof/inclusion?tree_size=2&index=0&extra=1",
    "/v1/proof/inclusion?tree_size=2&leaf_hash=" + H.upper(),
    "/v1/proof/inclusion?tree_size=2&leaf_hash=" + H[:-2],
    "/v1/proof/consistency?first=1",
    "/v1/proof/consistency?first=2&second=1",
    "/v1/proof/consistency?first=1&second=1000000",
    "/v1/proof/consistency?first=1&second=2&x=3",
    "/v1/proof/consistency?first=1e0&second=2",
    "/v1/proof/consistency?first=&second=2",
    "/v1/entries?start=0",
    "/v1/entries?start=1&end=1",
    "/v1/entries?start=2&end=1",
    "/v1/entries?start=0&end=1000000",
    "/v1/entries?start=00&end=1",
    "/v1/entries?start=0&end=1&start=0",
    "/v1/bundles/" + H.upper(),
    "/v1/bundles/" + H[:-1],
    "/v1/bundles/" + H + "?x=1",
    "/v1/fleets/bad%20fleet",
    "/v1/fleets/" + "f" * 129,
    f"/v1/fleets/{ROLLBACK_FLEET}?x=1",
    "/tile/0/000.p/1?x=1",
]


@pytest.mark.parametrize("path", BAD_READS)
async def test_bad_read_parameters_are_400(server, path):
    async with server.session.get(path) as resp:
        await assert_error(resp, 400, "bad_request")


@pytest.mark.parametrize("path", [
    "/v1/bundles/" + H,
    "/v1/proof/inclusion?tree_size=2&leaf_hash=" + H,
    "/v1/fleets/never-logged-fleet",
])
async def test_unknown_leaf_hash_or_fleet_is_404(server, path):
    async with server.session.get(path) as resp:
        await assert_error(resp, 404, "not_found")


async def test_good_reads_still_answer(server):
    """Sanity for the table above: the same routes with good parameters are 200."""
    size, entries = await log_state(server)
    lh = entries[1]["leaf_hash"]
    for path in [f"/v1/proof/inclusion?tree_size={size}&index=1",
                 f"/v1/proof/inclusion?tree_size={size}&leaf_hash={lh}",
                 f"/v1/proof/consistency?first=1&second={size}", "/v1/entries?start=0&end=1",
                 f"/v1/bundles/{lh}", f"/v1/fleets/{ROLLBACK_FLEET}", "/checkpoint", "/v1/log"]:
        async with server.session.get(path) as resp:
            assert resp.status == 200, (path, await resp.text())


async def test_an_explicitly_active_status_is_accepted(server):
    body = make_envelope(BundleFactory(fleet_id="active-status-fleet").payload(status="active")).to_json()
    async with server.session.post("/v1/bundles", data=body, headers=JSON) as resp:
        assert resp.status == 201, await resp.text()


async def test_a_retired_fleet_refuses_its_later_bundles_and_appends_nothing(server):
    """Issue 20 §2: a dual-signed retirement is logged; every later new bundle of the
    fleet gets 409 `fleet_retired` and nothing is appended; a replay of the retirement
    is still a duplicate."""
    fleet = BundleFactory(fleet_id="retiring-fleet")
    retirement = make_envelope(fleet.payload(sequence=4, status="retired"))
    async with server.session.post("/v1/bundles", data=retirement.to_json(), headers=JSON) as resp:
        assert resp.status == 201, await resp.text()
        index = (await resp.json())["index"]
    async with server.session.get("/v1/fleets/retiring-fleet") as resp:
        assert resp.status == 200 and (await resp.json())["index"] == index
    before = await log_state(server)
    for later in (fleet.payload(sequence=5), fleet.payload(sequence=9, status="active"), fleet.payload(sequence=2)):
        async with server.session.post("/v1/bundles", data=make_envelope(later).to_json(), headers=JSON) as resp:
            error = await assert_error(resp, 409, "fleet_retired")
        assert "retired by its bundle of sequence 4" in error["message"]
    assert await log_state(server) == before
    async with server.session.post("/v1/bundles", data=retirement.to_json(), headers=JSON) as resp:
        assert resp.status == 200 and (await resp.json())["index"] == index
