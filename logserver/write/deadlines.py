"""Deadlines for many futures that share one timeout, on one timer.

`asyncio.timeout` arms and cancels a timer for every request, and with
`asyncio.shield` around the awaited future that costs more than the rest of a
submission's own event-loop work. Every submission waits with the same timeout,
so deadlines arrive in the order the futures were added: a FIFO and a single
timer set to the oldest deadline are enough.
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable


class Deadlines:
    """Fail each added future that is still pending `timeout_s` after it was added.

    The error is `make_error()`, set with `set_exception` (the awaiting request then
    answers it); a future already done is left alone. Futures done before their
    deadline are dropped from the front of the FIFO as new ones are added, so it
    holds about the futures still pending, not everything of the last `timeout_s`.
    The timer fires at most once per `granularity_s`: deadlines are met late by at
    most that much.
    """

    def __init__(self, timeout_s: float, make_error: Callable[[], BaseException], granularity_s: float = 0.05):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s: got {timeout_s}, want > 0")
        self.timeout_s = timeout_s
        self._make_error = make_error
        self._granularity = granularity_s
        self._fifo: deque[tuple[float, asyncio.Future]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        return len(self._fifo)

    def add(self, future: asyncio.Future) -> None:
        loop = future.get_loop()
        if loop is not self._loop:  # a new event loop: what the old one held is gone with it
            self.close()
            self._loop = loop
        fifo = self._fifo
        while fifo and fifo[0][1].done():
            fifo.popleft()
        fifo.append((loop.time() + self.timeout_s, future))
        if self._timer is None:
            self._arm()

    def _arm(self) -> None:
        assert self._loop is not None
        when = self._fifo[0][0]
        self._timer = self._loop.call_at(max(when, self._loop.time() + self._granularity), self._expire)

    def _expire(self) -> None:
        assert self._loop is not None
        self._timer = None
        now = self._loop.time()
        fifo = self._fifo
        while fifo and (fifo[0][0] <= now or fifo[0][1].done()):
            _, future = fifo.popleft()
            if not future.done():
                future.set_exception(self._make_error())
        if fifo:
            self._arm()

    def close(self) -> None:
        """Stop the timer (pending futures are left as they are)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._fifo.clear()
