"""Hypothesis mutations of valid dual-signed envelopes, submitted to a real server.

Each example signs a fresh valid envelope, mutates it (bit flips, byte edits,
insertions, deletions, or a structural JSON edit), submits the mutant, then the
original. A mutant is either refused with a 4xx (and nothing is appended), or accepted
only if an independent check here says it is still a valid envelope: strict JSON with
exactly the DSSE fields, the same payload type and payload bytes as the original, and
signatures that verify over the DSSE PAE (written here from the DSSE spec, not with
the server's code) from a pinned signer and a pinned countersigner. Every example adds
exactly one bundle (the valid mutant or the original, whichever came first) and the
HEADS leaf ending its batch (docs/fleet-heads.md), so the tree grows by two leaves per
example, and the entry logged is the one accepted.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os

import pytest
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundle_factory import BundleFactory, default_authorities
from server_harness import start_server, write_config

pytestmark = pytest.mark.fault

LONG = os.environ.get("LOGSERVER_LONG_FAULTS") == "1"
EXAMPLES = 2000 if LONG else 200
JSON = {"Content-Type": "application/json"}
AUTH = default_authorities()
PINNED = {a.keyid: a for a in (AUTH.signer, AUTH.countersigner)}


# --- the independent validity check --------------------------------------------------------------


def pae(payload_type: bytes, body: bytes) -> bytes:
    """DSSE v1: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body (LEN: ASCII decimal)."""
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type, len(body), body)


def b64(text: object) -> bytes | None:
    """Padded standard or URL-safe base64 (one alphabet), else None."""
    if not isinstance(text, str):
        return None
    for alt in (None, b"-_"):
        try:
            return base64.b64decode(text, altchars=alt, validate=True)
        except (binascii.Error, ValueError):
            continue
    return None


def no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def verifies(fixture, sig: bytes, message: bytes) -> bool:
    public = fixture.private_key.public_key()
    try:
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(sig, message)
        else:
            public.verify(sig, message, ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False


def still_valid(mutant: bytes, original: dict) -> bool:
    """Is `mutant` the original envelope's payload, validly dual-signed?"""
    try:
        d = json.loads(mutant, object_pairs_hook=no_duplicate_keys)
    except ValueError:
        return False
    if not isinstance(d, dict) or set(d) != {"payloadType", "payload", "signatures"}:
        return False
    if d["payloadType"] != original["payloadType"] or b64(d["payload"]) != b64(original["payload"]):
        return False
    sigs = d["signatures"]
    if not isinstance(sigs, list) or not 1 <= len(sigs) <= 16:
        return False
    message = pae(d["payloadType"].encode(), b64(d["payload"]))
    roles = set()
    for s in sigs:
        if not isinstance(s, dict) or set(s) != {"keyid", "sig"} or not isinstance(s["keyid"], str):
            return False
        sig = b64(s["sig"])
        if sig is None:
            return False
        if s["keyid"] in PINNED:  # signatures under unknown keyids are ignored (docs/formats.md)
            if not verifies(PINNED[s["keyid"]], sig, message):
                return False
            roles.add(PINNED[s["keyid"]].role)
    return roles == {"signer", "countersigner"}


# --- mutations ---------------------------------------------------------------------------------


def structural(d: dict, which: int, data) -> dict | list | str:
    sigs = d["signatures"]
    edits = [
        lambda: {**d, "signatures": list(reversed(sigs))},  # still valid
        lambda: {**d, "signatures": sigs[:1]},
        lambda: {**d, "signatures": [*sigs, {"keyid": "unknown", "sig": sigs[0]["sig"]}]},  # still valid
        lambda: {**d, "signatures": [{**sigs[0], "sig": sigs[1]["sig"]}, sigs[1]]},
        lambda: {**d, "signatures": [{**sigs[0], "keyid": sigs[1]["keyid"]}, sigs[1]]},
        lambda: {**d, "payloadType": d["payloadType"] + " "},
        lambda: {**d, "payload": base64.urlsafe_b64encode(base64.b64decode(d["payload"])).decode()},
        lambda: {**d, "payload": d["payload"].rstrip("=")},
        lambda: {**d, "extra": 1},
        lambda: {k: v for k, v in d.items() if k != "payloadType"},
        lambda: {**d, "signatures": sigs * 9},
        lambda: {**d, "payload": base64.b64encode(base64.b64decode(d["payload"]) + b" ").decode()},
        lambda: [d],
        lambda: {**d, "signatures": [{**s, "sig": s["sig"].replace("=", "") + "=="} for s in sigs]},
        lambda: {**d, "payload": None},
    ]
    return edits[which % len(edits)]()


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 16)),
    st.tuples(st.just("json"), st.integers(0, 100), st.just(None)),
    st.tuples(st.just("whitespace"), st.integers(0, 100), st.just(None)),  # still valid
)


