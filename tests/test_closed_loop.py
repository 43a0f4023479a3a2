"""Closed loops in virtual time: AIMD grows while limit-bound and backs off on overload."""

from __future__ import annotations

import asyncio

from aiogovernor import AIMD, Governor, LatencyAIMD, OverloadError, WindowConfig
from aiogovernor.sim import KneeUpstream, ServerUpstream, run_virtual


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


def test_a_slow_climb_measures_its_baseline_on_the_way_without_dropping_to_the_probe_limit() -> None:
    # A slow upstream and short windows: at limits 4-7 a window holds 4-9 calls, too few
    # to measure the no-load latency one by one (10). The climb's windows from the probe
    # limit (3) up measure it together: the limit never drops back to 3 to measure it.
    policy = LatencyAIMD()
    window = WindowConfig(latency_multiple=1.2, min_duration_s=0.0)

    async def main() -> Governor:
        loop = asyncio.get_running_loop()
        upstream = ServerUpstream(workers=16, service_time_s=0.1, backlog=10_000, seed=5)
        gov = Governor("slow", policy=policy, window=window, history_size=1000)
        end = loop.time() + 2.5

        async def caller() -> None:
            while loop.time() < end:
                async with gov:
                    await upstream()

        await asyncio.gather(*(caller() for _ in range(30)))
        return gov

    gov = run_virtual(main())
    moves = [(d.old_limit, d.new_limit, d.window.ok if d.window else 0) for d in gov.decisions]
    assert moves[0][2] < 10 and moves[2][2] < 10, moves  # the early windows are small
    assert all(new > 3 for _, new, _ in moves), moves  # never back to the probe limit
    assert not any("probe limit" in d.reason or "measuring" in d.reason for d in gov.decisions)
    assert policy.baseline_s is not None and 0.09 < policy.baseline_s < 0.12
    assert gov.limit >= 12, moves
