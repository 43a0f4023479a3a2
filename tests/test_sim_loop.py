"""The virtual-time event loop and the knee upstream."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from aiogovernor import OverloadError
from aiogovernor.sim import KneeUpstream, VirtualTimeEventLoop, run_virtual


def test_sleeps_complete_in_virtual_time_and_in_order() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        seen: list[tuple[str, float]] = []

        async def sleeper(name: str, delay: float) -> None:
            await asyncio.sleep(delay)
            seen.append((name, loop.time()))

        await asyncio.gather(sleeper("b", 3600.0), sleeper("a", 60.0))
        return seen

    before = time.process_time()
    assert run_virtual(main()) == [("a", 60.0), ("b", 3600.0)]
    assert time.process_time() - before < 5  # an hour of sleeps, no real waiting


def test_timeouts_fire_in_virtual_time() -> None:
    async def main() -> float:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(5):
                await asyncio.Event().wait()
        return asyncio.get_running_loop().time()

    assert run_virtual(main, start=100.0) == pytest.approx(105.0)


def test_runs_are_deterministic() -> None:
    async def main() -> tuple[int, int]:
        up = KneeUpstream(capacity=2, service_time_s=0.1, queue_limit=3, seed=7)

        async def call() -> None:
            with contextlib.suppress(OverloadError):
                await up()

        await asyncio.gather(*(call() for _ in range(10)))
        return up.completed, up.refused

    assert run_virtual(main()) == run_virtual(main()) == (3, 7)


def test_knee_latency_model() -> None:
    up = KneeUpstream(capacity=4, service_time_s=0.1, contention=2.0)
    assert up.latency_at(1) == up.latency_at(4) == pytest.approx(0.1)
    assert up.latency_at(8) == pytest.approx(0.4)


def test_knee_refuses_with_retry_after() -> None:
    async def main() -> float | None:
        up = KneeUpstream(capacity=1, service_time_s=1.0, queue_limit=1, retry_after_s=2.5)
        first = asyncio.ensure_future(up())
        await asyncio.sleep(0)
        try:
            await up()
        except OverloadError as exc:
            return exc.retry_after_s
        finally:
            await first
        return None

    assert run_virtual(main()) == 2.5


def test_loop_time_starts_where_asked() -> None:
    loop = VirtualTimeEventLoop(start=42.0)
    try:
        assert loop.time() == 42.0
        loop.advance(-5)
        assert loop.time() == 42.0
    finally:
        loop.close()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"capacity": 0, "service_time_s": 0.1}, "capacity"),
        ({"capacity": 2, "service_time_s": 0.0}, "service_time_s"),
        ({"capacity": 2, "service_time_s": 0.1, "contention": 0.5}, "contention"),
        ({"capacity": 4, "service_time_s": 0.1, "queue_limit": 2}, "queue_limit"),
    ],
)
def test_bad_upstream_parameters(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        KneeUpstream(**kwargs)  # type: ignore[arg-type]
