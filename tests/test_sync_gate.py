"""The thread gate: the async gate's semantics (DESIGN rules 1-9) for threads."""

from __future__ import annotations

import asyncio
import queue
import random
import threading
import time
from collections.abc import Callable

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from aiogovernor import AIMD, Decision, Fixed, Governor, Outcome, OverloadError, WindowConfig, sync
from aiogovernor.state import LearnedState, MemoryStore

FAST = WindowConfig(min_samples=2, min_duration_s=0.0, latency_multiple=0.0)


def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait for another thread to reach a state (bounded); threads have no 'all blocked' helper."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition was not reached in time")
        time.sleep(0.0005)


Grants = queue.Queue[tuple[int, sync.Permit]]


def waiter_thread(gov: sync.Governor, out: Grants, ident: int) -> threading.Thread:
    def run() -> None:
        out.put((ident, gov.acquire()))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_with_takes_and_returns_a_permit() -> None:
    gov = sync.Governor("t", Fixed(2), store=None)
    with gov as permit:
        assert gov.inflight == 1
        assert isinstance(permit, sync.Permit)
        assert permit.governor is gov
    assert gov.inflight == 0
    assert gov.stats().counts["ok"] == 1


def test_the_same_arguments_as_the_async_gate() -> None:
    import inspect

    a = inspect.signature(Governor.__init__).parameters
    b = inspect.signature(sync.Governor.__init__).parameters
    assert list(a) == list(b)
    assert [p.default for p in a.values()] == [p.default for p in b.values()]


def test_bad_arguments_are_refused_as_on_the_async_gate() -> None:
    with pytest.raises(ValueError, match="name"):
        sync.Governor("", store=None)
    with pytest.raises(TypeError, match="policy"):
        sync.Governor("x", object(), store=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout_s"):
        sync.Governor("x", store=None).acquire(timeout_s=-1)


def test_exceptions_are_classified_and_the_permit_comes_back() -> None:
    gov = sync.Governor("t", Fixed(2), store=None)
    with pytest.raises(ValueError), gov:
        raise ValueError("bug")
    with pytest.raises(TimeoutError), gov:
        raise TimeoutError
    with pytest.raises(KeyError), gov as permit:
        permit.ignore()
        raise KeyError
    assert gov.inflight == 0
    assert dict(gov.stats().counts) == {"ok": 0, "overload": 1, "error": 1, "ignored": 1}


def test_a_custom_classifier_decides_and_a_broken_one_falls_back() -> None:
    gov = sync.Governor("t", Fixed(2), store=None, classify=lambda e: Outcome.OVERLOAD)
    with pytest.raises(ValueError), gov:
        raise ValueError
    broken = sync.Governor("b", Fixed(2), store=None, classify=lambda e: 1 / 0)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError), broken:
        raise ValueError
    assert gov.stats().counts["overload"] == 1
    assert broken.stats().counts["error"] == 1
    assert broken.inflight == 0


def test_try_acquire_and_a_timeout_leave_no_hole() -> None:
    gov = sync.Governor("t", Fixed(1), store=None)
    held = gov.try_acquire()
    assert held is not None
    assert gov.try_acquire() is None
    with pytest.raises(TimeoutError):
        gov.acquire(timeout_s=0.01)
    assert gov.waiting == 0
    out: Grants = queue.Queue()
    waiter_thread(gov, out, 1)
    until(lambda: gov.waiting == 1)
    held.release()
    ident, permit = out.get(timeout=5)
    assert ident == 1
    assert isinstance(permit, sync.Permit)
    permit.release()
    assert (gov.inflight, gov.waiting) == (0, 0)


def test_a_released_permit_cannot_be_released_again() -> None:
    gov = sync.Governor("t", Fixed(1), store=None)
    permit = gov.acquire()
    permit.release()
    with pytest.raises(RuntimeError, match="already released"):
        permit.release()
    assert gov.inflight == 0


def test_waiters_are_served_in_arrival_order_and_a_raise_wakes_them_at_once() -> None:
    gov = sync.Governor("t", AIMD(initial_limit=1, min_limit=1, max_limit=10), store=None)
    held = gov.acquire()
    out: Grants = queue.Queue()
    for i in range(5):
        waiter_thread(gov, out, i)
        until(lambda: gov.waiting == i + 1)  # noqa: B023 - called before the loop moves on
    threading.Thread(target=gov.reset_limit, args=(4,)).start()  # from another thread
    got = [out.get(timeout=5) for _ in range(3)]
    # Woken threads report in any order; the grants (their tickets) follow arrival.
    got.sort(key=lambda g: g[1]._ticket)
    assert [g[0] for g in got] == [0, 1, 2]
    assert gov.inflight == 4
    assert gov.waiting == 2
    # Lowering never preempts: the holders keep theirs; the next waiter waits for inflight < limit.
    gov.reset_limit(1)
    for _, p in got:
        p.release()
    assert gov.waiting == 2
    held.release()
    ident, p = out.get(timeout=5)
    assert ident == 3
    p.release()
    ident, p = out.get(timeout=5)
    assert ident == 4
    p.release()
    assert (gov.inflight, gov.waiting) == (0, 0)


