"""The optional rich live view of an `EndpointPool`: `render_pool` (pure) and `LiveView` (refreshing it).

rich (the ``rich`` extra) is imported only inside `render_pool` and
`LiveView.start`; without it `LiveView` shows nothing and everything else works.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import TYPE_CHECKING

from aiogovernor._validate import check_float

from ._breaker import BreakerState
from ._pool import EndpointPool
from ._progress import PoolSnapshot

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

__all__ = ["LiveView", "render_pool"]

logger = logging.getLogger("aiogovernor.dispatch")

_BREAKER_STYLE = {
    BreakerState.CLOSED: "green",
    BreakerState.HALF_OPEN: "yellow",
    BreakerState.OPEN: "bold red",
}


def _seconds(s: float | None) -> str:
    """``12.3s``, ``4m05s``, ``1h02m``; ``?`` when unknown."""
    if s is None:
        return "?"
    if s < 60:
        return f"{s:.1f}s"
    minutes, seconds = divmod(round(s), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def summary_line(snapshot: PoolSnapshot) -> str:
    """The trials' line of the live view: running, queued, completed, failed, best value, ETA."""
    p = snapshot.progress
    total = "?" if p.total is None else str(p.total)
    best = "-" if p.best_value is None else f"{p.best_value:.6g}"
    return (
        f"trials {p.finished}/{total}: {p.running} running, {p.queued} queued, "
        f"{p.completed} completed, {p.failed} failed | best {best} | "
        f"ETA {_seconds(p.eta_s)} | elapsed {_seconds(p.elapsed_s)}"
    )


def render_pool(snapshot: PoolSnapshot) -> RenderableType:
    """Draw a `PoolSnapshot`: a summary line over a table with one row per endpoint.

    A pure function of the snapshot (render it to any rich ``Console``);
    columns: endpoint, breaker state (``refused`` when it refused the key),
    limit, in flight, waiting, completed, failed, recent success rate. Needs
    rich (the ``rich`` extra): raises ImportError without it.
    """
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("endpoint")
    table.add_column("breaker")
    for name in ("limit", "inflight", "waiting", "completed", "failed", "success"):
        table.add_column(name, justify="right")
    for e in snapshot.endpoints:
        if e.refused:
            breaker = Text("refused", style="bold red")
        elif e.breaker is None:
            breaker = Text("-", style="dim")
        else:
            breaker = Text(e.breaker.value, style=_BREAKER_STYLE[e.breaker])
        table.add_row(
            e.name,
            breaker,
            str(e.limit),
            str(e.inflight),
            str(e.waiting),
            str(e.completed),
            Text(str(e.failed), style="red" if e.failed else ""),
            "-" if e.success_rate is None else f"{e.success_rate:.0%}",
        )
    return Group(Text(summary_line(snapshot), style="bold"), table)


class LiveView:
    """A rich live table of an `EndpointPool`, redrawn every ``refresh_s`` from `EndpointPool.snapshot`.

    ``async with LiveView(pool): ...`` (or `start` / `stop`) around the code
    that runs trials; `optimize_remote` does it for you with ``live=True``.
    The table is redrawn from an asyncio task on the pool's loop (no
    thread reads the pool) and drawn one last time when the view stops,
    however the block ends: success, error or cancellation. When rich is
    not installed the view shows nothing (`active` stays False).

    Args:
        pool: The pool to show.
        refresh_s: Seconds between redraws, > 0.
        console: The rich ``Console`` to draw on; by default rich's global one (stdout).
        transient: Erase the table when the view stops instead of leaving its last frame.
    """

    def __init__(
        self,
        pool: EndpointPool,
        *,
        refresh_s: float = 0.25,
        console: Console | None = None,
        transient: bool = False,
    ) -> None:
        if not isinstance(pool, EndpointPool):
            raise TypeError(f"pool must be an EndpointPool, got {pool!r}")
        self._pool = pool
        self._refresh_s = check_float("refresh_s", refresh_s, low=0.0, low_open=True)
        self._console = console
        self._transient = transient
        self._live: Live | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        """Whether the view is showing now (False before `start`, after `stop`, and without rich)."""
        return self._live is not None

    def start(self) -> bool:
        """Show the view and start redrawing it; returns False (and shows nothing) without rich.

        Call it from a running event loop.
        """
        if self._live is not None:
            return True
        try:
            from rich.live import Live
        except ImportError:
            logger.debug("rich is not installed: no live view")
            return False
        loop = asyncio.get_running_loop()
        live = Live(
            render_pool(self._pool.snapshot()),
            console=self._console,
            auto_refresh=False,
            transient=self._transient,
        )
        live.start(refresh=True)
        self._live = live
        self._task = loop.create_task(self._refresh(), name="aiogovernor-live-view")
        return True

    def stop(self) -> None:
        """Draw the last frame and stop; safe to call twice, and without rich."""
        live, self._live = self._live, None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        if live is not None:
            try:
                live.update(render_pool(self._pool.snapshot()))
            finally:
                live.stop()

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            live = self._live
            if live is None:
                return
            live.update(render_pool(self._pool.snapshot()), refresh=True)

    async def __aenter__(self) -> LiveView:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
