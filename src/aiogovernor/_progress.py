"""Progress reports for `governed_map` and friends, and the optional rich progress bar."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

__all__ = ["MapProgress", "ProgressCallback"]


@dataclass(frozen=True, slots=True, kw_only=True)
class MapProgress:
    """How far a map has got: passed to the ``progress=`` callback of `governed_map` and friends.

    Attributes:
        done: Items finished with a result.
        failed: Items that ended in a failure (raised, or collected with
            ``return_exceptions=True``).
        total: How many items there are, when the input has a length; else None.
        limit: The governor's limit now: how many calls may run at once.
        inflight: The governor's permits held now.
        elapsed_s: Clock time since the map started.
        throughput_per_s: Items finished (``done + failed``) per second so far.
    """

    done: int
    failed: int
    total: int | None
    limit: int
    inflight: int
    elapsed_s: float
    throughput_per_s: float


ProgressCallback: TypeAlias = Callable[[MapProgress], object]
"""A callable receiving a `MapProgress`; its return value is ignored."""


class RichBar:
    """A rich progress bar showing items, the live limit and throughput.

    Made only by `rich_bar`, which returns None when rich is not installed.
    """

    def __init__(self, progress: Any, description: str) -> None:
        self._progress = progress
        self._task = progress.add_task(description, total=None, limit=0, rate=0.0)

    def start(self) -> None:
        """Show the bar."""
        self._progress.start()

    def stop(self) -> None:
        """Draw the last state and stop refreshing."""
        self._progress.stop()

    def __call__(self, p: MapProgress) -> None:
        self._progress.update(
            self._task,
            completed=p.done + p.failed,
            total=p.total,
            limit=p.limit,
            rate=p.throughput_per_s,
        )


def rich_bar(description: str) -> RichBar | None:
    """A `RichBar`, or None when rich (the ``rich`` extra) is not installed."""
    try:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:
        return None
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("limit {task.fields[limit]}"),
        TextColumn("{task.fields[rate]:.1f}/s"),
        TimeElapsedColumn(),
    )
    return RichBar(progress, description)