def test_a_pause_admits_nothing_until_it_ends_and_then_wakes_the_waiters() -> None:
    gov = sync.Governor("t", Fixed(2), store=None)
    with pytest.raises(OverloadError), gov:
        raise OverloadError(retry_after_s=0.05)
    assert gov.stats().counts["overload"] == 1
    assert 0 < gov.paused_for_s() <= 0.05
    assert gov.try_acquire() is None
    permit = gov.acquire(timeout_s=5)  # woken by the time gate's timer
    permit.release()
    assert gov.paused_for_s() == 0.0


def test_the_pause_is_capped() -> None:
    gov = sync.Governor("t", Fixed(2), store=None, max_pause_s=0.01)
    gov.pause(100)
    assert gov.paused_for_s() <= 0.01


def test_the_rate_ceiling_spaces_permits() -> None:
    gov = sync.Governor("t", Fixed(10), store=None, max_per_second=50, burst=1)
    assert gov.max_per_second == 50
    first = gov.try_acquire()
    assert first is not None
    assert gov.try_acquire() is None  # the next start is 20 ms away
    second = gov.acquire(timeout_s=5)
    assert second.started_at - first.started_at >= 0.019
    first.release()
    second.release()


def test_a_woken_waiter_starts_its_clock_when_it_runs() -> None:
    # The clock tells threads apart: the hand-off runs in this thread, the work in the waiter's.
    main = threading.get_ident()
    gov = sync.Governor(
        "t", Fixed(1), store=None, clock=lambda: 1.0 if threading.get_ident() == main else 2.0
    )
    held = gov.acquire()
    out: Grants = queue.Queue()
    waiter_thread(gov, out, 1)
    until(lambda: gov.waiting == 1)
    held.release()
    _, permit = out.get(timeout=5)
    assert permit.started_at == 2.0  # a wait for a core is not the upstream's latency
    permit.release()


def test_the_injected_clock_is_the_gates_clock() -> None:
    now = [100.0]
    gov = sync.Governor(
        "t", AIMD(initial_limit=2, max_limit=10), store=None, clock=lambda: now[0], window=FAST
    )
    for _ in range(2):
        permit = gov.acquire()
        now[0] += 0.5
        permit.release()
    assert permit.started_at == 100.5
    decision = gov.decisions[-1]
    assert decision.at == 101.0
    assert decision.window is not None
    assert decision.window.latency_p50_s == pytest.approx(0.5)


def test_decisions_reach_listeners_history_and_stats() -> None:
    gov = sync.Governor("t", AIMD(initial_limit=2, max_limit=10), store=None, window=FAST)
    seen: list[Decision] = []

    def listener(d: Decision) -> None:
        seen.append(d)
        gov.stats()  # a listener may read the gate (re-entrant lock)

    gov.add_listener(listener)
    permits = [gov.acquire(), gov.acquire()]
    for p in permits:
        p.release()
    assert seen
    assert gov.decisions[-1] is seen[-1]
    assert gov.stats().last_decision is seen[-1]
    assert gov.stats().decision_count == len(seen)
    gov.remove_listener(listener)
    assert gov.limit == seen[-1].new_limit


def test_one_congestion_event_one_decrease() -> None:
    gov = sync.Governor(
        "t", AIMD(initial_limit=8, min_limit=1, max_limit=10, backoff_ratio=0.5), store=None, window=FAST
    )
    permits = [gov.acquire() for _ in range(6)]
    for p in permits[:2]:
        p.release(Outcome.OVERLOAD)
    assert gov.limit == 4
    for p in permits[2:4]:  # started before the decrease: stale, no second cut
        p.release(Outcome.OVERLOAD)
    assert gov.limit == 4
    for p in permits[4:]:
        p.release()


def test_derive_shares_settings_not_state() -> None:
    gov = sync.Governor("t", Fixed(2), store=None, max_per_second=10)
    other = gov.derive("u", Fixed(3))
    assert isinstance(other, sync.Governor)
    assert (other.name, other.limit, other.max_per_second) == ("u", 3, 10)
    with pytest.raises(ValueError, match="own policy"):
        gov.derive("v", gov.policy)


