"""``python -m aiogovernor demo``: a governed workload against a simulated upstream."""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from ._governor import Governor
from .limits import AIMD, LimitPolicy
from .sim import KneeUpstream, run_virtual

__all__ = ["run_demo"]


def _bar(value: float, scale: float, width: int = 40) -> str:
    return "#" * max(0, min(width, round(value / scale * width)))


async def _demo(
    *, capacity: int, service_time_s: float, duration_s: float, workers: int, policy: LimitPolicy, out: TextIO
) -> Governor:
    # A queue bound a quarter past the knee: AIMD reads only overload, so it finds the
    # knee where the upstream starts refusing. (A latency-aware policy finds it earlier.)
    upstream = KneeUpstream(
        capacity=capacity, service_time_s=service_time_s, queue_limit=capacity + max(1, capacity // 4)
    )
    # No store: the demo shows the knee being found from scratch on every run.
    gov = Governor("demo", policy, environment="demo", store=None)
    loop = asyncio.get_running_loop()
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
    await asyncio.gather(reporter(), *(worker() for _ in range(workers)))
    return gov


def run_demo(
    *,
    capacity: int = 16,
    service_time_s: float = 0.05,
    duration_s: float = 60.0,
    workers: int = 200,
    policy: LimitPolicy | None = None,
    out: TextIO | None = None,
) -> Governor:
    """Run the demo in virtual time and print the limit as it moves; return the governor."""
    out = out or sys.stdout
    gov = run_virtual(
        _demo(
            capacity=capacity,
            service_time_s=service_time_s,
            duration_s=duration_s,
            workers=workers,
            policy=policy or AIMD(max_limit=20 * capacity),
            out=out,
        )
    )
    stats = gov.stats()
    print(
        f"\nFinal limit {stats.limit}; outcomes {dict(stats.counts)}; {stats.decisions} decisions.", file=out
    )
    if stats.last_decision is not None:
        print(f"Last decision: {stats.last_decision.describe()}", file=out)
    return gov
