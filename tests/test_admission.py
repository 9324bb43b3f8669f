"""Submissions checked in helper processes (logserver/admission.py and its wire format)."""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import signal

import pytest

from logserver.admission import AdmissionPool, AdmissionUnavailableError
from logserver.admission_wire import decode_answer, decode_request, encode_answer, encode_request
from logserver.admission_worker import answer
from logserver.bundle import Admitted, BundleError, admit

from bundle_factory import BundleFactory, default_authorities

NOW_S = 1_800_000_000.0  # inside the factory's default validity window


def _tampered(envelope, position: int) -> bytes:
    """The envelope's JSON with the signature at `position` flipped in its last byte."""
    sigs = list(envelope.signatures)
    s = sigs[position]
    sigs[position] = dataclasses.replace(s, sig=s.sig[:-1] + bytes([s.sig[-1] ^ 1]))
    return dataclasses.replace(envelope, signatures=tuple(sigs)).to_json()


def _bodies(tag: str) -> list[bytes]:
    """One of each outcome: admitted, each refusal class, and an expired bundle."""
    factory = BundleFactory(fleet_id=f"admission-{tag}")
    return [
        factory.envelope_json(),
        factory.envelope_json(),
        _tampered(factory.envelope(), 0),  # PolicyError: the signer's signature
        _tampered(factory.envelope(), 1),  # PolicyError: the countersigner's
        b"{not json",  # MalformedEnvelopeError
        json.dumps({"payloadType": "x", "payload": "!!", "signatures": []}).encode(),
        factory.envelope_json(not_after="2025-06-01T00:00:00Z"),  # ValidityError (expired at NOW_S)
    ]


def _inline(body: bytes) -> Admitted | BundleError:
    try:
        return admit(body, default_authorities().authority_set, dt.datetime.fromtimestamp(NOW_S, dt.timezone.utc))
    except BundleError as e:
        return e


def _same(got, want) -> None:
    if isinstance(want, Admitted):
        assert got == want
    else:
        assert type(got) is type(want) and got.code == want.code and str(got) == str(want)
        assert got.http_status == want.http_status


@pytest.fixture(scope="module")
async def pool():
    p = AdmissionPool(default_authorities().authority_set, processes=1)
    await p.start()
    yield p
    await p.close()


async def test_every_outcome_is_the_same_as_inline(pool):
    bodies = _bodies("outcomes")
    want = [_inline(b) for b in bodies]
    assert [type(w).__name__ for w in want] == [
        "Admitted", "Admitted", "PolicyError", "PolicyError", "MalformedEnvelopeError",
        "MalformedEnvelopeError", "ValidityError"], want
    got = await asyncio.gather(*(pool.admit(b, NOW_S) for b in bodies), return_exceptions=True)
    for g, w in zip(got, want):
        _same(g, w)
    assert pool.pending == 0


async def test_inline_mode_starts_no_process():
    p = AdmissionPool(default_authorities().authority_set, processes=0)
    await p.start()
    body = BundleFactory(fleet_id="admission-inline").envelope_json()
    _same(await p.admit(body, NOW_S), _inline(body))
    await p.close()


async def test_a_killed_process_fails_its_bodies_with_unavailable_and_is_replaced(pool):
    factory = BundleFactory(fleet_id="admission-killed")
    (child,) = pool._children
    os.kill(child.proc.pid, signal.SIGKILL)
    await asyncio.wait_for(child.proc.wait(), 10)
    outcomes = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30  # generous: a replacement is a Python start-up
    while True:
        try:
            assert isinstance(await pool.admit(factory.envelope_json(), NOW_S), Admitted)
            outcomes.append("admitted")
            break
        except AdmissionUnavailableError:
            outcomes.append("unavailable")
        assert loop.time() < deadline, f"no admission process came back: {outcomes[-5:]}"
        await asyncio.sleep(0.05)
    assert outcomes[-1] == "admitted"
    assert pool._children[0].proc.pid != child.proc.pid


def test_frames_round_trip_and_refuse_trailing_bytes():
    bodies = _bodies("wire")
    frame = encode_request(int(NOW_S * 1000), bodies)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    assert decode_request(frame[4:]) == (int(NOW_S * 1000), bodies)
    with pytest.raises(ValueError, match="trailing"):
        decode_request(frame[4:] + b"\0")
    reply = answer(frame[4:], default_authorities().authority_set)
    assert int.from_bytes(reply[:4], "big") == len(reply) - 4
    for g, w in zip(decode_answer(reply[4:]), [_inline(b) for b in bodies]):
        _same(g, w)
    with pytest.raises(ValueError, match="trailing"):
        decode_answer(encode_answer([])[4:] + b"\0")