def test_exit_without_enter_is_an_error() -> None:
    gov = sync.Governor("t", Fixed(1), store=None)
    with pytest.raises(RuntimeError, match="without a matching enter"):
        gov.__exit__(None, None, None)


def test_a_thread_queueing_on_its_own_permit_is_warned() -> None:
    gov = sync.Governor("t", Fixed(1), store=None)
    with gov, pytest.warns(RuntimeWarning, match="holds one of its permits"), pytest.raises(TimeoutError):
        gov.acquire(timeout_s=0.01)


def test_learned_state_is_loaded_by_the_first_acquire_and_saved_on_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AIOGOVERNOR_DISABLE_STATE", raising=False)
    store = MemoryStore()
    saved = LearnedState(limit=7, policy="AIMD", updated_at=time.time(), sample_count=5)
    asyncio.run(store.save("default", "learned", saved))
    gov = sync.Governor(
        "learned", AIMD(initial_limit=2, max_limit=20), store=store, window=FAST, environment="default"
    )
    assert gov.limit == 2
    with gov:
        pass
    assert gov.limit == 7
    assert gov.decisions[0].reason.startswith("restored learned limit 7")
    with gov, gov:
        pass
    gov.close()
    state = asyncio.run(store.load("default", "learned"))
    assert state is not None
    assert state.limit == gov.policy.limit
    assert state.sample_count >= 5 + 3


def test_guard_on_both_gates_and_the_wrong_pairing() -> None:
    tgov = sync.Governor("t", Fixed(1), store=None)
    agov = Governor("a", Fixed(1), store=None)

    @tgov.guard
    def double(x: int) -> int:
        assert tgov.inflight == 1
        return 2 * x

    @agov.guard
    async def triple(x: int) -> int:
        assert agov.inflight == 1
        return 3 * x

    @tgov.guard
    def fails() -> None:
        raise OverloadError

    assert double(2) == 4
    assert double.__name__ == "double"
    assert asyncio.run(triple(2)) == 6
    with pytest.raises(OverloadError):
        fails()
    assert tgov.stats().counts["overload"] == 1
    assert (tgov.inflight, agov.inflight) == (0, 0)

    async def coro() -> None: ...

    def plain() -> None: ...

    def gen() -> object:
        yield 1

    with pytest.raises(TypeError, match="the async gate"):
        tgov.guard(coro)
    with pytest.raises(TypeError, match=r"aiogovernor\.sync\.Governor"):
        agov.guard(plain)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="generator"):
        tgov.guard(gen)


def test_thread_stress_keeps_the_invariants() -> None:
    """Thousands of acquires from many threads, with timeouts, exceptions and resizes from another thread."""
    gov = sync.Governor("stress", AIMD(initial_limit=4, min_limit=1, max_limit=8), store=None, window=FAST)
    rng = random.Random(7)
    seeds = [rng.randrange(1 << 30) for _ in range(16)]
    over: list[int] = []
    ops = 250
    done = threading.Event()
    granted = [0]
    count_lock = threading.Lock()

    def worker(seed: int) -> None:
        r = random.Random(seed)
        for _ in range(ops):
            try:
                permit = gov.acquire(timeout_s=r.choice([None, 0.0, 0.001]))
            except TimeoutError:
                continue
            with count_lock:
                granted[0] += 1
            if permit._inflight > 8:
                over.append(permit._inflight)
            kind = r.random()
            if kind < 0.1:
                permit.release(Outcome.OVERLOAD)
            elif kind < 0.2:
                permit.release(Outcome.ERROR)
            else:
                permit.release()

    def resizer() -> None:
        r = random.Random(1)
        while not done.is_set():
            gov.reset_limit(r.randint(1, 8))
            time.sleep(0.0005)

    threads = [threading.Thread(target=worker, args=(s,)) for s in seeds]
    changer = threading.Thread(target=resizer)
    changer.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    done.set()
    changer.join()
    assert not over
    assert (gov.inflight, gov.waiting) == (0, 0)
    assert sum(gov.stats().counts.values()) == granted[0] > 0


