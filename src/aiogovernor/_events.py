"""Decision records and the listener protocol."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ._samples import Window

__all__ = ["Decision", "DecisionListener", "WindowListener"]


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
            made outside a window (a reset, a restored state).
        confidence: How much the window could be trusted, in [0, 1].
    """

    governor: str
    environment: str
    at: float
    old_limit: int
    new_limit: int
    policy_limit: float
    reason: str
    window: Window | None
    confidence: float

    @property
    def changed(self) -> bool:
        """Whether the gate's limit moved."""
        return self.new_limit != self.old_limit

    def describe(self) -> str:
        """A one-line account of the decision, for logs."""
        head = f"{self.governor}[{self.environment}] limit {self.old_limit} -> {self.new_limit}"
        w = self.window
        if w is None:
            return f"{head}: {self.reason}"
        sized = f", size={w.size_mean:.4g}" if w.bands else ""
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
    latencies in seconds, sorted ascending; it is only valid during the call
    (copy what you keep). Listeners must be quick: a metrics exporter folds
    the latencies into histogram buckets in bulk here, once per window rather
    than once per unit of work. An exception raised by a listener is logged
    and otherwise ignored.
    """

    def __call__(self, window: Window, ok_latencies_s: Sequence[float], /) -> None: ...
