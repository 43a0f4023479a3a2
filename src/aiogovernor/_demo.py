"""``python -m aiogovernor demo``: a governed workload against a simulated upstream."""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from ._governor import Governor
from ._plot import PlotError, Trace, draw
from .limits import LimitPolicy, default_policy
from .sim import KneeUpstream, run_virtual

__all__ = ["PlotError", "run_demo"]


def _bar(value: float, scale: float, width: int = 40) -> str:
    return "#" * max(0, min(width, round(value / scale * width)))


async def _demo(
    *,
    capacity: int,
    service_time_s: float,
    duration_s: float,
    workers: int,
    policy: LimitPolicy,
    shift_to: int | None,
    trace: Trace,
    out: TextIO,
) -> Governor:
    # A real knee: latency rises past `capacity` long before the queue bound (4 x capacity)
    # refuses anything, so the policy must find it from latency alone.
    upstream = KneeUpstream(capacity=capacity, service_time_s=service_time_s)
    # No store: the demo shows the knee being found from scratch on every run.
    gov = Governor("demo", policy, environment="demo", store=None)
    loop = asyncio.get_running_loop()
    trace.limit.append((loop.time(), gov.limit))
    trace.capacity.append((loop.time(), capacity))
    # Every decision, not the governor's bounded history: the run makes hundreds.
    gov.add_listener(lambda d: trace.add_decisions((d,)))

    async def shifter() -> None:
        if shift_to is None:
            return
        await asyncio.sleep(duration_s / 3)
        upstream.capacity = shift_to
        trace.capacity.append((loop.time(), shift_to))
        print(f"--- capacity changes to {shift_to} ---", file=out)
        await asyncio.sleep(duration_s / 3)
        upstream.capacity = capacity
        trace.capacity.append((loop.time(), capacity))
        print(f"--- capacity back to {capacity} ---", file=out)

    report_every_s = duration_s / 30
    best = capacity / service_time_s

    async def worker() -> None:
        while loop.time() < duration_s:
            try:
                async with gov:
                    await upstream()
            except Exception:  # refused: already counted as overload by the governor
                await asyncio.sleep(service_time_s)

    async def reporter() -> None:
        done = 0
        while loop.time() < duration_s:
            await asyncio.sleep(report_every_s)
            rate = (upstream.completed - done) / report_every_s
            done = upstream.completed
            # The best goodput is that of the capacity in force (it moves with --shift-to).
            middle = loop.time() - report_every_s / 2
            in_force = [c for t, c in trace.capacity if t <= middle][-1]
            share = rate / (in_force / service_time_s)
            trace.goodput.append((middle, share))
            print(
                f"t={loop.time():6.1f}s  limit={gov.limit:4d} {_bar(gov.limit, 4 * capacity, 24):24s} "
                f"goodput={rate:6.1f}/s ({share:4.0%} of best)",
                file=out,
            )

    print(
        f"Simulated upstream: {capacity} workers, {service_time_s * 1000:.0f} ms per request, slower past "
        f"the knee; {workers} callers; best goodput {best:.0f}/s at about {capacity} at once.\n"
        f"Policy: {policy!r}. Virtual time: {duration_s:.0f} simulated seconds.\n",
        file=out,
    )
    await asyncio.gather(reporter(), shifter(), *(worker() for _ in range(workers)))
    return gov


def run_demo(
    *,
    capacity: int = 16,
    service_time_s: float = 0.05,
    duration_s: float = 60.0,
    workers: int = 200,
    policy: LimitPolicy | None = None,
    shift_to: int | None = None,
    plot_path: str | None = None,
    out: TextIO | None = None,
) -> Governor:
    """Run the demo in virtual time and print the limit as it moves; return the governor.

    With ``shift_to`` the capacity changes to it for the middle third of the
    run. With ``plot_path`` the limit over time is drawn to that PNG file
    (needs matplotlib, the ``plot`` extra; without it a note is printed).

    Raises:
        PlotError: When the plot file cannot be written.
    """
    out = out or sys.stdout
    trace = Trace()
    gov = run_virtual(
        _demo(
            capacity=capacity,
            service_time_s=service_time_s,
            duration_s=duration_s,
            workers=workers,
            policy=policy or default_policy(),
            shift_to=shift_to,
            trace=trace,
            out=out,
        )
    )
    stats = gov.stats()
    print(
        f"\nFinal limit {stats.limit}; outcomes {dict(stats.counts)}; {stats.decision_count} decisions.",
        file=out,
    )
    if stats.last_decision is not None:
        print(f"Last decision: {stats.last_decision.describe()}", file=out)
    if plot_path is not None:
        trace.capacity.append((duration_s, trace.capacity[-1][1]))
        trace.limit.append((duration_s, gov.limit))
        _plot(trace, plot_path, out=out)
    return gov


def _plot(trace: Trace, path: str, *, out: TextIO) -> None:
    try:
        draw(
            trace,
            path,
            title="aiogovernor demo: the default policy against a simulated knee",
            xlabel="simulated seconds",
        )
    except ImportError:
        print("matplotlib is missing (pip install 'aiogovernor[plot]'): no plot written", file=out)
        return
    print(f"Plot written to {path}", file=out)
