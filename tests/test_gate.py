"""The gate: permits, waiters, resizing, pauses, rate ceiling, outcomes. asyncio and trio, virtual time."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from aiogovernor import (
    AIMD,
    Decision,
    Fixed,
    Governor,
    Outcome,
    OverloadError,
    WindowConfig,
    governed_map,
)
from aiogovernor.testing import ManualClock, wait_until

pytestmark = pytest.mark.anyio

ONE_SAMPLE_WINDOWS = WindowConfig(min_samples=1, min_duration_s=0.0, latency_multiple=0.0)


async def test_async_with_takes_and_returns_one_permit() -> None:
    gov = Governor("t", Fixed(2))
    async with gov as permit:
        assert gov.inflight == 1
        assert (permit.outcome, permit.released) == (None, False)
    assert gov.inflight == 0
    assert (permit.outcome, permit.released) == (Outcome.OK, True)
    assert gov.stats().counts["ok"] == 1


async def test_latency_is_measured_with_the_loop_clock() -> None:
    gov = Governor("t", Fixed(1), window=ONE_SAMPLE_WINDOWS)
    async with gov:
        await anyio.sleep(0.25)
    window = gov.stats().last_window
    assert window is not None
    assert window.latency_p50_s == pytest.approx(0.25)


async def test_waiters_are_served_in_arrival_order() -> None:
    gov = Governor("t", Fixed(1))
    order: list[int] = []
    gate = anyio.Event()

    async def user(i: int) -> None:
        async with gov:
            order.append(i)
            await gate.wait()

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(user, i)
            await wait_until(lambda i=i: gov.inflight + gov.waiting == i + 1)  # type: ignore[misc]
        assert gov.waiting == 4
        gate.set()
    assert order == [0, 1, 2, 3, 4]
    assert gov.inflight == 0


async def test_raising_the_limit_wakes_waiters_at_once() -> None:
    gov = Governor("t", AIMD(initial_limit=1, max_limit=10))
    release = anyio.Event()
    entered = 0

    async def user() -> None:
        nonlocal entered
        async with gov:
            entered += 1
            await release.wait()

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(user)
        await wait_until(lambda: gov.waiting == 3)
        gov.reset_limit(3)
        await wait_until(lambda: entered == 3)
        assert gov.inflight == 3
        assert gov.waiting == 1
        release.set()
    assert gov.inflight == 0


async def test_lowering_the_limit_never_cancels_work() -> None:
    gov = Governor("t", AIMD(initial_limit=4, max_limit=10))
    release = anyio.Event()
    finished = 0

    async def user() -> None:
        nonlocal finished
        async with gov:
            await release.wait()
        finished += 1

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(user)
        await wait_until(lambda: gov.inflight == 4 and gov.waiting == 2)
        gov.reset_limit(1)
        assert gov.limit == 1
        assert gov.inflight == 4  # draining: nothing was cancelled
        release.set()
    assert finished == 6
    assert gov.inflight == 0


async def test_a_cancelled_waiter_leaves_no_hole() -> None:
    gov = Governor("t", Fixed(1))
    release = anyio.Event()
    served: list[str] = []

    async def user(name: str) -> None:
        async with gov:
            served.append(name)
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(user, "first")
        await wait_until(lambda: gov.inflight == 1)
        async with anyio.create_task_group() as doomed:
            doomed.start_soon(user, "doomed")
            await wait_until(lambda: gov.waiting == 1)
            tg.start_soon(user, "third")
            await wait_until(lambda: gov.waiting == 2)
            doomed.cancel_scope.cancel()
        assert gov.waiting == 1
        release.set()
    assert served == ["first", "third"]
    assert gov.inflight == 0


async def test_acquire_timeout_raises_and_leaks_nothing() -> None:
    gov = Governor("t", Fixed(1))
    held = await gov.acquire()
    with pytest.raises(TimeoutError):
        await gov.acquire(timeout_s=0.5)
    assert gov.waiting == 0
    held.release()
    assert gov.inflight == 0
    again = await gov.acquire(timeout_s=0.5)
    again.release()


async def test_try_acquire() -> None:
    gov = Governor("t", Fixed(1))
    first = gov.try_acquire()
    assert first is not None
    assert gov.try_acquire() is None
    first.release(Outcome.ERROR)
    assert gov.stats().counts["error"] == 1
    with pytest.raises(RuntimeError, match="already released"):
        first.release()


async def test_exceptions_release_and_are_classified() -> None:
    gov = Governor("t", Fixed(3))
    with pytest.raises(ValueError, match="boom"):
        async with gov:
            raise ValueError("boom")
    with pytest.raises(TimeoutError):
        async with gov:
            raise TimeoutError
    with pytest.raises(OverloadError):
        async with gov:
            raise OverloadError
    counts = gov.stats().counts
    assert counts == {"ok": 0, "overload": 2, "error": 1, "ignored": 0}
    assert gov.inflight == 0


async def test_cancellation_is_ignored_and_releases() -> None:
    gov = Governor("t", Fixed(1))
    with anyio.CancelScope() as scope:
        async with gov:
            scope.cancel()
            await anyio.sleep(1)
    assert gov.inflight == 0
    assert gov.stats().counts["ignored"] == 1


async def test_the_caller_sets_the_outcome() -> None:
    gov = Governor("t", Fixed(2))
    async with gov as permit:
        permit.overload()
    async with gov as permit:
        permit.error()
    async with gov as permit:
        permit.ignore()
    with pytest.raises(KeyError):
        async with gov as permit:
            permit.ok()
            raise KeyError("the caller's word wins")
    assert gov.stats().counts == {"ok": 1, "overload": 1, "error": 1, "ignored": 1}


async def test_a_custom_classifier_replaces_the_default() -> None:
    def classify(exc: BaseException) -> Outcome | None:
        return Outcome.OVERLOAD if isinstance(exc, ConnectionResetError) else None

    gov = Governor("t", Fixed(1), classify=classify)
    for exc in (ConnectionResetError(), ValueError()):
        with pytest.raises(type(exc)):
            async with gov:
                raise exc
    assert gov.stats().counts["overload"] == 1
    assert gov.stats().counts["error"] == 1


async def test_a_failing_or_wrong_classifier_leaks_no_permit(caplog: pytest.LogCaptureFixture) -> None:
    def broken(exc: BaseException) -> Outcome | None:
        if isinstance(exc, KeyError):
            raise RuntimeError("bug in the classifier")
        return "overloaded"  # type: ignore[return-value]  # not an Outcome

    gov = Governor("t", Fixed(1), classify=broken)
    for exc in (KeyError("k"), ValueError("v")):
        with pytest.raises(type(exc)):  # the work's own exception, not the classifier's
            async with gov:
                raise exc
        assert gov.inflight == 0
    assert gov.stats().counts["error"] == 2  # fell back to the default classification
    assert "classifier" in caplog.text


async def test_nesting_two_governors_restores_the_outer_permit() -> None:
    outer, inner = Governor("outer", Fixed(1)), Governor("inner", Fixed(1))
    async with outer as a:
        async with inner as b:
            b.overload()
        a.error()
    assert outer.stats().counts["error"] == 1
    assert inner.stats().counts["overload"] == 1


async def test_releasing_by_hand_inside_the_block_is_allowed() -> None:
    gov = Governor("t", Fixed(1))
    async with gov as permit:
        permit.release(Outcome.OVERLOAD)
        assert gov.inflight == 0
    assert gov.stats().counts["overload"] == 1


async def test_exit_without_enter_is_an_error() -> None:
    gov = Governor("t")
    with pytest.raises(RuntimeError, match="without a matching enter"):
        await gov.__aexit__(None, None, None)


async def test_pause_admits_nothing_new_until_it_ends() -> None:
    gov = Governor("t", Fixed(4))
    start = anyio.current_time()
    gov.pause(2.0)
    async with gov:
        entered = anyio.current_time()
    assert entered - start == pytest.approx(2.0)
    assert gov.paused_for_s() == 0.0


async def test_pause_is_capped_and_never_shortened() -> None:
    gov = Governor("t", Fixed(4), max_pause_s=10)
    gov.pause(3600)
    assert gov.paused_for_s() == pytest.approx(10)
    gov.pause(1)
    assert gov.paused_for_s() == pytest.approx(10)
    with pytest.raises(ValueError, match="seconds"):
        gov.pause(-1)


async def test_pause_keeps_running_work_and_sampling() -> None:
    gov = Governor("t", Fixed(2), window=ONE_SAMPLE_WINDOWS)
    async with gov:
        gov.pause(5)
        await anyio.sleep(1)
    assert gov.stats().decision_count == 1  # the sample was taken and decided on while paused
    assert gov.paused_for_s() == pytest.approx(4)


async def test_overload_with_retry_after_pauses() -> None:
    gov = Governor("t", Fixed(2))
    with pytest.raises(OverloadError):
        async with gov:
            raise OverloadError(retry_after_s=3)
    assert gov.paused_for_s() == pytest.approx(3)
    async with gov as permit:
        permit.overload(retry_after_s=7)
    assert gov.paused_for_s() == pytest.approx(7)


async def test_waiters_queued_during_a_pause_keep_their_order() -> None:
    # One permit at a time, so that the order of grants is the order of entry
    # (trio runs tasks woken together in a deliberately random order).
    gov = Governor("t", Fixed(1))
    gov.pause(1)
    order: list[int] = []

    async def user(i: int) -> None:
        async with gov:
            order.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(user, i)
            await wait_until(lambda i=i: gov.waiting == i + 1)  # type: ignore[misc]
    assert order == [0, 1, 2, 3, 4]


async def test_rate_ceiling_spaces_grants() -> None:
    gov = Governor("t", Fixed(100), max_per_second=10)
    times: list[float] = []

    async def user() -> None:
        async with gov:
            times.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(user)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == pytest.approx([0.1] * 4)


async def test_rate_ceiling_burst() -> None:
    gov = Governor("t", Fixed(100), max_per_second=2, burst=3)
    start = anyio.current_time()
    times: list[float] = []
    for _ in range(5):
        async with gov:
            times.append(anyio.current_time() - start)
    assert times == pytest.approx([0, 0, 0, 0.5, 1.0])


async def test_decisions_reach_listeners_history_and_logging(caplog: pytest.LogCaptureFixture) -> None:
    gov = Governor("t", AIMD(initial_limit=2, max_limit=10), window=ONE_SAMPLE_WINDOWS, history_size=3)
    seen: list[Decision] = []
    gov.add_listener(seen.append)

    def broken(decision: Decision) -> None:
        raise RuntimeError("listener bug")

    gov.add_listener(broken)
    with caplog.at_level(logging.DEBUG, logger="aiogovernor"):
        for _ in range(5):
            async with gov as permit:
                permit.overload()
    assert len(seen) == 5
    assert len(gov.decisions) == 3
    assert gov.decisions[-1] == seen[-1] == gov.stats().last_decision
    assert seen[0].old_limit == 2
    assert seen[0].new_limit == 1
    assert "listener bug" in caplog.text or "failed" in caplog.text
    assert "t[" in caplog.text
    assert "overload" in caplog.text
    gov.remove_listener(broken)
    with pytest.raises(ValueError):  # list.remove's own error
        gov.remove_listener(broken)


async def test_one_congestion_event_one_decrease() -> None:
    gov = Governor("t", AIMD(initial_limit=10, max_limit=10), window=ONE_SAMPLE_WINDOWS)
    release = anyio.Event()

    async def overloaded() -> None:
        async with gov as permit:
            await release.wait()
            permit.overload()

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(overloaded)
        await wait_until(lambda: gov.inflight == 10)
        release.set()
    # Ten overloads from work started together: one decrease, not ten.
    assert gov.limit == 9
    assert sum(d.new_limit < d.old_limit for d in gov.decisions) == 1
    assert gov.stats().last_window is not None


async def test_stats_snapshot_is_frozen() -> None:
    gov = Governor("t", Fixed(3), environment="staging")
    async with gov:
        snap = gov.stats()
    assert snap.inflight == 1
    assert gov.stats().inflight == 0
    assert snap.environment == "staging"
    assert snap.policy == "fixed"
    with pytest.raises(AttributeError):
        snap.limit = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        snap.counts["ok"] = 2  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": ""}, ValueError, "name"),
        ({"policy": object()}, TypeError, "LimitPolicy"),
        ({"clock": 3}, TypeError, "clock"),
        ({"classify": "x"}, TypeError, "classify"),
        ({"max_per_second": 0}, ValueError, "max_per_second"),
        ({"max_per_second": float("nan")}, ValueError, "max_per_second"),
        ({"burst": 0}, ValueError, "burst"),
        ({"history_size": 0}, ValueError, "history_size"),
        ({"max_pause_s": -1}, ValueError, "max_pause_s"),
        ({"environment": ""}, ValueError, "environment"),
        ({"window": {"min_samples": 3}}, TypeError, "WindowConfig"),
    ],
)
def test_bad_configuration_is_a_clear_error(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Governor(**kwargs)


def test_environment_defaults_from_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOGOVERNOR_ENV", "ci")
    assert Governor("t").environment == "ci"
    monkeypatch.delenv("AIOGOVERNOR_ENV")
    assert Governor("t").environment == "default"
    assert Governor("t", environment="prod").environment == "prod"


def test_repr_names_the_state() -> None:
    text = repr(Governor("uploads", Fixed(3)))
    assert "uploads" in text
    assert "limit=3" in text


def test_a_governor_follows_the_loop_it_runs_on() -> None:
    from aiogovernor.sim import run_virtual

    gov = Governor("t", Fixed(1), window=ONE_SAMPLE_WINDOWS)

    async def timed(seconds: float) -> float:
        async with gov:
            await anyio.sleep(seconds)
        window = gov.stats().last_window
        assert window is not None
        return window.latency_p50_s

    # Two loops with clocks far apart: the second must not read the first's clock.
    assert run_virtual(timed(2.0), start=0.0) == pytest.approx(2.0)
    assert run_virtual(timed(3.0), start=1e6) == pytest.approx(3.0)


def test_a_user_clock_is_read_instead_of_the_loop() -> None:
    from aiogovernor.sim import run_virtual
    from aiogovernor.testing import ManualClock

    clock = ManualClock(100.0)
    gov = Governor("t", Fixed(1), clock=clock, window=ONE_SAMPLE_WINDOWS)

    async def main() -> None:
        async with gov:
            clock.advance(0.5)

    run_virtual(main())
    window = gov.stats().last_window
    assert window is not None
    assert window.latency_p50_s == pytest.approx(0.5)
    assert window.end == pytest.approx(100.5)


def test_derive_shares_settings_but_nothing_learned() -> None:
    from aiogovernor.testing import ManualClock

    clock = ManualClock()
    base = Governor(
        "api",
        Fixed(3),
        environment="prod",
        clock=clock,
        max_per_second=5,
        max_pause_s=7,
        store=None,
    )
    child = base.derive("api@host", AIMD(initial_limit=2, max_limit=9))
    assert child.name == "api@host"
    assert child.environment == "prod"
    assert child.max_per_second == 5
    assert child.store is None
    assert child.limit == 2
    assert child.inflight == 0
    child.pause(60)
    assert child.paused_for_s() == 7  # the pause cap came along, and the injected clock
    assert base.paused_for_s() == 0
    with pytest.raises(ValueError, match="its own policy"):
        base.derive("x", base.policy)


async def test_queueing_while_holding_a_permit_of_the_same_governor_warns() -> None:
    gov = Governor("t", Fixed(1), store=None)
    async with gov:
        with pytest.warns(RuntimeWarning, match="holds one of its permits"), pytest.raises(TimeoutError):
            await gov.acquire(timeout_s=1)
    assert gov.inflight == 0
    # Nesting two different governors is fine, and says nothing.
    other = Governor("u", Fixed(1), store=None)
    async with gov, other:
        pass


async def test_a_window_past_max_samples_decides_on_its_duration_and_counts_every_block() -> None:
    clock = ManualClock()
    window = WindowConfig(min_samples=1, max_samples=8, min_duration_s=1.0)
    gov = Governor("t", Fixed(4), clock=clock, window=window, store=None)
    for _ in range(100):
        async with gov:  # the fast path: latencies appended, folded at the cap
            clock.advance(0.001)
        assert len(gov._ok_latencies) < 8  # memory stays bounded
    assert not list(gov.decisions)  # no decision before the window's duration
    assert gov.stats().counts["ok"] == 100
    clock.advance(1.0)
    async with gov:
        clock.advance(0.001)
    assert len(gov.decisions) == 1
    w = gov.stats().last_window
    assert w is not None
    assert (w.ok, w.count) == (101, 101)
    assert w.latency_p50_s == pytest.approx(0.001)


async def test_a_thinned_window_counts_every_block_exactly_and_keeps_a_uniform_subsample() -> None:
    clock = ManualClock()
    window = WindowConfig(min_samples=1, max_samples=16, min_duration_s=100.0)
    gov = Governor("t", Fixed(4), clock=clock, window=window, store=None)
    kept: list[float] = []
    gov.add_window_listener(lambda w, lat: kept.extend(lat))
    n = 5000
    for i in range(n):
        async with gov:
            clock.advance(i * 1e-6)  # a block's latency tells its place in the window
        if i % 997 == 0:  # stats count the blocks of a group not closed yet too
            assert gov.stats().counts["ok"] == i + 1 + (i > 2500)
        if i == 2500:  # work released by hand, and a failure: counted, kept as they are
            permit = gov.try_acquire()
            assert permit is not None
            permit.release()
            async with gov as p:
                p.error()
        assert len(gov._ok_latencies) <= 16  # memory stays bounded
    clock.advance(100.0)
    async with gov:
        pass
    w = gov.stats().last_window
    assert w is not None and len(gov.decisions) == 1
    assert (w.ok, w.error, w.count) == (n + 2, 1, n + 3)
    assert 8 <= len(kept) <= 16
    places = sorted(round(x * 1e6) for x in kept if x < 1.0)
    gaps = [b - a for a, b in itertools.pairwise([0, *places, n])]
    assert max(gaps) <= 2 * n // len(kept) + 2  # spread over the whole window, not its start


async def test_a_sized_block_in_a_thinned_window_is_kept_and_closes_it() -> None:
    clock = ManualClock()
    window = WindowConfig(min_samples=1, max_samples=8, min_duration_s=100.0)
    gov = Governor("t", Fixed(4), clock=clock, window=window, store=None)
    for _ in range(50):
        async with gov:
            clock.advance(0.001)
    assert gov._thin.stride > 1 and not list(gov.decisions)
    sized = 0
    while not list(gov.decisions):  # its size bands need every sized call: it closes at the cap
        async with gov as permit:
            permit.size = 4.0
            clock.advance(0.004)
        sized += 1
    assert sized <= 8
    w = gov.stats().last_window
    assert w is not None
    assert w.ok == 50 + sized and w.size_mean == pytest.approx((50 + 4.0 * sized) / (50 + sized))
    assert [b.band for b in w.bands] == [0, 2] and w.bands[1].count == sized


async def test_a_map_worker_keeping_its_permit_counts_every_item_in_a_thinned_window() -> None:
    clock = ManualClock()
    window = WindowConfig(min_samples=1, max_samples=16, min_duration_s=100.0)
    gov = Governor("t", Fixed(2), clock=clock, window=window, store=None)

    async def work(i: int) -> int:
        clock.advance(1e-6)
        if i % 500 == 0:
            await anyio.lowlevel.checkpoint()
        return i

    assert await governed_map(work, range(3000), governor=gov) == list(range(3000))
    assert gov._thin.stride > 1  # thinned, the workers renewing their permits
    assert gov.stats().counts["ok"] == 3000
    assert len(gov._ok_latencies) <= 16


async def test_open_blocks_are_told_apart_from_hand_held_and_granted_permits() -> None:
    gov = Governor("t", Fixed(3), store=None)
    release = anyio.Event()
    entered = 0

    async def block() -> None:
        nonlocal entered
        async with gov:
            entered += 1
            await release.wait()

    hand = await gov.acquire()
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(block)
        await wait_until(lambda: entered == 2 and gov.waiting == 1)
        assert gov._blocks_open() == 2  # a hand-held permit and a queued block are no open block
        hand.release()  # granted to the queued block, which has not run yet
        assert gov._blocks_open() == 2
        await wait_until(lambda: entered == 3)
        assert gov._blocks_open() == 3
        release.set()
    assert gov._blocks_open() == 0 and gov.inflight == 0
    with pytest.raises(RuntimeError, match="without a matching enter"):
        await gov.__aexit__(None, None, None)


async def test_the_fast_enter_keeps_the_peak_in_flight_and_a_lowered_limit() -> None:
    clock = ManualClock()
    window = WindowConfig(min_samples=1, min_duration_s=1.0)
    gov = Governor("t", AIMD(initial_limit=4, max_limit=10), clock=clock, window=window, store=None)
    async with gov:  # the first window opens
        pass
    first, rest = anyio.Event(), anyio.Event()
    most = 0

    async def block(release: anyio.Event) -> None:
        nonlocal most
        async with gov:
            most = max(most, gov.inflight)
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(block, first)
        for _ in range(2):
            tg.start_soon(block, rest)
        await wait_until(lambda: gov.inflight == 3)
        first.set()
        await wait_until(lambda: gov.inflight == 2)  # the window's peak stays 3
        gov.reset_limit(2)  # at what is held now: the next block queues
        tg.start_soon(block, rest)
        await wait_until(lambda: gov.waiting == 1)
        assert gov.inflight == 2
        rest.set()
    assert most == 3 and gov.inflight == 0
    clock.advance(1.0)
    async with gov:
        pass
    w = gov.stats().last_window
    assert w is not None and w.peak_inflight == 3