class ThreadGateMachine(RuleBasedStateMachine):
    """Waiter threads driven one step at a time: every grant is decided by the step's own thread,
    so the expected grants (FIFO, up to the limit) are known before the woken threads report."""

    def __init__(self) -> None:
        super().__init__()
        self.gov = sync.Governor("machine", AIMD(initial_limit=2, min_limit=1, max_limit=4), store=None)
        self.out: Grants = queue.Queue()
        self.next_id = 0
        self.queue: list[int] = []  # the model: waiting threads in arrival order
        self.held: dict[int, sync.Permit] = {}
        self.threads: list[threading.Thread] = []

    def collect(self, expected: list[int]) -> None:
        got = [self.out.get(timeout=5) for _ in expected]
        # Woken threads report in any order; the grants (their tickets) follow arrival.
        got.sort(key=lambda g: g[1]._ticket)
        assert [g[0] for g in got] == expected, "grants out of arrival order"
        for ident, permit in got:
            self.held[ident] = permit

    def grants_due(self) -> list[int]:
        free = max(0, self.gov.limit - len(self.held))
        due, self.queue = self.queue[:free], self.queue[free:]
        return due

    @rule()
    def arrive(self) -> None:
        ident = self.next_id
        self.next_id += 1
        if not self.queue and len(self.held) < self.gov.limit:
            self.held[ident] = self.gov.acquire()
            return
        self.queue.append(ident)
        self.threads.append(waiter_thread(self.gov, self.out, ident))
        until(lambda: self.gov.waiting == len(self.queue))

    @precondition(lambda self: self.queue or len(self.held) >= self.gov.limit)
    @rule()
    def a_newcomer_times_out(self) -> None:
        with pytest.raises(TimeoutError):
            self.gov.acquire(timeout_s=0.001)
        assert self.gov.waiting == len(self.queue)

    @precondition(lambda self: self.held)
    @rule(data=st.data(), outcome=st.sampled_from([Outcome.OK, Outcome.ERROR, Outcome.IGNORED]))
    def release(self, data: st.DataObject, outcome: Outcome) -> None:
        ident = data.draw(st.sampled_from(sorted(self.held)))
        self.held.pop(ident).release(outcome)
        self.collect(self.grants_due())

    @rule(limit=st.integers(min_value=1, max_value=4))
    def resize(self, limit: int) -> None:
        self.gov.reset_limit(limit)
        self.collect(self.grants_due())

    @invariant()
    def inflight_is_the_permits_held(self) -> None:
        assert self.gov.inflight == len(self.held)
        assert self.gov.waiting == len(self.queue)

    def teardown(self) -> None:
        self.gov.reset_limit(4)
        while self.held or self.queue:
            self.collect(self.grants_due())
            for ident in sorted(self.held):
                self.held.pop(ident).release()
                self.collect(self.grants_due())
        for t in self.threads:
            t.join(timeout=5)
        assert (self.gov.inflight, self.gov.waiting) == (0, 0)


TestThreadGateMachine = ThreadGateMachine.TestCase
TestThreadGateMachine.settings = settings(max_examples=30, stateful_step_count=25, deadline=None)


def test_a_warning_raised_as_an_error_leaves_no_waiter_behind() -> None:
    import warnings

    gov = sync.Governor("t", Fixed(1), store=None)
    with gov, warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeWarning):
            gov.acquire(timeout_s=0.01)
        assert gov.waiting == 0
    assert gov.inflight == 0


def test_metrics_exporters_see_thread_gates() -> None:
    from aiogovernor.metrics import live_governors

    gov = sync.Governor("seen-by-metrics", AIMD(initial_limit=2, max_limit=10), store=None, window=FAST)
    assert gov in live_governors()
    windows: list[int] = []
    gov.add_window_listener(lambda window, latencies: windows.append(len(latencies)))
    for p in [gov.acquire(), gov.acquire()]:
        p.release()
    assert windows == [2]
    assert sum(gov.stats().decisions_by_direction.values()) == gov.stats().decision_count == 1


def test_a_bad_retry_after_set_later_is_ignored_not_raised() -> None:
    gov = sync.Governor("t", Fixed(1), store=None)
    exc = OverloadError()
    exc.retry_after_s = float("nan")
    with pytest.raises(OverloadError), gov:
        raise exc
    assert (gov.inflight, gov.paused_for_s()) == (0, 0.0)
    assert gov.stats().counts["overload"] == 1


def test_a_permit_carries_its_size_into_the_sample() -> None:
    now = [0.0]
    gov = sync.Governor(
        "t", AIMD(initial_limit=2, max_limit=10), store=None, clock=lambda: now[0], window=FAST
    )
    for size in (4, 1):
        permit = gov.acquire()
        permit.size = size
        now[0] += 1.0
        permit.release()
    with pytest.raises(ValueError, match="size"):
        gov.acquire().size = 0
    window = gov.decisions[-1].window
    assert window is not None
    assert window.ok == 2
    assert window.size_mean == pytest.approx(2.5)  # (4 + 1) / 2: the sample said its size
