"""logserver.write.deadlines: one timer for many futures with the same timeout."""
from __future__ import annotations

import asyncio

import pytest

from logserver.write.deadlines import Deadlines


class Late(Exception):
    pass


async def test_pending_futures_fail_after_the_timeout_and_done_ones_are_left_alone():
    loop = asyncio.get_running_loop()
    d = Deadlines(0.05, Late, granularity_s=0.01)
    answered, slow = loop.create_future(), loop.create_future()
    d.add(answered)
    d.add(slow)
    answered.set_result("ok")
    with pytest.raises(Late):
        await slow
    assert answered.result() == "ok"
    assert len(d) == 0


async def test_deadlines_follow_the_order_of_adding():
    loop = asyncio.get_running_loop()
    d = Deadlines(0.2, Late, granularity_s=0.01)
    first = loop.create_future()
    d.add(first)
    await asyncio.sleep(0.1)
    second = loop.create_future()
    d.add(second)
    with pytest.raises(Late):
        await first
    assert not second.done()  # its own deadline is about 0.1 s later
    with pytest.raises(Late):
        await second


async def test_done_futures_are_dropped_as_new_ones_arrive():
    loop = asyncio.get_running_loop()
    d = Deadlines(30, Late)
    for _ in range(1000):
        f = loop.create_future()
        d.add(f)
        f.set_result(None)
    assert len(d) == 1  # only the last one, answered after it was added
    d.close()
    assert len(d) == 0


def test_the_timeout_must_be_positive():
    with pytest.raises(ValueError, match="timeout_s"):
        Deadlines(0, Late)


def test_a_new_event_loop_gets_its_own_timer():
    d = Deadlines(0.05, Late, granularity_s=0.01)

    async def on_a_loop():
        fut = asyncio.get_running_loop().create_future()
        d.add(fut)
        with pytest.raises(Late):
            await fut

    async def leave_one_pending():
        d.add(asyncio.get_running_loop().create_future())  # its loop ends with the timer armed

    asyncio.run(leave_one_pending())
    asyncio.run(on_a_loop())  # would wait forever if the timer stayed on the closed loop
    asyncio.run(on_a_loop())