def mutate(body: bytes, m) -> bytes:
    kind, pos, arg = m
    b = bytearray(body)
    i = pos % len(b)
    if kind == "flip":
        b[i] ^= 1 << arg
    elif kind == "set":
        b[i] = arg
    elif kind == "insert":
        b[i:i] = arg
    elif kind == "delete":
        del b[i:i + arg]
    elif kind == "json":
        return json.dumps(structural(json.loads(body), pos, arg)).encode()
    else:
        return json.dumps(json.loads(body), indent=pos % 5 + 1).encode()
    return bytes(b)


# --- the test ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory):
    s = await start_server(write_config(tmp_path_factory.mktemp("mutations"), database_url))
    yield s
    await s.close()


async def test_mutated_envelopes_are_refused_unless_still_valid(server):
    url = server.url
    factory = BundleFactory(fleet_id="mutations")
    outcomes: dict[str, int] = {}
    accepted: list[tuple[int, str]] = []  # (index, leaf_hash) of every 201

    def run() -> None:
        http = requests.Session()

        def size() -> int:
            return http.get(url + "/v1/log", timeout=30).json()["tree_size"]

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(m=mutation)
        def one(m):
            original = factory.envelope_json()
            mutant = mutate(original, m)
            valid = still_valid(mutant, json.loads(original))
            before = size()
            r = http.post(url + "/v1/bundles", data=mutant, headers=JSON, timeout=30)
            assert r.status_code < 500, (m, r.status_code, r.text)
            if r.status_code in (200, 201):
                assert valid, f"accepted a mutant that is not a valid envelope: {m}: {mutant[:200]!r}"
                assert r.status_code == 201 and r.json()["index"] == before
                accepted.append((before, r.json()["leaf_hash"]))
                outcomes["accepted"] = outcomes.get("accepted", 0) + 1
                again = http.post(url + "/v1/bundles", data=original, headers=JSON, timeout=30)
                assert again.status_code == 200 and again.json()["duplicate"] is True, again.text
            else:
                assert 400 <= r.status_code < 500
                assert size() == before, f"a refused mutant changed the tree: {m}"
                outcomes[f"refused {r.status_code}"] = outcomes.get(f"refused {r.status_code}", 0) + 1
                if valid:
                    outcomes["valid but refused"] = outcomes.get("valid but refused", 0) + 1
                r = http.post(url + "/v1/bundles", data=original, headers=JSON, timeout=30)
                assert r.status_code == 201, r.text
                accepted.append((before, r.json()["leaf_hash"]))

        try:
            one()
        finally:
            http.close()

    start = (await (await server.session.get("/v1/log")).json())["tree_size"]
    await asyncio.to_thread(run)
    print(f"\nmutations: {outcomes}")
    size = (await (await server.session.get("/v1/log")).json())["tree_size"]
    # Hypothesis may replay a few examples; each one, replay or not, added exactly one
    # bundle and its batch's HEADS leaf.
    assert size - start == 2 * len(accepted) and len(accepted) >= EXAMPLES, (size, start, len(accepted))
    assert outcomes.get("accepted", 0) > 0 and sum(v for k, v in outcomes.items() if k.startswith("refused")) > 0
    for index, lh in accepted[:50] + accepted[-50:]:
        r = await server.session.get(f"/v1/entries?start={index}&end={index + 2}")
        bundle, heads = (await r.json())["entries"]
        assert bundle["leaf_hash"] == lh and "envelope" in bundle and "heads" in heads
