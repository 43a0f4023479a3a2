"""``python -m aiogovernor demo``: a governed workload against a simulated upstream."""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from ._governor import Governor
from .limits import LimitPolicy, default_policy
from .sim import KneeUpstream, run_virtual

__all__ = ["run_demo"]


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
    trace: list[tuple[float, int, int]],
    out: TextIO,
) -> Governor:
    # A real knee: latency rises past `capacity` long before the queue bound (4 x capacity)
    # refuses anything, so the policy must find it from latency alone.
    upstream = KneeUpstream(capacity=capacity, service_time_s=service_time_s)
    # No store: the demo shows the knee being found from scratch on every run.
    gov = Governor("demo", policy, environment="demo", store=None)
    loop = asyncio.get_running_loop()

    async def shifter() -> None:
        if shift_to is None:
            return
        await asyncio.sleep(duration_s / 3)
        upstream.capacity = shift_to
        print(f"--- capacity changes to {shift_to} ---", file=out)
        await asyncio.sleep(duration_s / 3)
        upstream.capacity = capacity
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
            trace.append((loop.time(), gov.limit, upstream.capacity))
            print(
                f"t={loop.time():6.1f}s  limit={gov.limit:4d} {_bar(gov.limit, 4 * capacity, 24):24s} "
                f"goodput={rate:6.1f}/s ({rate / best:4.0%} of best)",
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
    """
    out = out or sys.stdout
    trace: list[tuple[float, int, int]] = []
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
        f"\nFinal limit {stats.limit}; outcomes {dict(stats.counts)}; {stats.decisions} decisions.", file=out
    )
    if stats.last_decision is not None:
        print(f"Last decision: {stats.last_decision.describe()}", file=out)
    if plot_path is not None:
        _plot(trace, plot_path, out)
    return gov


def _plot(trace: list[tuple[float, int, int]], path: str, out: TextIO) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing (pip install 'aiogovernor[plot]'): no plot written", file=out)
        return
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.step([t for t, _, _ in trace], [c for _, _, c in trace], where="post", label="capacity (the knee)")
    ax.plot([t for t, _, _ in trace], [lim for _, lim, _ in trace], label="limit")
    ax.set_xlabel("simulated seconds")
    ax.set_ylabel("concurrency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"Plot written to {path}", file=out)
