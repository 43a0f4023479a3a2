"""Deprecated: the uploader reports through `aiogovernor.Progress` (``progress=True`` or a callback).

Kept so that code that built an `UploadProgress` by hand still runs; nothing in
the package uses it.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from aiogovernor._governor import Governor

__all__ = ["UploadProgress"]


class UploadProgress:
    """Shows an upload's progress with rich (the ``rich`` extra); a no-op when disabled.

    Args:
        total_items: Items in the run (skipped ones included).
        governor: Whose limit to show.
        enabled: False makes every method a no-op.
    """

    def __init__(self, *, total_items: int, governor: Governor, enabled: bool = True) -> None:
        self._governor = governor
        self._enabled = enabled
        self._done = 0
        self._failed = 0
        self._progress: Any = None
        self._task: Any = None
        self._total = total_items

    def __enter__(self) -> UploadProgress:
        if self._enabled:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]upload"),
                BarColumn(),
                TextColumn("{task.fields[items]}"),
                DownloadColumn(),
                TransferSpeedColumn(),
                TextColumn("{task.fields[limit]}"),
                TimeElapsedColumn(),
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("upload", total=None, items="", limit="")
            self._refresh()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._refresh()
            self._progress.__exit__(exc_type, exc, tb)
            self._progress = None

    def _refresh(self) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task,
                items=f"{self._done}/{self._total} items, {self._failed} failed",
                limit=f"limit {self._governor.limit} ({self._governor.inflight} in flight)",
            )

    def sent(self, n: int) -> None:
        """Count ``n`` body bytes streamed."""
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def finished(self, *, failed: bool) -> None:
        """Count one item that ended."""
        self._done += 1
        self._failed += failed
        self._refresh()
