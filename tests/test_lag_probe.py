"""The loop-lag probe is one per event loop, however many governors are busy on it (in virtual time)."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable
from contextvars import Context
from typing import Any, TypeVarTuple, Unpack

from aiogovernor import Governor, WindowConfig
from aiogovernor._lag import SharedLagProbe, shared_lag_probe
from aiogovernor._samples import Window
from aiogovernor.sim import VirtualTimeEventLoop

# One sample closes a window, and the first close starts the probe (10 ms period).
_WINDOW = WindowConfig(min_samples=1, min_duration_s=0.0)

_Ts = TypeVarTuple("_Ts")


class _CountingLoop(VirtualTimeEventLoop):
    """A virtual-time loop that counts the timers scheduled on it."""

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


async def _busy_second(governors: int) -> tuple[int, list[Window]]:
    """Timers scheduled while ``governors`` governors are busy for 1 s (with a 30 ms stall), and windows."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, _CountingLoop)
    govs = [Governor(f"g{i}", window=_WINDOW, store=None) for i in range(governors)]
    windows: list[Window] = []
    for gov in govs:
        gov.add_window_listener(lambda window, _: windows.append(window))
    release = asyncio.Event()

    async def hold(gov: Governor) -> None:
        async with gov:
            await release.wait()

    holders = [loop.create_task(hold(gov)) for gov in govs]
    await asyncio.sleep(0)
    for gov in govs:
        async with gov:  # the first window closes: the probe starts
            pass
    windows.clear()
    start = loop.timers
    await asyncio.sleep(0.5)
    loop.advance(0.03)  # the loop is busy for 30 ms: every governor's window should see it
    await asyncio.sleep(0.5)
    timers = loop.timers - start
    for gov in govs:
        async with gov:  # closes the window that holds the second's readings
            pass
    closed = list(windows)
    release.set()
    await asyncio.gather(*holders)
    return timers, closed


def _run(governors: int) -> tuple[int, list[Window]]:
    with asyncio.Runner(loop_factory=_CountingLoop) as runner:
        return runner.run(_busy_second(governors))


def test_timer_callbacks_do_not_grow_with_busy_governors_and_each_window_sees_the_same_lag() -> None:
    one_timers, (one,) = _run(1)
    many_timers, many = _run(50)
    assert 90 <= one_timers <= 110  # a reading every 10 ms, plus the test's own sleeps
    assert many_timers <= one_timers + 2  # one timer for the loop, not one per governor
    assert one.loop_pause_s > 0  # the stall was seen
    assert len(many) == 50
    for window in many:
        assert (window.loop_lag_s, window.loop_pause_s) == (one.loop_lag_s, one.loop_pause_s)


def _state(probe: SharedLagProbe) -> tuple[bool, int]:
    return probe.running, probe.watchers


def test_the_probe_stops_when_no_governor_is_busy_and_holds_governors_weakly() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        gov = Governor("g", window=_WINDOW, store=None)
        async with gov:
            pass  # the window closes with nothing in flight: one more reading, then the probe stops
        probe = shared_lag_probe(loop, 0.01)
        assert _state(probe) == (True, 1)
        await asyncio.sleep(0.05)
        assert _state(probe) == (False, 0)

        other = Governor("other", window=_WINDOW, store=None)
        permit = await other.acquire()  # never released: busy for as long as it lives
        async with other:
            pass
        await asyncio.sleep(0.05)
        assert _state(probe) == (True, 1)
        del permit, other
        gc.collect()
        await asyncio.sleep(0.05)  # the next reading finds the governor gone
        assert _state(probe) == (False, 0)

    with asyncio.Runner(loop_factory=VirtualTimeEventLoop) as runner:
        runner.run(main())


def test_each_loop_has_its_own_probe_and_a_governor_hears_only_the_loop_it_is_on() -> None:
    gov = Governor("g", window=_WINDOW, store=None)
    probes: dict[str, Any] = {}

    async def use(name: str) -> None:
        async with gov:
            pass
        probes[name] = shared_lag_probe(asyncio.get_running_loop(), 0.01)

    with asyncio.Runner(loop_factory=VirtualTimeEventLoop) as runner:
        runner.run(use("first"))
    with asyncio.Runner(loop_factory=VirtualTimeEventLoop) as runner:
        runner.run(use("second"))
    assert probes["first"] is not probes["second"]
    # A reading from the loop the governor has left is not its loop's lag: refused, and it stops listening.
    assert not gov._lag_reading(probes["first"], 1.0, 0.01)

    # Loops in two threads at once: each finds (or makes) its own probe.
    found: dict[int, Any] = {}

    def thread(i: int) -> None:
        async def main() -> None:
            loop = asyncio.get_running_loop()
            found[i] = (loop, shared_lag_probe(loop, 0.01))

        with asyncio.Runner(loop_factory=VirtualTimeEventLoop) as runner:
            runner.run(main())

    threads = [threading.Thread(target=thread, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert found[0][1] is not found[1][1]
    assert all(probe.loop is loop for loop, probe in found.values())
