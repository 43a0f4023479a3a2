"""`LoopLagProbe`: how late the client's own event loop runs its timers.

A latency rise that the client causes itself (its CPU busy parsing responses, a
garbage-collector pause, CPU stolen from its process) is not queueing at the
upstream. The probe measures it cheaply: a timer that re-arms itself every
``period_s`` while work is in flight and reports how late it ran. The readings
go into the open window (`WindowAggregator.record_lag`), so a policy sees them
as figures of the window and never touches the loop.

How late a loop runs its timers is the same for every governor on it, so the
governors on one loop share one probe (`SharedLagProbe`, got from
`shared_lag_probe`): one timer per loop however many governors are busy on it,
each busy governor receiving every reading. A timer per governor cost a timer
callback per governor every 10 ms: with a thousand busy governors, a hundred
thousand a second, enough to make the loop lag by itself.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import Protocol

from ._validate import check_float

__all__ = ["LagWatcher", "LoopLagProbe", "SharedLagProbe", "shared_lag_probe"]


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


class LagWatcher(Protocol):
    """What watches a loop's lag through a `SharedLagProbe` (a governor)."""

    def _lag_reading(self, probe: SharedLagProbe, lag_s: float, period_s: float) -> bool:
        """Take one reading from ``probe``; return whether to go on receiving them (work in flight)."""
        ...


class SharedLagProbe:
    """One `LoopLagProbe` for every watcher on one loop: each reading goes to every watcher.

    A watcher is held weakly and stays until it says it wants no more readings
    (nothing in flight): it joins again with `watch`. The timer runs while any
    watcher remains and stops when none does. Used only from its loop's thread.

    Args:
        loop: The loop to watch.
        period_s: Time between readings.
    """

    __slots__ = ("__weakref__", "_probe", "_watchers")

    def __init__(self, loop: asyncio.AbstractEventLoop, period_s: float) -> None:
        self._watchers: dict[weakref.ref[LagWatcher], None] = {}
        self._probe = LoopLagProbe(loop, self._fan_out, self._busy, period_s=period_s)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop it watches."""
        return self._probe.loop

    @property
    def running(self) -> bool:
        """Whether a reading is due (the timer is armed)."""
        return self._probe.running

    @property
    def watchers(self) -> int:
        """How many watchers receive the next reading (some may be gone or done by then)."""
        return len(self._watchers)

    def watch(self, watcher: LagWatcher) -> None:
        """Send ``watcher`` every reading from now until it wants no more, and start the timer if idle."""
        self._watchers[weakref.ref(watcher)] = None
        self._probe.ensure_running()

    def _fan_out(self, lag_s: float, period_s: float) -> None:
        watchers = self._watchers
        kept: dict[weakref.ref[LagWatcher], None] = {}
        self._watchers = kept  # a watcher that joins during the fan-out joins this one
        for ref in watchers:
            watcher = ref()
            if watcher is not None and watcher._lag_reading(self, lag_s, period_s):
                kept[ref] = None

    def _busy(self) -> bool:
        return bool(self._watchers)


# One shared probe per (loop, period), held only by its armed timer and its
# watchers: a loop that is dropped takes its probe with it. A lock, since loops
# run in several threads, each finding or making its own.
_shared: weakref.WeakValueDictionary[tuple[int, float], SharedLagProbe] = weakref.WeakValueDictionary()
_shared_lock = threading.Lock()


def shared_lag_probe(loop: asyncio.AbstractEventLoop, period_s: float) -> SharedLagProbe:
    """The probe every governor on ``loop`` with this period shares (made if there is none)."""
    key = (id(loop), period_s)
    with _shared_lock:
        probe = _shared.get(key)
        # A probe holds its loop, so the id is not reused while the entry lives; checked anyway.
        if probe is None or probe.loop is not loop:
            probe = _shared[key] = SharedLagProbe(loop, period_s)
        return probe
