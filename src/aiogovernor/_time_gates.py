"""Time gates: a pause (Retry-After) and a rate ceiling (GCRA), one object that owns its wake-ups.

The concurrency gate asks `TimeGates.admit` only on its slow path, and only
while `TimeGates.engaged` says a gate may close: a pause is pending or a
rate ceiling is set. When a gate is closed, `admit` arranges one wake-up at
the time it opens again and calls the ``on_wake`` callback then (the
governor hands out permits from there). The shape is aiometer's
``RateLimitMeter``: the meter knows when the next start is allowed; the
gate decides who starts.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from ._validate import check_float, check_int

__all__ = ["TimeGates"]


class TimeGates:
    """A pause and an optional rate ceiling, composed: a permit passes when both are open.

    Not thread-safe: the governor calls it from its event loop.

    Args:
        max_per_second: The rate ceiling (GCRA); None for none.
        burst: How many calls the rate ceiling lets through at once.
        max_pause_s: The longest a pause may last.
        on_wake: Called (on the event loop) when a closed gate may have opened.
    """

    __slots__ = (
        "_interval",
        "_max_pause_s",
        "_on_wake",
        "_paused_until",
        "_tat",
        "_tolerance",
        "_wake_at",
        "_wake_handle",
        "engaged",
    )

    def __init__(
        self,
        *,
        max_per_second: float | None,
        burst: int,
        max_pause_s: float,
        on_wake: Callable[[], None],
    ) -> None:
        if max_per_second is None:
            self._interval = 0.0
        else:
            self._interval = 1.0 / check_float("max_per_second", max_per_second, low=0.0, low_open=True)
        self._tolerance = (check_int("burst", burst, low=1) - 1) * self._interval
        self._max_pause_s = max_pause_s
        self._on_wake = on_wake
        self._tat = -math.inf  # GCRA's theoretical arrival time
        self._paused_until = -math.inf
        self._wake_at = math.inf
        self._wake_handle: asyncio.TimerHandle | None = None
        self.engaged = bool(self._interval)
        """Whether `admit` must be asked at all: a rate ceiling is set or a pause is pending."""

    @property
    def max_per_second(self) -> float | None:
        """The rate ceiling, if any."""
        return 1.0 / self._interval if self._interval else None

    @property
    def max_pause_s(self) -> float:
        """The longest a pause may last."""
        return self._max_pause_s

    @property
    def paused(self) -> bool:
        """Whether a pause was set and not yet seen to end."""
        return self._paused_until > -math.inf

    def paused_for_s(self, now: float) -> float:
        """How much longer new permits are paused at ``now``; 0 when not paused."""
        return max(0.0, self._paused_until - now) if self._paused_until > -math.inf else 0.0

    def pause_until(self, t: float, now: float) -> float:
        """Admit nothing until ``t`` (capped at ``max_pause_s`` from ``now``).

        Returns:
            How long the new pause lasts from ``now``; 0 when it changed nothing
            (a pause never shortens an existing one).
        """
        t = min(t, now + self._max_pause_s)
        if t <= now or t <= self._paused_until:
            return 0.0
        self._paused_until = t
        self.engaged = True
        return t - now

    def admit(self, now: float) -> bool:
        """Whether a permit may be granted at ``now`` (taking a rate token); if not, arrange a wake-up."""
        if now < self._paused_until:
            self._wake_later(self._paused_until, now)
            return False
        self._paused_until = -math.inf
        if not self._interval:
            self.engaged = False
            return True
        allowed_at = self._tat - self._tolerance
        if now < allowed_at:
            self._wake_later(allowed_at, now)
            return False
        self._tat = max(self._tat, now) + self._interval
        return True

    def refund(self) -> None:
        """Give back the rate token of an admission that was not used (the waiter had gone)."""
        if self._interval:
            self._tat -= self._interval

    def _wake_later(self, at: float, now: float) -> None:
        if self._wake_at <= at:
            return  # an earlier wake-up will look again
        if self._wake_handle is not None:
            self._wake_handle.cancel()
            self._wake_handle = None
        self._wake_at = at
        delay = at - now
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            import trio  # the only other loop anyio runs on; imported only there

            trio.lowlevel.spawn_system_task(self._trio_wake, delay)
        else:
            self._wake_handle = loop.call_later(delay, self._fire)

    async def _trio_wake(self, delay: float) -> None:
        import trio

        await trio.sleep(delay)
        self._fire()

    def _fire(self) -> None:
        self._wake_handle = None
        self._wake_at = math.inf
        self._on_wake()
