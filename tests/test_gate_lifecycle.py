"""A governor outlives loops, tasks and bad input: no hang, no leaked permit.

- used by a second event loop, it carries no timer, pause, rate-ceiling time or
  window time from the first (a module-level governor, several ``asyncio.run``
  and ``trio.run`` calls);
- an ``async with`` exited in another task or context gives its permit back;
- a bad Retry-After on an `OverloadError` is logged and ignored, never leaks.

These tests run their own loops (that is the point), each bounded in time.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator

import anyio
import anyio.lowlevel
import pytest
import trio
import trio.testing

from aiogovernor import AIMD, Fixed, Governor, Outcome, OverloadError, WindowConfig
from aiogovernor.sim import run_virtual

# One governor for the whole module, as an application keeps one per upstream.
SHARED = Governor(
    "shared",
    Fixed(2),
    max_per_second=1000,
    max_pause_s=60,
    window=WindowConfig(min_duration_s=1.0, min_samples=1),
    store=None,
)


async def leave_a_pause_and_a_timer(gov: Governor) -> None:
    """Use the governor, then end with a pause pending and a wake-up timer armed for it."""
    for _ in range(3):
        async with gov:
            pass
    gov.pause(30)
    with pytest.raises(TimeoutError):
        await gov.acquire(timeout_s=0.01)  # queues: the time gates arm a wake-up, then it gives up
    assert gov.inflight == 0 and gov.waiting == 0


async def starts_afresh(gov: Governor) -> None:
    assert gov.paused_for_s() == 0.0  # the pause belonged to the other loop's clock
    for _ in range(3):
        async with gov:
            pass
    assert gov.inflight == 0


def test_two_asyncio_runs_carry_no_timer_or_pause_from_the_first() -> None:
    async def first() -> None:
        await leave_a_pause_and_a_timer(SHARED)

    async def second() -> None:
        # Bounded: before, the wake-up timer of the dead loop was waited for for ever.
        await asyncio.wait_for(starts_afresh(SHARED), 5)

    asyncio.run(first())
    asyncio.run(second())
    asyncio.run(first())
    asyncio.run(second())


def test_two_trio_runs_carry_no_time_from_the_first() -> None:
    decisions: list[int] = []

    async def first() -> None:
        await leave_a_pause_and_a_timer(SHARED)
        decisions.append(SHARED.stats().decision_count)

    async def second() -> None:
        start = trio.current_time()
        with trio.fail_after(5):
            await starts_afresh(SHARED)
        assert trio.current_time() - start < 1.0  # not the 30 s pause, nor a TAT from another clock
        await trio.sleep(1.5)
        async with SHARED:  # a window from this clock closes after its duration
            pass
        assert SHARED.stats().decision_count > decisions[-1]

    for offset in (150_000.0, 0.0):
        # trio's clocks start at a random offset per run; here one far ahead, then one at zero.
        clock = trio.testing.MockClock(autojump_threshold=0)
        clock.jump(offset)
        trio.run(first, clock=clock)
        trio.run(second, clock=trio.testing.MockClock(autojump_threshold=0))


def test_asyncio_then_trio_then_asyncio() -> None:
    gov = Governor("hop", Fixed(1), max_per_second=1000, store=None)
    run_virtual(leave_a_pause_and_a_timer(gov), start=1e6)
    trio.run(starts_afresh, gov, clock=trio.testing.MockClock(autojump_threshold=0))
    run_virtual(leave_a_pause_and_a_timer(gov), start=5.0)
    run_virtual(starts_afresh(gov), start=0.0)


async def queue_behind_one(gov: Governor) -> None:
    """A caller queues for the only permit, on whatever loop runs, and gets it when it is given back."""
    held = anyio.Event()

    async def enter() -> None:
        await held.wait()
        async with gov:
            pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(enter)  # started outside the block: its context holds no permit
        async with gov:  # the fast path: on a stock asyncio loop, it binds no clock
            held.set()
            for _ in range(100):
                if gov.waiting:
                    break
                await anyio.lowlevel.checkpoint()
            assert gov.waiting == 1
    assert gov.inflight == 0 and gov.waiting == 0


def test_a_caller_queues_on_the_loop_that_runs_not_the_one_whose_clock_was_bound() -> None:
    # A queued caller takes the bound loop while that loop runs (no getpid() call), and asks
    # for the running loop otherwise: a future of a finished loop would never be woken here.
    gov = Governor("queues", Fixed(1), store=None)
    for backend in ("asyncio", "trio", "asyncio", "asyncio"):
        anyio.run(queue_behind_one, gov, backend=backend)
    assert gov.stats().counts["ok"] == 8


def test_max_pause_bounds_the_wait_in_the_clock_of_the_wait() -> None:
    # An injected clock is the caller's own: when it moves back, a pause set on it still
    # lasts at most max_pause_s of its readings.
    now = [1000.0]
    gov = Governor("clock", Fixed(1), clock=lambda: now[0], max_pause_s=10, store=None)

    async def main() -> None:
        gov.pause(10)
        now[0] = 0.0  # the clock is reset
        assert gov.try_acquire() is None
        assert gov.paused_for_s() == 10.0
        now[0] = 10.0
        permit = gov.try_acquire()
        assert permit is not None
        permit.release()

    run_virtual(main())


# -- permits given back whatever the context of the exit ----------------------------


async def holds_a_permit(gov: Governor) -> AsyncIterator[int]:
    async with gov:
        yield 1
        yield 2


def test_an_abandoned_async_generator_gives_its_permit_back_on_asyncio() -> None:
    gov = Governor("agen", Fixed(1), store=None)

    async def main() -> None:
        agen = holds_a_permit(gov)
        assert await agen.__anext__() == 1
        assert gov.inflight == 1
        del agen  # abandoned: the loop's finalizer closes it in a new task
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)
        assert gov.inflight == 0
        async with asyncio.timeout(5):
            async with gov:  # the permit is usable again
                pass

    asyncio.run(main())
    assert gov.inflight == 0


def test_an_abandoned_async_generator_gives_its_permit_back_on_trio() -> None:
    gov = Governor("agen", Fixed(1), store=None)

    async def main() -> None:
        agen = holds_a_permit(gov)
        assert await agen.__anext__() == 1
        with pytest.warns(ResourceWarning, match="garbage collected"):  # trio says so, rightly
            del agen  # the last reference: collected at once
        # trio closes it in a system task that has not run yet. The generator ran in this
        # task's context, so the permit still shows there: queueing looks like nesting.
        with trio.fail_after(5), pytest.warns(RuntimeWarning, match="queueing for another"):
            async with gov:
                pass

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert gov.inflight == 0


def test_setup_and_teardown_in_different_tasks() -> None:
    # The shape of an async-generator fixture whose setup and teardown run in two tasks.
    gov = Governor("fixture", Fixed(1), store=None)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        permit = await loop.create_task(gov.__aenter__())
        assert gov.inflight == 1 and not permit.released
        await loop.create_task(gov.__aexit__(None, None, None))
        assert gov.inflight == 0
        # An OverloadError on the way out of another task still pauses.
        await loop.create_task(gov.__aenter__())
        await loop.create_task(gov.__aexit__(OverloadError, OverloadError(retry_after_s=2), None))
        assert gov.inflight == 0
        assert gov.paused_for_s() == pytest.approx(2.0)

    run_virtual(main())


def test_wait_for_around_aenter() -> None:
    gov = Governor("wait_for", Fixed(1), store=None)

    async def main() -> None:
        permit = await asyncio.wait_for(gov.__aenter__(), 1)  # a task of its own on 3.11
        assert gov.inflight == 1
        await gov.__aexit__(None, None, None)
        assert gov.inflight == 0
        assert permit.governor is gov

    run_virtual(main())


def test_an_exit_in_a_copied_context_gives_back_once() -> None:
    gov = Governor("copied", Fixed(2), store=None)

    async def main() -> None:
        permit = await gov.__aenter__()
        ctx = contextvars.copy_context()  # holds the permit too, with a token it cannot reset
        await asyncio.get_running_loop().create_task(gov.__aexit__(None, None, None), context=ctx)
        assert permit.released and gov.inflight == 0
        # The entering context's own exit finds its permit given back by the other exit: it
        # would release a second permit only if one were held, and none is.
        with pytest.raises(RuntimeError, match="without a matching enter"):
            await gov.__aexit__(None, None, None)
        assert gov.inflight == 0

    run_virtual(main())


def test_an_async_generator_that_released_by_hand_inside_an_outer_block() -> None:
    # The generator runs in the consumer's context: its block's permit shows there, even
    # after the consumer stops iterating. The outer block's exit must not mistake it for
    # its own, and the generator's exit (when it is closed) must give the outer one back.
    gov = Governor("nested", Fixed(2), store=None)

    async def inner() -> AsyncGenerator[int]:
        async with gov as permit:
            permit.release()
            yield 1

    async def main() -> None:
        agen = inner()
        async with gov:
            assert await agen.__anext__() == 1
        assert gov.inflight == 1  # one block (the generator's) is still open
        await agen.aclose()
        assert gov.inflight == 0

    run_virtual(main())


def test_an_exit_never_takes_a_permit_held_by_hand() -> None:
    gov = Governor("manual", Fixed(2), store=None)

    async def main() -> None:
        held = await gov.acquire()
        with pytest.raises(RuntimeError, match="without a matching enter"):
            await gov.__aexit__(None, None, None)
        assert gov.inflight == 1 and not held.released
        held.release()
        assert gov.inflight == 0

    run_virtual(main())


def test_release_by_hand_inside_a_block_entered_elsewhere() -> None:
    gov = Governor("hand", Fixed(1), store=None)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        permit = await loop.create_task(gov.__aenter__())
        permit.release(Outcome.ERROR)
        assert gov.inflight == 0
        await gov.__aexit__(None, None, None)  # closes the block, gives back nothing more
        assert gov.inflight == 0
        with pytest.raises(RuntimeError, match="without a matching enter"):
            await gov.__aexit__(None, None, None)

    run_virtual(main())


def test_a_blocks_permit_given_back_by_its_function_is_neither_renewed_nor_released_twice() -> None:
    # A map's worker renews its block's permit after each call; a function that gave that
    # permit back (an attempt loop waiting out a backoff) leaves nothing to renew.
    from aiogovernor._governor import held_permit

    gov = Governor("given-back", Fixed(2), store=None)
    other = Governor("other", Fixed(1), store=None)

    async def main() -> None:
        assert held_permit(gov) is None
        async with gov as permit:
            assert held_permit(gov) is permit and held_permit(other) is None
            permit.release(Outcome.ERROR)
            assert held_permit(gov) is None
            assert not gov._renew(permit)
            assert gov.inflight == 0
        assert gov.inflight == 0
        assert gov.stats().counts == {"ok": 0, "overload": 0, "error": 1, "ignored": 0}

    run_virtual(main())


# -- bad Retry-After values ----------------------------------------------------------


@pytest.mark.parametrize("value", ["5", math.nan, -1.0, math.inf, pytest.param(10**400, id="10**400"), True])
def test_a_bad_retry_after_is_logged_and_ignored_and_the_permit_comes_back(
    value: object, caplog: pytest.LogCaptureFixture
) -> None:
    gov = Governor("bad", AIMD(initial_limit=2), store=None)
    exc = OverloadError("full")
    exc.retry_after_s = value  # type: ignore[assignment]  # set after construction, as a subclass might

    async def main() -> None:
        with pytest.raises(OverloadError) as raised:
            async with gov:
                raise exc
        assert raised.value is exc  # the work's own exception, not a ValueError
        assert gov.inflight == 0
        assert gov.paused_for_s() == 0.0
        async with gov:  # and the gate is open
            pass

    with caplog.at_level(logging.WARNING, logger="aiogovernor"):
        run_virtual(main())
    assert "ignoring an OverloadError's retry_after_s" in caplog.text
    assert gov.stats().counts["overload"] == 1


def test_a_huge_retry_after_is_capped() -> None:
    gov = Governor("huge", Fixed(1), max_pause_s=7, store=None)

    async def main() -> None:
        with pytest.raises(OverloadError):
            async with gov:
                raise OverloadError(retry_after_s=1e300)
        assert gov.inflight == 0
        assert gov.paused_for_s() == 7.0

    run_virtual(main())


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (True, TypeError),
        ("5", TypeError),
        (b"5", TypeError),
        (math.nan, ValueError),
        (-1, ValueError),
        (math.inf, ValueError),
        pytest.param(10**400, ValueError, id="10**400"),
        (None, None),
        (0, None),
        (2.5, None),
    ],
)
def test_overload_error_checks_retry_after_when_made(value: object, error: type[Exception] | None) -> None:
    if error is None:
        assert OverloadError(retry_after_s=value).retry_after_s == value  # type: ignore[arg-type]
    else:
        with pytest.raises(error, match="retry_after_s"):
            OverloadError(retry_after_s=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [1e-320, 5e-324, 1e-9])
def test_a_rate_ceiling_too_small_to_mean_anything_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="max_per_second"):
        Governor("tiny", max_per_second=rate, store=None)


def test_a_burst_too_large_for_the_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="burst"):
        Governor("burst", max_per_second=1e-6, burst=10**400, store=None)
