"""`scale.py lag`: the loop-lag probe's cost with 1, 10, 100 and 1 000 busy governors on one loop.

Every governor holds one permit for the whole measurement (work in flight, so
its probe keeps reading the loop's lag) after a first window has closed (which
starts the probe). The loop then has nothing to do but the probe, so the
process's CPU time over ``--seconds`` of wall time is the probe's cost; the
same governors with the probe turned off (``lag_probe_period_s=None``) are
measured beside it, interleaved, and subtracted. Timer callbacks are counted
on the loop itself (a loop that counts what ``call_at`` schedules), readings in
the governors' open windows. On a loaded machine a process gets less CPU than
the probe asks for and the loop falls behind (fewer readings than 100 per
governor a second): the CPU per reading is the figure that does not depend on it.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from contextvars import Context
from typing import TypeVarTuple, Unpack

from aiogovernor import Governor, WindowConfig

GOVERNORS = (1, 10, 100, 1_000)

_Ts = TypeVarTuple("_Ts")


class CountingLoop(asyncio.SelectorEventLoop):
    """An event loop that counts the timers scheduled on it."""

    timers = 0

    def call_at(
        self,
        when: float,
        callback: Callable[[Unpack[_Ts]], object],
        *args: *_Ts,
        context: Context | None = None,
    ) -> asyncio.TimerHandle:
        self.timers += 1
        return super().call_at(when, callback, *args, context=context)


async def _busy(governors: int, seconds: float, probe: bool) -> tuple[float, float, float]:
    """CPU seconds per wall second, timer callbacks per second and readings per second."""
    window = WindowConfig(min_samples=1, min_duration_s=0.0, lag_probe_period_s=0.01 if probe else None)
    govs = [Governor(f"g{i}", window=window, store=None) for i in range(governors)]
    release = asyncio.Event()

    async def hold(gov: Governor) -> None:
        async with gov:
            await release.wait()

    loop = asyncio.get_running_loop()
    assert isinstance(loop, CountingLoop)
    holders = [loop.create_task(hold(gov)) for gov in govs]
    await asyncio.sleep(0)  # every governor has a permit held
    for gov in govs:
        async with gov:  # one sample: the first window closes, and the probe starts
            pass
    await asyncio.sleep(0.05)  # settle
    readings = sum(len(gov._feedback._agg._lags) for gov in govs)
    timers = loop.timers
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    timers = loop.timers - timers
    readings = sum(len(gov._feedback._agg._lags) for gov in govs) - readings
    release.set()
    await asyncio.gather(*holders)
    return cpu / wall, timers / wall, readings / wall


def _run(governors: int, seconds: float, probe: bool) -> tuple[float, float, float]:
    loop = CountingLoop()
    try:
        return loop.run_until_complete(_busy(governors, seconds, probe))
    finally:
        loop.close()


def bench_lag(rounds: int, seconds: float) -> None:
    """Print the probe's share of a core, and its timer callbacks and readings per second, by governors."""
    share: dict[int, list[float]] = {n: [] for n in GOVERNORS}
    off: dict[int, list[float]] = {n: [] for n in GOVERNORS}
    timers: dict[int, list[float]] = {n: [] for n in GOVERNORS}
    readings: dict[int, list[float]] = {n: [] for n in GOVERNORS}
    for _ in range(rounds):
        for n in GOVERNORS:
            on_cpu, on_timers, on_readings = _run(n, seconds, probe=True)
            off_cpu, _, _ = _run(n, seconds, probe=False)
            share[n].append(on_cpu - off_cpu)
            off[n].append(off_cpu)
            timers[n].append(on_timers)
            readings[n].append(on_readings)
    print(
        f"\nThe loop-lag probe with N busy governors on one loop: {seconds:g} s of wall time each, "
        f"median (worst) of {rounds} interleaved rounds\n"
    )
    print(
        "| busy governors | probe's share of a core | idle loop without the probe "
        "| timer callbacks per s | readings per s (all governors) | CPU per reading |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for n in GOVERNORS:
        per_reading = [cpu / count for cpu, count in zip(share[n], readings[n], strict=True)]
        print(
            f"| {n:,} | {statistics.median(share[n]) * 100:.1f} % ({max(share[n]) * 100:.1f} %) "
            f"| {statistics.median(off[n]) * 100:.1f} % "
            f"| {statistics.median(timers[n]):,.0f} ({min(timers[n]):,.0f}) "
            f"| {statistics.median(readings[n]):,.0f} ({min(readings[n]):,.0f}) "
            f"| {statistics.median(per_reading) * 1e6:.2f} µs ({max(per_reading) * 1e6:.2f} µs) |"
        )
