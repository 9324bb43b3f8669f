"""Submissions checked in helper processes (logserver/write/admission.py and its wire format)."""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import signal
import sys

import pytest

from bundle_factory import BundleFactory, default_authorities
from logserver.api.keys import ADMISSION
from logserver.bundle import Admitted, BundleError, admit
from logserver.integrity.checks import StartupError
from logserver.write.admission import RESPAWN_INTERVAL_S, AdmissionPool, AdmissionStartError, AdmissionUnavailableError
from logserver.write.admission_child import answers
from logserver.write.admission_wire import decode_answer, decode_request, encode_answer, encode_request
from server_harness import start_server, write_config

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
        _tampered(factory.envelope(), 0),  # SignaturePolicyError: the signer's signature
        _tampered(factory.envelope(), 1),  # SignaturePolicyError: the countersigner's
        b"{not json",  # MalformedEnvelopeError
        json.dumps({"payloadType": "x", "payload": "!!", "signatures": []}).encode(),
        factory.envelope_json(not_after="2025-06-01T00:00:00Z"),  # ValidityError (expired at NOW_S)
    ]


def _inline(body: bytes) -> Admitted | BundleError:
    try:
        return admit(body, default_authorities().authority_set, dt.datetime.fromtimestamp(NOW_S, dt.UTC))
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
        "Admitted", "Admitted", "SignaturePolicyError", "SignaturePolicyError", "MalformedEnvelopeError",
        "MalformedEnvelopeError", "ValidityError"], want
    got = await asyncio.gather(*(pool.admit(b, NOW_S) for b in bodies), return_exceptions=True)
    for g, w in zip(got, want, strict=True):
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
    replies = list(answers(frame[4:], default_authorities().authority_set))
    assert len(replies) == len(bodies)  # one answer frame per body, in order
    for reply, want in zip(replies, [_inline(b) for b in bodies], strict=True):
        assert int.from_bytes(reply[:4], "big") == len(reply) - 4
        (got,) = decode_answer(reply[4:])
        _same(got, want)
    with pytest.raises(ValueError, match="trailing"):
        decode_answer(encode_answer([])[4:] + b"\0")


async def _admitted_eventually(pool: AdmissionPool, body: bytes, timeout_s: float = 30.0) -> list[str]:
    """Submit until one is admitted (a replacement is a Python start-up); the outcomes seen."""
    outcomes = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            assert isinstance(await asyncio.wait_for(pool.admit(body, NOW_S), timeout_s), Admitted)
            outcomes.append("admitted")
            return outcomes
        except AdmissionUnavailableError:
            outcomes.append("unavailable")
        assert loop.time() < deadline, f"no admission process came back: {outcomes[-5:]}"
        await asyncio.sleep(0.05)


async def test_a_stopped_process_is_killed_after_the_frame_deadline_and_replaced():
    pool = AdmissionPool(default_authorities().authority_set, processes=1, frame_deadline_s=1.0)
    await pool.start()
    try:
        factory = BundleFactory(fleet_id="admission-stopped")
        (child,) = pool._children
        os.kill(child.proc.pid, signal.SIGSTOP)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(AdmissionUnavailableError, match="did not answer within 1s"):
            await asyncio.wait_for(pool.admit(factory.envelope_json(), NOW_S), 20)
        assert loop.time() - started < 10
        assert await asyncio.wait_for(child.proc.wait(), 10) == -signal.SIGKILL
        await _admitted_eventually(pool, factory.envelope_json())
        assert pool._children[0].proc.pid != child.proc.pid and pool.ready
    finally:
        await pool.close()


async def test_an_answer_with_the_wrong_item_count_fails_its_requests_not_hangs(tmp_path):
    script = tmp_path / "wrong_count.py"
    script.write_text(
        "import sys\n"
        "from logserver.write.admission_wire import READY, decode_keys, encode_answer\n"
        "inp, out = sys.stdin.buffer, sys.stdout.buffer\n"
        "decode_keys(inp.read)\n"
        "out.write(READY); out.flush()\n"
        "while head := inp.read(4):\n"
        "    inp.read(int.from_bytes(head, 'big'))\n"
        "    out.write(encode_answer([])); out.flush()\n"
    )
    pool = AdmissionPool(default_authorities().authority_set, processes=1, command=[sys.executable, str(script)])
    await pool.start()
    try:
        body = BundleFactory(fleet_id="admission-count").envelope_json()
        with pytest.raises(AdmissionUnavailableError):
            await asyncio.wait_for(pool.admit(body, NOW_S), 10)
    finally:
        await pool.close()


