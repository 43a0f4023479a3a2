"""Decision records and the listener protocol."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ._samples import Window

__all__ = ["Decision", "DecisionListener", "WindowListener", "WindowSummary"]


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowSummary:
    """The headline figures of the window a kept decision was made on.

    `Governor.decisions` keeps many decisions per governor, so all but the
    latest keep these figures instead of the whole `Window` (whose fields
    they share, under the same names); the latest decision, the one given to
    listeners and ``stats().last_window`` hold the whole window.
    """

    start: float
    """Clock time of the window's opening."""
    end: float
    """Clock time of the window's closing."""
    ok: int
    overload: int
    """Overloads from work that started after the latest decrease."""
    error: int
    ignored: int
    stale_overload: int
    """Overloads from work that started before the latest decrease."""
    latency_p50_s: float
    peak_inflight: int
    """The most permits held at once during the window."""
    limit: int
    """The gate's limit when the window closed."""
    limit_bound: bool
    """Whether the limit was the bottleneck."""
    size_mean: float = 1.0
    """Mean size of the successful calls (1 when unsized)."""
    sized: bool = False
    """Whether any call said its size (the whole window's ``bands`` were not empty)."""
    loop_lag_s: float = 0.0
    """How late the client's own event loop ran (see `Window.loop_lag_s`)."""
    loop_pause_s: float = 0.0
    """The delay the client's whole-loop pauses caused (see `Window.loop_pause_s`)."""

    @property
    def count(self) -> int:
        """Samples counted (ignored ones excluded)."""
        return self.ok + self.overload + self.error + self.stale_overload

    @property
    def duration_s(self) -> float:
        """How long the window lasted."""
        return self.end - self.start

    @property
    def throughput(self) -> float:
        """Successful samples per second."""
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def overload_rate(self) -> float:
        """Fresh and stale overloads as a fraction of counted samples."""
        return (self.overload + self.stale_overload) / self.count if self.count else 0.0

    @property
    def error_rate(self) -> float:
        """Plain errors as a fraction of counted samples."""
        count = self.count
        return self.error / count if count else 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """One change (or hold) of a governor's limit, and why.

    Attributes:
        governor: The governor's name.
        environment: The environment the governor learns for.
        at: Clock time of the decision.
        old_limit: The gate's limit before.
        new_limit: The gate's limit after.
        policy_limit: The policy's own (float) limit after.
        reason: What drove the decision, in words.
        window: The figures the decision was made on; None for decisions
            made outside a window (a reset, a restored state). The whole
            `Window` for a decision given to listeners and for the latest
            one kept; a `WindowSummary` (its headline figures, same names)
            for older decisions in `Governor.decisions`.
        confidence: How much the window could be trusted, in [0, 1].

    Older decisions in `Governor.decisions` are rebuilt from compact rows:
    their ``policy_limit`` past ``new_limit`` is kept in single precision,
    and their ``confidence`` to 1/65 535; every other figure is exact.
    """

    governor: str
    environment: str
    at: float
    old_limit: int
    new_limit: int
    policy_limit: float
    reason: str
    window: Window | WindowSummary | None
    confidence: float

    @property
    def changed(self) -> bool:
        """Whether the gate's limit moved."""
        return self.new_limit != self.old_limit

    def describe(self) -> str:
        """A one-line account of the decision, for logs (formatted on each call, never kept)."""
        head = f"{self.governor}[{self.environment}] limit {self.old_limit} -> {self.new_limit}"
        w = self.window
        if w is None:
            return f"{head}: {self.reason}"
        has_sizes = w.sized if isinstance(w, WindowSummary) else bool(w.bands)
        sized = f", size={w.size_mean:.4g}" if has_sizes else ""
        lagged = w.loop_lag_s + w.loop_pause_s
        lag = f", loop lag={lagged * 1000:.1f}ms" if lagged >= 0.0005 else ""
        return (
            f"{head}: {self.reason} (n={w.count}, ok={w.ok}, overload={w.overload}, "
            f"error={w.error}, p50={w.latency_p50_s * 1000:.1f}ms{sized}{lag}, "
            f"peak inflight={w.peak_inflight}, confidence={self.confidence:.2f})"
        )


class DecisionListener(Protocol):
    """Receives every decision a governor makes.

    Listeners are called synchronously on the event loop right after the
    decision; they must be quick and must not block. An exception raised by
    a listener is logged and otherwise ignored.
    """

    def __call__(self, decision: Decision, /) -> None: ...


class WindowListener(Protocol):
    """Receives every window a governor closes, with the latencies it was made of.

    Called synchronously on the event loop as the window closes, before the
    decision taken on it. ``ok_latencies_s`` holds the window's successful
    latencies in seconds, sorted ascending (when the window held more than
    `WindowConfig.max_samples` of them, a uniform subsample: ``window.ok``
    counts them all); it is only valid during the call (copy what you keep).
    Listeners must be quick: a metrics exporter folds the latencies into
    histogram buckets in bulk here, once per window rather than once per unit
    of work. An exception raised by a listener is logged and otherwise ignored.
    """

    def __call__(self, window: Window, ok_latencies_s: Sequence[float], /) -> None: ...
