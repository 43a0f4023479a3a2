"""The picture of a governor over time: limit, in-flight work, p50 latency and overloads.

One drawing for every caller (the demo, `Governor.plot`, ``aiogovernor plot``
from a saved history): what differs is only which series are known. matplotlib
(the ``plot`` extra) is imported when a picture is drawn, never by importing this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ._events import Decision
from ._record import KeptDecision

__all__ = ["PlotError", "Trace", "draw"]


class PlotError(OSError):
    """The plot file could not be written."""


@dataclass
class Trace:
    """What a plot shows, as (time, value) pairs; a series left empty is not drawn."""

    limit: list[tuple[float, int]] = field(default_factory=list)
    """The limit after each decision (drawn as steps)."""
    inflight: list[tuple[float, int]] = field(default_factory=list)
    """The most permits held at once in each window, at the window's end."""
    p50_s: list[tuple[float, float]] = field(default_factory=list)
    """Each window's median latency."""
    overloads: list[tuple[float, int]] = field(default_factory=list)
    """Each window's overloads (fresh and stale)."""
    capacity: list[tuple[float, int]] = field(default_factory=list)
    """The upstream's real capacity, when known (a simulation)."""
    goodput: list[tuple[float, float]] = field(default_factory=list)
    """Goodput as a fraction of the best possible, when known (a simulation)."""

    def add_decisions(self, decisions: Iterable[Decision]) -> None:
        """Add the limit after each decision, and its window's figures."""
        for d in decisions:
            self.limit.append((d.at, d.new_limit))
            w = d.window
            if w is not None:
                self.inflight.append((w.end, w.peak_inflight))
                self.p50_s.append((w.end, w.latency_p50_s))
                self.overloads.append((w.end, w.overload + w.stale_overload))

    def add_kept(self, decisions: Sequence[KeptDecision]) -> None:
        """Add decisions read back from a store, timed in seconds since the first one.

        A kept decision holds its window's figures at the moment it was taken:
        the limit after it, the window's peak in flight, p50 and overloads.
        """
        if not decisions:
            return
        start = decisions[0].at
        for d in decisions:
            t = d.at - start
            self.limit.append((t, d.new_limit))
            if d.reason == "reset":
                continue  # set by hand or restored: no window behind it
            self.inflight.append((t, d.peak_inflight))
            if d.latency_p50_s is not None:
                self.p50_s.append((t, d.latency_p50_s))
            self.overloads.append((t, d.overload))


def _xy(points: Sequence[tuple[float, float]]) -> tuple[list[float], list[float]]:
    return [t for t, _ in points], [v for _, v in points]


def draw(trace: Trace, path: str, *, title: str, xlabel: str = "seconds") -> None:
    """Draw ``trace`` to the PNG file ``path``.

    Raises:
        ImportError: When matplotlib is missing (the ``plot`` extra).
        PlotError: When the file cannot be written.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("drawing a plot needs matplotlib: pip install 'aiogovernor[plot]'") from exc
    lower = bool(trace.p50_s or trace.overloads)
    fig, axes = plt.subplots(2 if lower else 1, 1, figsize=(9, 6 if lower else 4), sharex=True, squeeze=False)
    ax = axes[0][0]
    if trace.capacity:
        ax.step(*_xy(trace.capacity), where="post", color="grey", ls="--", label="capacity (the knee)")
    ax.step(*_xy(trace.limit), where="post", color="tab:blue", label="limit (every decision)")
    if trace.inflight:
        ax.plot(*_xy(trace.inflight), ls="", marker=".", ms=3, color="tab:orange", label="peak in flight")
    ax.set_ylabel("concurrency")
    ax.set_ylim(bottom=0)
    handles, labels = ax.get_legend_handles_labels()
    if trace.goodput:
        share = ax.twinx()
        share.plot(
            *_xy(trace.goodput), color="tab:green", marker=".", label="goodput / best at that capacity"
        )
        share.set_ylabel("goodput, fraction of the best")
        share.set_ylim(0, 1.1)
        more = share.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.legend(handles, labels, loc="lower right")
    ax.set_title(title)
    if lower:
        low = axes[1][0]
        times, p50 = _xy(trace.p50_s)
        low.plot(times, [v * 1000 for v in p50], color="tab:purple", label="p50 latency (each window)")
        low.set_ylabel("p50 latency, ms")
        low.set_ylim(0, max(p50, default=0.0) * 1000 * 1.15 or 1.0)  # headroom: a flat line stays visible
        handles, labels = low.get_legend_handles_labels()
        if any(n for _, n in trace.overloads):
            bars = low.twinx()
            bars.plot(
                *_xy(trace.overloads), ls="", marker="x", color="tab:red", label="overloads (each window)"
            )
            bars.set_ylabel("overloads per window")
            bars.set_ylim(0, max(n for _, n in trace.overloads) * 1.15)
            more = bars.get_legend_handles_labels()
            handles, labels = handles + more[0], labels + more[1]
        low.legend(handles, labels, loc="upper right")
    axes[-1][0].set_xlabel(xlabel)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise PlotError(f"cannot write the plot to {path}: {exc.strerror or exc}") from exc
    finally:
        plt.close(fig)