def _fake_worker(tmp_path, name: str, reply: str) -> list[str]:
    """An admission process that decodes the keys, says it is ready, then for each
    request frame runs `reply` (with `frame`, `authorities`, `out` in scope) and
    finally waits for its stdin to close."""
    script = tmp_path / f"{name}.py"
    script.write_text(
        "import sys\n"
        "from logserver.write.admission_wire import READY, decode_answer, decode_keys, encode_answer\n"
        "from logserver.write.admission_child import answers\n"
        "inp, out = sys.stdin.buffer, sys.stdout.buffer\n"
        "authorities = decode_keys(inp.read)\n"
        "out.write(READY); out.flush()\n"
        "while head := inp.read(4):\n"
        "    frame = inp.read(int.from_bytes(head, 'big'))\n"
        f"    {reply}\n"
        "    out.flush()\n"
    )
    return [sys.executable, str(script)]


async def test_the_first_body_of_a_frame_is_answered_before_the_rest_are_checked(tmp_path):
    # This process answers only the first body of each frame and then nothing more:
    # the first request still gets its answer, the second keeps waiting.
    command = _fake_worker(tmp_path, "first_only",
                           "out.write(next(answers(frame, authorities))); out.flush(); inp.read()")
    pool = AdmissionPool(default_authorities().authority_set, processes=1, command=command)
    await pool.start()
    try:
        factory = BundleFactory(fleet_id="admission-streamed")
        first = asyncio.ensure_future(pool.admit(factory.envelope_json(), NOW_S))
        second = asyncio.ensure_future(pool.admit(factory.envelope_json(), NOW_S))  # same turn: same frame
        admitted = await asyncio.wait_for(first, 10)
        assert isinstance(admitted, Admitted) and admitted.fleet_id == "admission-streamed"
        assert not second.done() and pool.pending == 1
    finally:
        await pool.close()
    with pytest.raises(AdmissionUnavailableError):
        await second


async def test_an_answer_with_more_items_than_asked_fails_its_requests(tmp_path):
    # One body asked, its answer sent twice in one answer frame.
    command = _fake_worker(tmp_path, "too_many", "(got,) = decode_answer(next(answers(frame, authorities))[4:]); "
                                                 "out.write(encode_answer([got, got]))")
    pool = AdmissionPool(default_authorities().authority_set, processes=1, command=command)
    await pool.start()
    try:
        body = BundleFactory(fleet_id="admission-too-many").envelope_json()
        with pytest.raises(AdmissionUnavailableError, match="stopped"):
            await asyncio.wait_for(pool.admit(body, NOW_S), 10)
    finally:
        await pool.close()


async def test_a_process_that_cannot_get_ready_fails_start_up(tmp_path):
    authorities = default_authorities().authority_set
    cases = [
        ([sys.executable, "-c", "import sys; sys.exit(3)"], "exited with status 3 before it was ready"),
        ([sys.executable, "-c", "import time; time.sleep(60)"], "not ready within 1s"),
        ([str(tmp_path / "no-such-program")], "cannot start an admission process"),
    ]
    for command, message in cases:
        pool = AdmissionPool(authorities, processes=1, command=command, start_timeout_s=1.0)
        with pytest.raises(AdmissionStartError, match=message):
            await pool.start()
        assert all(c.proc.returncode is not None for c in pool._children)
    assert issubclass(AdmissionStartError, StartupError)  # `serve` exits 1 with the message, no traceback


async def test_failed_restarts_are_retried_and_readyz_says_so_meanwhile(database_url, tmp_path):
    s = await start_server(write_config(tmp_path, database_url))
    try:
        pool = s.app[ADMISSION]
        assert (await s.session.get("/readyz")).status == 200
        good = pool.command
        pool.command = [sys.executable, "-c", "import sys; sys.exit(3)"]  # every restart fails for now
        (child,) = pool._children
        os.kill(child.proc.pid, signal.SIGKILL)
        await asyncio.wait_for(child.proc.wait(), 10)
        r = await s.session.get("/readyz")
        assert r.status == 503 and r.headers["Retry-After"]
        body = await r.json()
        assert body["status"] == "admission_unavailable" and "no admission process is running" in body["reason"]
        await asyncio.sleep(RESPAWN_INTERVAL_S * 1.5)  # a restart was tried and failed
        assert not pool.ready
        pool.command = good  # the cause is fixed: the next retry succeeds, without a restart of the server
        await _admitted_eventually(pool, BundleFactory(fleet_id="admission-retry").envelope_json(), 60)
        assert (await s.session.get("/readyz")).status == 200
    finally:
        await s.close()
