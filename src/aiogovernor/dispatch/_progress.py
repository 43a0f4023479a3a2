"""`StudyProgress` snapshots and the `ProgressTracker` that measures them: counts, best value, ETA.

A `StudyProgress` is an `aiogovernor.Progress` (the one progress contract of the
maps and the uploader) with the figures a study adds: so any
`aiogovernor.ProgressCallback` can watch a pool or a study.

Also the `PoolSnapshot` / `EndpointSnapshot` that `EndpointPool.snapshot` takes for a live view."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from aiogovernor._clock import Clock, loop_time
from aiogovernor._progress import Progress
from aiogovernor._validate import check_int

from ._breaker import BreakerState

__all__ = ["EndpointSnapshot", "PoolSnapshot", "ProgressTracker", "StudyProgress"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StudyProgress(Progress):
    """Where a run of trials stands: an `aiogovernor.Progress` with a study's own figures.

    The `aiogovernor.Progress` fields, for trials:

    - ``done``: trials that ended with a result (also `completed`);
    - ``failed``: trials that ended without one;
    - ``total``: trials planned, if known;
    - ``limit``: trials that may run at once now (an `EndpointPool`'s
      capacity; the trials running for a tracker that knows no pool);
    - ``inflight``: trials running now (also `running`);
    - ``elapsed_s``: time since the tracker started;
    - ``throughput_per_s``: trials finished per second so far;
    - ``bytes_sent``: None (trials send no bodies the tracker counts).

    Attributes:
        queued: Trials waiting for capacity (a permit or a local slot).
        best_value: The best objective value reported so far.
        mean_duration_s: Mean duration of the finished trials' runs.
        eta_s: Estimated time left, from observed durations and the current
            concurrency; None until a trial has finished or when ``total`` is unknown.
    """

    queued: int
    best_value: float | None
    mean_duration_s: float | None
    eta_s: float | None

    @property
    def completed(self) -> int:
        """Trials that ended with a result (``done``)."""
        return self.done

    @property
    def running(self) -> int:
        """Trials running, remote or local (``inflight``)."""
        return self.inflight

    @property
    def finished(self) -> int:
        """Completed plus failed."""
        return self.completed + self.failed

    def describe(self) -> str:
        """One line for a log or a terminal."""
        total = "?" if self.total is None else str(self.total)
        eta = "?" if self.eta_s is None else f"{self.eta_s:.1f}s"
        best = "-" if self.best_value is None else f"{self.best_value:.6g}"
        return (
            f"{self.finished}/{total} done ({self.completed} ok, {self.failed} failed), "
            f"{self.running} running, {self.queued} queued, best {best}, ETA {eta}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointSnapshot:
    """One endpoint of an `EndpointPool` at one moment (or its local fallback).

    Attributes:
        name: The endpoint id, or ``"local"`` for the local fallback.
        breaker: Its circuit breaker's state; None for the local fallback.
        limit: Its governor's limit now: jobs it may run at once.
        inflight: Jobs running on it now (permits held).
        waiting: Trials queued for one of its permits.
        completed: Jobs that ended with a result there.
        failed: Jobs that ended without one there.
        success_rate: Its recent infrastructure success rate (its share of new
            trials is its limit times this, squared); None for the local fallback.
        refused: Whether it refused the API key (it gets no more work).
    """

    name: str
    breaker: BreakerState | None
    limit: int
    inflight: int
    waiting: int
    completed: int
    failed: int
    success_rate: float | None = None
    refused: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolSnapshot:
    """An `EndpointPool` at one moment, from `EndpointPool.snapshot`: what `render_pool` draws.

    Attributes:
        progress: The trials' progress (counts, best value, ETA).
        endpoints: One entry per endpoint in the pool's order, then the local
            fallback's, if there is one.
    """

    progress: StudyProgress
    endpoints: tuple[EndpointSnapshot, ...]


class ProgressTracker:
    """Counts trials through their life and estimates the time left.

    The ETA is the work left divided by the concurrency now: each trial not
    yet started costs the mean observed duration, each running one what is
    left of it (at least nothing), and that sum is shared by the trials
    running now (at least one). It reads an injected clock, so it can be
    driven by hand.

    Args:
        total: Trials planned (None: unknown, no ETA).
        direction: ``"minimize"`` or ``"maximize"``: which value is best.
        clock: Seconds as a float; defaults to the running event loop's time.
        on_change: Called with a fresh `StudyProgress` after every change
            (any `aiogovernor.ProgressCallback` will do).
        capacity: How many trials may run at once now (reported as ``limit``);
            None reports the trials running. `EndpointPool` sets its own.
    """

    def __init__(
        self,
        *,
        total: int | None = None,
        direction: str = "minimize",
        clock: Clock | None = None,
        on_change: Callable[[StudyProgress], object] | None = None,
        capacity: Callable[[], int] | None = None,
    ) -> None:
        if total is not None:
            check_int("total", total, low=0)
        if direction not in ("minimize", "maximize"):
            raise ValueError(f"direction must be 'minimize' or 'maximize', got {direction!r}")
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a zero-argument callable returning seconds, got {clock!r}")
        if on_change is not None and not callable(on_change):
            raise TypeError(f"on_change must be callable, got {on_change!r}")
        if capacity is not None and not callable(capacity):
            raise TypeError(f"capacity must be a zero-argument callable returning an int, got {capacity!r}")
        self.capacity = capacity
        """How many trials may run at once now (reported as ``limit``); None: the trials running."""
        self._total = total
        self._sign = 1.0 if direction == "minimize" else -1.0
        self._clock: Clock = clock or loop_time
        self._on_change = on_change
        self._started: float | None = None
        self._queued = 0
        self._running: dict[int, float] = {}  # token -> start time
        self._next_token = 0
        self._completed = 0
        self._failed = 0
        self._best: float | None = None
        self._durations_sum = 0.0
        self._durations_n = 0

    @property
    def total(self) -> int | None:
        """Trials planned, if known."""
        return self._total

    @total.setter
    def total(self, value: int | None) -> None:
        if value is not None:
            check_int("total", value, low=0)
        self._total = value

    @property
    def direction(self) -> str:
        """``"minimize"`` or ``"maximize"``: which value is best."""
        return "minimize" if self._sign > 0 else "maximize"

    @direction.setter
    def direction(self, value: str) -> None:
        if value not in ("minimize", "maximize"):
            raise ValueError(f"direction must be 'minimize' or 'maximize', got {value!r}")
        self._sign = 1.0 if value == "minimize" else -1.0

    def _now(self) -> float:
        now = self._clock()
        if self._started is None:
            self._started = now
        return now

    def queued(self) -> None:
        """A trial waits for capacity."""
        self._now()
        self._queued += 1
        self._notify()

    def unqueued(self) -> None:
        """A waiting trial left without starting (cancelled)."""
        self._queued = max(0, self._queued - 1)
        self._notify()

    def started(self) -> int:
        """A queued trial starts running; returns a token for `finished`."""
        now = self._now()
        self._queued = max(0, self._queued - 1)
        token = self._next_token
        self._next_token += 1
        self._running[token] = now
        self._notify()
        return token

    def finished(self, token: int, *, ok: bool | None) -> None:
        """A run ended: ``ok`` True (a result), False (a failure), None (abandoned, counts nowhere).

        A failed or abandoned run may be retried: only its trial's last run
        should be counted, so callers pass ``ok=None`` for runs that will be retried.
        """
        start = self._running.pop(token)
        if ok is not None:
            self._durations_sum += self._now() - start
            self._durations_n += 1
            if ok:
                self._completed += 1
            else:
                self._failed += 1
        self._notify()

    def observe(self, value: float) -> None:
        """Report a trial's objective value; the best so far is kept."""
        value = float(value)
        if not math.isnan(value) and (self._best is None or self._sign * value < self._sign * self._best):
            self._best = value
            self._notify()

    def snapshot(self) -> StudyProgress:
        """The progress now."""
        now = self._now()
        assert self._started is not None
        mean = self._durations_sum / self._durations_n if self._durations_n else None
        eta: float | None = None
        if mean is not None and self._total is not None:
            finished = self._completed + self._failed
            not_started = max(0, self._total - finished - len(self._running))
            left_of_running = sum(max(0.0, mean - (now - t)) for t in self._running.values())
            eta = (not_started * mean + left_of_running) / max(1, len(self._running))
        running = len(self._running)
        elapsed = now - self._started
        finished = self._completed + self._failed
        return StudyProgress(
            done=self._completed,
            failed=self._failed,
            total=self._total,
            limit=running if self.capacity is None else self.capacity(),
            inflight=running,
            elapsed_s=elapsed,
            throughput_per_s=finished / elapsed if elapsed > 0 else 0.0,
            queued=self._queued,
            best_value=self._best,
            mean_duration_s=mean,
            eta_s=eta,
        )

    def _notify(self) -> None:
        if self._on_change is not None:
            self._on_change(self.snapshot())
