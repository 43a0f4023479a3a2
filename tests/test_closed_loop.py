"""Closed loops in virtual time: AIMD grows while limit-bound and backs off on overload."""

from __future__ import annotations

import asyncio

from aiogovernor import AIMD, Governor, OverloadError
from aiogovernor.sim import KneeUpstream, run_virtual


async def drive(gov: Governor, upstream: KneeUpstream, *, callers: int, until_s: float) -> list[int]:
    """``callers`` loops calling the upstream through ``gov``; returns the limit sampled every second."""
    loop = asyncio.get_running_loop()
    trace: list[int] = []

    async def caller() -> None:
        while loop.time() < until_s:
            try:
                async with gov:
                    await upstream()
            except OverloadError:
                await asyncio.sleep(upstream.service_time_s)

    async def sampler() -> None:
        while loop.time() < until_s:
            await asyncio.sleep(1.0)
            trace.append(gov.limit)

    await asyncio.gather(sampler(), *(caller() for _ in range(callers)))
    return trace


def test_aimd_finds_a_hard_wall_and_holds_near_it() -> None:
    async def main() -> tuple[list[int], Governor, KneeUpstream]:
        # A wall: no latency warning below 16, refusals at 16 and beyond.
        upstream = KneeUpstream(capacity=16, service_time_s=0.05, contention=1.0, queue_limit=16)
        gov = Governor("wall", AIMD(initial_limit=1, max_limit=200))
        trace = await drive(gov, upstream, callers=100, until_s=60)
        return trace, gov, upstream

    trace, gov, upstream = run_virtual(main())
    assert trace[0] > 1, "slow start grows the limit within the first second"
    steady = trace[20:]
    assert min(steady) >= 12 and max(steady) <= 17, steady
    assert upstream.refused / (upstream.completed + upstream.refused) < 0.03
    assert gov.inflight == 0


def test_an_idle_governor_does_not_inflate() -> None:
    async def main() -> list[int]:
        upstream = KneeUpstream(capacity=64, service_time_s=0.05)
        gov = Governor("idle", AIMD(initial_limit=8, max_limit=200, slow_start=False))
        return await drive(gov, upstream, callers=3, until_s=30)

    trace = run_virtual(main())
    assert max(trace) == 8


def test_backs_off_when_capacity_drops() -> None:
    async def main() -> tuple[list[int], list[int]]:
        upstream = KneeUpstream(capacity=32, service_time_s=0.05, contention=1.0, queue_limit=32)
        gov = Governor("shift", AIMD(initial_limit=1, max_limit=200))
        before = await drive(gov, upstream, callers=100, until_s=30)
        upstream.capacity = upstream.queue_limit = 8
        after = await drive(gov, upstream, callers=100, until_s=60)
        return before, after

    before, after = run_virtual(main())
    assert 24 <= before[-1] <= 33
    assert max(after[10:]) <= 9
