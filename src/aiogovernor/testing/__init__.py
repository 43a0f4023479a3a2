"""Helpers for testing code that uses aiogovernor, and for testing aiogovernor itself.

- `ManualClock`: a clock that moves only when told, for policies, windows
  and governors driven step by step.
- `wait_until`: yield to the event loop until a condition holds, without
  sleeping (a bounded number of scheduler passes).
- `window`: build a `Window` from a few figures, for scripted policy tests.
- `loop_time` and `Clock`: the default clock (the running event loop's
  time) and the type of every ``clock=`` argument.
- `aiogovernor.testing.servers`: a real local HTTP upstream (a capacity
  knee, a hard 429 bound, multipart uploads) for tests, examples and
  benchmarks; it needs the ``testing`` extra (starlette, uvicorn,
  python-multipart), and importing this package does not.

For closed loops in virtual time, see `aiogovernor.sim.run_virtual`.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from aiogovernor._clock import Clock as Clock
from aiogovernor._clock import loop_time as loop_time
from aiogovernor._samples import Window
from aiogovernor._validate import check_float, check_int

__all__ = ["Clock", "ManualClock", "loop_time", "wait_until", "window"]


class ManualClock:
    """A clock that moves only when `advance` or `set` is called.

    Pass it as ``Governor(clock=...)`` to control the time a governor reads.
    The governor's timers (pause and rate wake-ups) still run on the event
    loop, so a test of pauses wants `aiogovernor.sim.run_virtual` instead.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = check_float("start", start)

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (>= 0) and return the new time."""
        self._now += check_float("seconds", seconds, low=0.0)
        return self._now

    def set(self, now: float) -> None:
        """Move the clock to ``now``, which must not be in the past."""
        self._now = check_float("now", now, low=self._now)

    def __repr__(self) -> str:
        return f"ManualClock({self._now!r})"


async def wait_until(condition: Callable[[], bool], *, max_passes: int = 10_000) -> None:
    """Yield to the scheduler until ``condition()`` is true.

    Each pass is one checkpoint (``anyio.lowlevel.checkpoint``), not a sleep:
    the test advances exactly as fast as the tasks it waits for.

    Raises:
        AssertionError: If the condition is still false after ``max_passes`` passes.
    """
    check_int("max_passes", max_passes, low=1)
    for _ in range(max_passes):
        if condition():
            return
        await anyio.lowlevel.checkpoint()
    raise AssertionError(f"condition {condition!r} still false after {max_passes} scheduler passes")


def window(
    *,
    ok: int = 10,
    overload: int = 0,
    error: int = 0,
    ignored: int = 0,
    stale_overload: int = 0,
    latency_s: float = 0.05,
    min_latency_s: float | None = None,
    p99_s: float | None = None,
    duration_s: float = 1.0,
    start: float = 0.0,
    limit: int = 10,
    peak_inflight: int | None = None,
    limit_bound: bool | None = None,
) -> Window:
    """A window with the given figures, for feeding policies by hand.

    ``peak_inflight`` defaults to ``limit``; ``limit_bound`` defaults to
    whether ``peak_inflight`` reached ``limit``.
    """
    peak = limit if peak_inflight is None else peak_inflight
    return Window(
        start=start,
        end=start + duration_s,
        count=ok + overload + error + stale_overload,
        ok=ok,
        overload=overload,
        error=error,
        ignored=ignored,
        stale_overload=stale_overload,
        latency_min_s=latency_s if min_latency_s is None else min_latency_s,
        latency_mean_s=latency_s,
        latency_p50_s=latency_s,
        latency_p90_s=latency_s if p99_s is None else p99_s,
        latency_p99_s=latency_s if p99_s is None else p99_s,
        latency_cv=0.0,
        peak_inflight=peak,
        limit=limit,
        limit_bound=peak >= limit if limit_bound is None else limit_bound,
    )
