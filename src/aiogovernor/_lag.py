"""`LoopLagProbe`: how late the client's own event loop runs its timers.

A latency rise that the client causes itself (its CPU busy parsing responses, a
garbage-collector pause, CPU stolen from its process) is not queueing at the
upstream. The probe measures it cheaply: a timer that re-arms itself every
``period_s`` while work is in flight and reports how late it ran. The readings
go into the open window (`WindowAggregator.record_lag`), so a policy sees them
as figures of the window and never touches the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ._validate import check_float

__all__ = ["LoopLagProbe"]


class LoopLagProbe:
    """A self-re-arming timer on one asyncio loop that reports its own lateness.

    Args:
        loop: The loop to watch.
        record: Called with ``(lag_s, period_s)`` at each tick.
        busy: Whether to keep ticking; checked at each tick (the probe stops when
            nothing is in flight and is restarted with `ensure_running`).
        period_s: Time between ticks. At 10 ms the cost is about a hundred timer
            callbacks per second while work runs; any pause longer than the period
            is caught.
    """

    __slots__ = ("_busy", "_due", "_handle", "_loop", "_period", "_record")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        record: Callable[[float, float], None],
        busy: Callable[[], bool],
        *,
        period_s: float = 0.01,
    ) -> None:
        self._loop = loop
        self._record = record
        self._busy = busy
        self._period = check_float("period_s", period_s, low=0.0, low_open=True)
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop it watches."""
        return self._loop

    @property
    def running(self) -> bool:
        """Whether a tick is armed."""
        return self._handle is not None

    def ensure_running(self) -> None:
        """Arm the next tick unless one is armed (or the loop is closed)."""
        if self._handle is None and not self._loop.is_closed():
            self._arm(self._loop.time())

    def _arm(self, now: float) -> None:
        self._due = now + self._period
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        self._record(max(0.0, now - self._due), self._period)
        if self._busy():
            self._arm(now)
        else:
            self._handle = None

    def stop(self) -> None:
        """Cancel the armed tick, if any."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
