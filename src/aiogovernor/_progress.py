"""One progress contract for every run that works through items (the maps, the uploader).

A run takes ``progress=``: a callback receiving a frozen `Progress` (at most
every 0.1 s of clock time, and once at the end), True for a rich progress bar
(when rich is installed; nothing when it is not), or None/False for nothing.
`Reporter` is the one object that counts and reports, so every run reports
the same figures the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

__all__ = ["Gauged", "Progress", "ProgressCallback", "Reporter", "RichBar", "check_progress", "rich_bar"]

_EVERY_S = 0.1  # report at most this often (clock time), plus once at the end


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """How far a run has got: passed to the ``progress=`` callback of the maps and the uploader.

    Attributes:
        done: Items finished with a result (uploaded, for the uploader;
            skipped ones included).
        failed: Items that ended in a failure (raised, or collected with
            ``return_exceptions=True``; failed uploads).
        total: How many items there are, when the input has a length; else None.
        limit: The governor's limit now: how many calls may run at once.
        inflight: The governor's permits held now.
        elapsed_s: Clock time since the run started.
        throughput_per_s: Items finished (``done + failed``) per second so far.
        bytes_sent: Body bytes sent so far, for runs that send bodies (the
            uploader); None for the others.
    """

    done: int
    failed: int
    total: int | None
    limit: int
    inflight: int
    elapsed_s: float
    throughput_per_s: float
    bytes_sent: int | None = None


ProgressCallback: TypeAlias = Callable[[Progress], object]
"""A callable receiving a `Progress`; its return value is ignored."""


def check_progress(progress: object) -> None:
    """Refuse a ``progress=`` value that is not a callback, a bool or None."""
    if progress is not None and not isinstance(progress, bool) and not callable(progress):
        raise TypeError(f"progress must be a callable, True, False or None, got {progress!r}")


class RichBar:
    """A rich progress bar showing items, the live limit, throughput, and bytes when there are any.

    Made only by `rich_bar`, which returns None when rich is not installed.
    """

    def __init__(self, progress: Any, description: str) -> None:
        self._progress = progress
        self._task = progress.add_task(description, total=None, limit=0, rate=0.0, sent="")

    def start(self) -> None:
        """Show the bar."""
        self._progress.start()

    def stop(self) -> None:
        """Draw the last state and stop refreshing."""
        self._progress.stop()

    def __call__(self, p: Progress) -> None:
        self._progress.update(
            self._task,
            completed=p.done + p.failed,
            total=p.total,
            limit=p.limit,
            rate=p.throughput_per_s,
            sent="" if p.bytes_sent is None else f"{p.bytes_sent / 1e6:.1f} MB",
        )


def rich_bar(description: str) -> RichBar | None:
    """A `RichBar`, or None when rich (the ``rich`` extra) is not installed."""
    try:  # the rich extra, optional: no bar without it
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:
        return None
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("limit {task.fields[limit]}"),
        TextColumn("{task.fields[rate]:.1f}/s"),
        TextColumn("{task.fields[sent]}"),
        TimeElapsedColumn(),
    )
    return RichBar(progress, description)


class Gauged(Protocol):
    """What a `Reporter` reads of a gate (the async `Governor` or the thread gate)."""

    @property
    def limit(self) -> int: ...

    @property
    def inflight(self) -> int: ...

    def _now(self) -> float: ...


class Reporter:
    """Counts a run's items and reports a `Progress` to one callback (or a rich bar).

    Use as a context manager around the run (it shows and hides the bar);
    call `tick` after each item (it reports when due) and `finish` at the end.

    Args:
        progress: The run's ``progress=`` argument (a callback, True, False or None).
        governor: Whose limit and inflight to report; its clock is the run's.
        description: The rich bar's label.
        total: Items in the run, when known.
        bytes_sent: Start counting bytes (0) for runs that send bodies; None for the others.
    """

    __slots__ = (
        "_bar",
        "_callback",
        "_governor",
        "_next",
        "_started",
        "bytes_sent",
        "done",
        "failed",
        "total",
    )

    def __init__(
        self,
        progress: ProgressCallback | bool | None,
        *,
        governor: Gauged,
        description: str,
        total: int | None = None,
        bytes_sent: int | None = None,
    ) -> None:
        self._bar: RichBar | None = None
        self._callback: ProgressCallback | None = None
        if progress is True:
            self._bar = self._callback = rich_bar(description)
        elif progress is not None and progress is not False:
            self._callback = progress
        self._governor = governor
        self.total = total
        self.done = 0
        self.failed = 0
        self.bytes_sent = bytes_sent
        self._started = 0.0
        self._next = float("inf")

    @property
    def active(self) -> bool:
        """Whether anything is reported at all (callers skip the clock reads when not)."""
        return self._callback is not None

    def __enter__(self) -> Reporter:
        if self._callback is not None:
            # The governor's clock (a named seam of the gate): a run in virtual time reports virtual time.
            self._started = self._governor._now()
            self._next = self._started + _EVERY_S
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def tick(self) -> None:
        """Report if the last report is at least 0.1 s of clock time old."""
        if self._callback is not None:
            now = self._governor._now()
            if now >= self._next:
                self._report(now)

    def finish(self) -> None:
        """Report the final figures."""
        if self._callback is not None:
            self._report(self._governor._now())

    def _report(self, now: float) -> None:
        assert self._callback is not None
        self._next = now + _EVERY_S
        elapsed = max(0.0, now - self._started)
        finished = self.done + self.failed
        self._callback(
            Progress(
                done=self.done,
                failed=self.failed,
                total=self.total,
                limit=self._governor.limit,
                inflight=self._governor.inflight,
                elapsed_s=elapsed,
                throughput_per_s=finished / elapsed if elapsed > 0 else 0.0,
                bytes_sent=self.bytes_sent,
            )
        )
