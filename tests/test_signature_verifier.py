"""The signature checks in helper processes (logserver/signature_verifier.py)."""
from __future__ import annotations

import asyncio
import dataclasses
import os
import signal

import pytest

from logserver.bundle import PolicyError, select_signatures
from logserver.signature_verifier import SignatureVerifier, VerifierUnavailableError, encode_batch
from logserver.verify_worker import check_frame

from bundle_factory import BundleFactory, default_authorities


def _checks(envelope):
    return select_signatures(envelope, default_authorities().authority_set)


def _tampered(envelope, position: int):
    """The envelope with the signature at `position` flipped in its last byte."""
    sigs = list(envelope.signatures)
    s = sigs[position]
    sigs[position] = dataclasses.replace(s, sig=s.sig[:-1] + bytes([s.sig[-1] ^ 1]))
    return dataclasses.replace(envelope, signatures=tuple(sigs))


async def _inline_error(checks) -> str:
    with pytest.raises(PolicyError) as e:
        checks.run()
    return str(e.value)


@pytest.fixture(scope="module")
async def verifier():
    v = SignatureVerifier(default_authorities().authority_set, processes=1)
    await v.start()
    yield v
    await v.close()


async def test_good_and_bad_signatures_in_one_frame_get_their_own_answers(verifier):
    factory = BundleFactory(fleet_id="verifier-frame")
    good = [_checks(factory.envelope()) for _ in range(5)]
    bad_signer = _checks(_tampered(factory.envelope(), 0))
    bad_counter = _checks(_tampered(factory.envelope(), 1))
    results = await asyncio.gather(
        *(verifier.verify(c) for c in [*good, bad_signer, bad_counter]), return_exceptions=True
    )
    assert results[:5] == [None] * 5
    # The same error, word for word, as the inline check gives.
    assert isinstance(results[5], PolicyError) and results[5].code == "invalid_signature"
    assert str(results[5]) == await _inline_error(bad_signer)
    assert isinstance(results[6], PolicyError) and str(results[6]) == await _inline_error(bad_counter)
    assert "countersigner" in str(results[6])


async def test_inline_mode_starts_no_process():
    v = SignatureVerifier(default_authorities().authority_set, processes=0)
    await v.start()
    good = _checks(BundleFactory(fleet_id="verifier-inline").envelope())
    assert await v.verify(good) is None
    with pytest.raises(PolicyError, match="does not verify"):
        await v.verify(_checks(_tampered(BundleFactory(fleet_id="verifier-inline").envelope(), 0)))
    await v.close()


async def test_a_killed_verifier_fails_its_frames_with_503_and_is_replaced(verifier):
    factory = BundleFactory(fleet_id="verifier-killed")
    (child,) = verifier._children
    os.kill(child.proc.pid, signal.SIGKILL)
    await asyncio.wait_for(child.proc.wait(), 10)
    outcomes = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30  # generous: a respawn is a Python start-up
    while True:
        try:
            await verifier.verify(_checks(factory.envelope()))
            outcomes.append("ok")
            break
        except VerifierUnavailableError:
            outcomes.append("unavailable")
        assert loop.time() < deadline, f"no verifier came back: {outcomes[-5:]}"
        await asyncio.sleep(0.05)
    assert outcomes[-1] == "ok"
    assert verifier._children[0].proc.pid != child.proc.pid


def test_worker_frame_parsing_matches_the_encoder_and_refuses_trailing_bytes():
    authorities = default_authorities().authority_set
    keys = list(authorities.values())
    numbers = {k.keyid: i for i, k in enumerate(keys)}
    factory = BundleFactory(fleet_id="verifier-wire")
    batch = [_checks(factory.envelope()), _checks(_tampered(factory.envelope(), 1))]
    frame = encode_batch(batch, numbers)
    body = frame[4:]
    assert int.from_bytes(frame[:4], "big") == len(body)
    answer = check_frame(body, [k.public_key for k in keys])
    assert answer == (2).to_bytes(4, "big") + bytes([0, 2])
    with pytest.raises(ValueError, match="trailing"):
        check_frame(body + b"\0", [k.public_key for k in keys])
