"""Time gates: a pause (Retry-After) and a rate ceiling (GCRA), one object that owns its wake-ups.

The concurrency gate asks `TimeGates.admit` only on its slow path, and only
while `TimeGates.engaged` says a gate may close: a pause is pending or a
rate ceiling is set. When a gate is closed, `admit` arranges one wake-up at
the time it opens again and calls the ``on_wake`` callback then (the
governor hands out permits from there). The shape is aiometer's
``RateLimitMeter``: the meter knows when the next start is allowed; the
gate decides who starts.

Times here are readings of the governor's clock, and a wake-up timer belongs
to the event loop (or trio run) that made it. When the governor starts
reading another clock (a new loop, a new ``trio.run``) it calls
`forget_times`; a timer made on another loop is never waited for.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Protocol

from ._validate import check_float, check_int

__all__ = ["TimeGates"]


class _Cancellable(Protocol):
    def cancel(self) -> None: ...


# The longest interval between two calls a rate ceiling may ask for (a year): a
# smaller max_per_second is a mistake, not a ceiling.
_MAX_INTERVAL_S = 365 * 86400.0


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
        "_wake_owner",
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
        if max_per_second is None and type(burst) is int and burst == 1:
            # The common case (no rate ceiling, the default burst): nothing to check.
            self._interval = self._tolerance = 0.0
        else:
            self._check_rate(max_per_second, burst)
        self._max_pause_s = max_pause_s
        self._on_wake = on_wake
        self._tat = -math.inf  # GCRA's theoretical arrival time
        self._paused_until = -math.inf
        self._wake_at = math.inf
        self._wake_handle: _Cancellable | None = None
        self._wake_owner: object = None  # the asyncio loop or trio run the timer belongs to
        self.engaged = bool(self._interval)
        """Whether `admit` must be asked at all: a rate ceiling is set or a pause is pending."""

    def _check_rate(self, max_per_second: float | None, burst: int) -> None:
        """Validate the rate ceiling and its burst; set the interval and the tolerance they give."""
        if max_per_second is None:
            self._interval = 0.0
        else:
            rate = check_float("max_per_second", max_per_second, low=0.0, low_open=True)
            self._interval = 1.0 / rate
            if not self._interval <= _MAX_INTERVAL_S:
                # 1 / 1e-320 overflows to inf, which no clock reading ever reaches.
                raise ValueError(
                    f"max_per_second must be at least {1 / _MAX_INTERVAL_S:g} (one call per "
                    f"{_MAX_INTERVAL_S:g} s), got {max_per_second!r}"
                )
        burst = check_int("burst", burst, low=1)
        try:
            self._tolerance = (burst - 1) * self._interval
        except OverflowError:  # an int too large for a float
            self._tolerance = math.inf
        if not math.isfinite(self._tolerance):
            raise ValueError(f"burst is too large for max_per_second={max_per_second!r}, got {burst!r}")

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
            if self._paused_until - now > self._max_pause_s:
                # Set on a clock that ran ahead of this one (an injected clock moved back):
                # max_pause_s bounds the wait in the clock of the wait.
                self._paused_until = now + self._max_pause_s
            self._wake_later(self._paused_until, now)
            return False
        self._paused_until = -math.inf
        if not self._interval:
            self.engaged = False
            return True
        allowed_at = self._tat - self._tolerance
        if now < allowed_at:
            if self._tat - now > 2 * (self._interval + self._tolerance):
                # A clock that moved back: no admission made in this clock sets the
                # theoretical arrival time more than one interval plus the burst ahead.
                self._tat = now
                allowed_at = now - self._tolerance
            else:
                self._wake_later(allowed_at, now)
                return False
        self._tat = max(self._tat, now) + self._interval
        return True

    def refund(self) -> None:
        """Give back the rate token of an admission that was not used (the waiter had gone)."""
        if self._interval:
            self._tat -= self._interval

    def forget_times(self) -> None:
        """Drop every time and timer kept so far: they belong to a clock no longer read.

        A new clock starts with no pause and a full rate bucket (the rate ceiling
        may admit ``burst`` calls at once across the change of clock).
        """
        self._paused_until = -math.inf
        self._tat = -math.inf
        self._drop_timer()
        self.engaged = bool(self._interval)

    def _drop_timer(self) -> None:
        if self._wake_handle is not None:
            self._wake_handle.cancel()  # harmless on a loop that has closed
            self._wake_handle = None
        self._wake_at = math.inf
        self._wake_owner = None

    def _timer_owner(self) -> object:
        """What a wake-up timer belongs to: the running asyncio loop, or the trio run."""
        try:
            return asyncio.get_running_loop()
        except RuntimeError:
            import trio  # the only other loop anyio runs on; imported only there

            return trio.lowlevel.current_trio_token()

    def _call_later(self, owner: object, delay: float) -> _Cancellable | None:
        """Call `_fire` after ``delay`` seconds on ``owner``: the one timer here (a thread gate
        overrides this and `_timer_owner`, and keeps the arithmetic)."""
        if isinstance(owner, asyncio.AbstractEventLoop):
            return owner.call_later(delay, self._fire)
        import trio

        trio.lowlevel.spawn_system_task(self._trio_wake, delay)
        return None

    def _wake_later(self, at: float, now: float) -> None:
        owner = self._timer_owner()
        if owner is not self._wake_owner:
            self._drop_timer()  # made on another loop or run: it will never fire here
        elif self._wake_at <= at:
            return  # an earlier wake-up will look again
        if self._wake_handle is not None:
            self._wake_handle.cancel()
            self._wake_handle = None
        self._wake_at = at
        self._wake_owner = owner
        self._wake_handle = self._call_later(owner, at - now)

    async def _trio_wake(self, delay: float) -> None:
        import trio

        await trio.sleep(delay)
        self._fire()

    def _fire(self) -> None:
        self._wake_handle = None
        self._wake_at = math.inf
        self._wake_owner = None
        self._on_wake()
