"""A governor restores what it learned, saves after decisions (debounced) and on aclose()."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import anyio
import pytest

from aiogovernor import AIMD, Governor, Outcome
from aiogovernor._persistence import GovernorPersistence
from aiogovernor.sim import run_virtual
from aiogovernor.state import JsonFileStore, LearnedState, MemoryStore, StateStoreError
from aiogovernor.testing import wait_until

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _persistence_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIOGOVERNOR_DISABLE_STATE", raising=False)


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.loads = 0
        self.saves: list[LearnedState] = []

    async def load(self, environment: str, name: str) -> LearnedState | None:
        self.loads += 1
        await anyio.sleep(0.01)  # a store takes time: concurrent acquirers must wait for one load
        return await super().load(environment, name)

    async def save(self, environment: str, name: str, state: LearnedState) -> None:
        self.saves.append(state)
        await super().save(environment, name, state)


class BrokenStore(MemoryStore):
    async def load(self, environment: str, name: str) -> LearnedState | None:
        raise StateStoreError("down")

    async def save(self, environment: str, name: str, state: LearnedState) -> None:
        raise StateStoreError("down")


def learned(limit: float, age_s: float = 60.0) -> LearnedState:
    return LearnedState(limit=limit, policy="aimd", updated_at=time.time() - age_s, sample_count=100)


async def drive(gov: Governor, *, workers: int, seconds: float, overload_above: int | None = None) -> None:
    """Offer work for ``seconds`` of (virtual) time; refuse as overload above a concurrency."""

    async def worker() -> None:
        while anyio.current_time() < start + seconds:
            async with gov as permit:
                if overload_above is not None and gov.inflight > overload_above:
                    permit.overload()
                await anyio.sleep(0.05)

    start = anyio.current_time()
    async with anyio.create_task_group() as tg:
        for _ in range(workers):
            tg.start_soon(worker)


async def test_the_learned_limit_is_restored_on_first_acquire() -> None:
    store = MemoryStore()
    await store.save("prod", "api", learned(24))
    gov = Governor("api", AIMD(max_limit=64), environment="prod", store=store)
    assert gov.limit < 24  # nothing is read before the first acquire
    async with gov:
        assert gov.limit == 24
    assert "restored learned limit 24" in gov.decisions[-1].reason
    assert not gov._slow  # the fast path is open again


async def test_the_learned_limit_is_clamped_to_the_bounds() -> None:
    store = MemoryStore()
    await store.save("prod", "api", learned(500))
    gov = Governor("api", AIMD(max_limit=64), environment="prod", store=store)
    await gov.acquire()
    assert gov.limit == 64


async def test_state_older_than_the_max_age_is_ignored() -> None:
    store = MemoryStore()
    await store.save("prod", "api", learned(40, age_s=3600))
    gov = Governor(
        "api", AIMD(max_limit=64, initial_limit=4), environment="prod", store=store, state_max_age_s=60
    )
    (await gov.acquire()).release()
    assert gov.limit == 4
    fresh = Governor("api", AIMD(max_limit=64), environment="prod", store=store, state_max_age_s=7200)
    (await fresh.acquire()).release()
    assert fresh.limit == 40


async def test_concurrent_first_acquirers_load_once() -> None:
    store = CountingStore()
    await store.save("prod", "api", learned(8))
    gov = Governor("api", AIMD(max_limit=64), environment="prod", store=store)
    got = []

    async def take() -> None:
        async with gov:
            got.append(gov.limit)

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(take)
    assert store.loads == 1
    assert got == [8] * 5
    assert gov.inflight == 0


async def test_try_acquire_before_the_load_leaves_it_pending() -> None:
    store = MemoryStore()
    await store.save("prod", "api", learned(16))
    gov = Governor("api", AIMD(max_limit=64), environment="prod", store=store)
    permit = gov.try_acquire()
    assert permit is not None
    permit.release(Outcome.IGNORED)
    async with gov:
        assert gov.limit == 16


async def test_saves_are_debounced_and_aclose_flushes() -> None:
    store = CountingStore()
    gov = Governor("api", AIMD(max_limit=64), environment="prod", store=store, save_interval_s=5.0)
    await drive(gov, workers=40, seconds=60, overload_above=20)
    decisions = len(gov.decisions)
    assert decisions > 30
    # At most one save per interval (plus the first, at once): not one per decision.
    assert 2 <= len(store.saves) <= 60 / 5 + 2
    await gov.aclose()
    saved = await store.load("prod", "api")
    assert saved is not None
    assert saved.limit == gov.policy.limit
    assert saved.policy == "aimd"
    assert saved.sample_count == sum(gov.stats().counts.values())
    assert saved.latency_floor_s == pytest.approx(0.05)
    # Nothing changed since: a second close writes nothing.
    n = len(store.saves)
    await gov.aclose()
    assert len(store.saves) == n


async def test_aclosing_gives_a_lifecycle_block_and_the_next_run_starts_there() -> None:
    store = MemoryStore()
    async with contextlib.aclosing(Governor("api", environment="prod", store=store)) as gov:
        await drive(gov, workers=30, seconds=20, overload_above=12)
        limit = gov.policy.limit
    nxt = Governor("api", environment="prod", store=store)
    async with nxt:
        assert nxt.policy.limit == limit
    restored = await store.load("prod", "api")
    assert restored is not None
    # The restore itself is not written back as news.
    assert restored.sample_count == sum(gov.stats().counts.values())


async def test_a_broken_store_warns_and_the_governor_carries_on(caplog: pytest.LogCaptureFixture) -> None:
    gov = Governor("api", environment="prod", store=BrokenStore(), save_interval_s=1.0)
    with caplog.at_level(logging.WARNING, logger="aiogovernor.state"):
        await drive(gov, workers=20, seconds=10, overload_above=8)
        await gov.aclose()
    assert gov.inflight == 0
    assert len(gov.decisions) > 5
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot load" in m for m in messages) == 1
    assert sum("cannot save" in m for m in messages) == 1  # once, not per attempt


async def test_persistence_off(monkeypatch: pytest.MonkeyPatch, state_dir: Path) -> None:
    assert Governor("api", store=None).store is None
    monkeypatch.setenv("AIOGOVERNOR_DISABLE_STATE", "1")
    assert Governor("api").store is None
    assert Governor("api", store=MemoryStore()).store is None
    with pytest.raises(TypeError, match="StateStore"):
        Governor("api", store=object())  # type: ignore[arg-type]


def test_bad_state_options_are_refused(state_dir: Path) -> None:
    with pytest.raises(ValueError, match="store"):
        Governor("api", store="redis")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="save_interval_s"):
        Governor("api", save_interval_s=-1)
    with pytest.raises(ValueError, match="state_max_age_s"):
        Governor("api", state_max_age_s=float("nan"))


def test_the_default_store_is_the_json_file_in_the_state_dir(state_dir: Path) -> None:
    async def main() -> Governor:
        gov = Governor("api", environment="prod")
        assert isinstance(gov.store, JsonFileStore)
        await drive(gov, workers=30, seconds=10, overload_above=10)
        await gov.aclose()
        return gov

    gov = run_virtual(main())
    assert (state_dir / "prod.sqlite3").is_file()
    assert anyio.run(JsonFileStore(state_dir).names, "prod") == ["api"]

    async def again() -> int:
        nxt = Governor("api", environment="prod")
        async with nxt:
            return nxt.limit

    assert run_virtual(again()) == gov.limit


async def test_background_save_runs_without_aclose() -> None:
    store = CountingStore()
    gov = Governor("api", environment="prod", store=store, save_interval_s=0)
    await drive(gov, workers=20, seconds=3, overload_above=6)
    await wait_until(lambda: bool(store.saves))
    assert store.saves[-1].policy == gov.policy.name


async def test_a_decision_right_after_aclose_is_saved() -> None:
    store = CountingStore()
    gov = Governor("api", AIMD(max_limit=64), environment="prod", store=store, save_interval_s=5.0)
    async with gov:
        pass
    gov.reset_limit(10)  # the first save goes at once
    await wait_until(lambda: len(store.saves) == 1)
    gov.reset_limit(12)  # the next waits for the interval
    await anyio.sleep(1)
    # aclose() need not yield after cancelling the pending save (an uncontended lock, a
    # store that answers at once; trio may also just run its caller first): the caller's
    # next decision can come before the cancelled save's task has woken.
    assert isinstance(gov._persistence, GovernorPersistence)
    gov._persistence._lock = anyio.Lock(fast_acquire=True)
    await gov.aclose()  # cancels that pending save and saves 12 now
    gov.reset_limit(14)
    await anyio.sleep(10)  # virtual time: well past the interval
    saved = await store.load("prod", "api")
    assert saved is not None and saved.limit == 14


class HangingStore(MemoryStore):
    async def load(self, environment: str, name: str) -> LearnedState | None:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


async def test_acquire_timeout_covers_the_first_load() -> None:
    gov = Governor("api", environment="prod", store=HangingStore())
    start = anyio.current_time()
    with anyio.move_on_after(60), pytest.raises(TimeoutError):
        await gov.acquire(timeout_s=2)
    assert anyio.current_time() - start == pytest.approx(2)
    assert gov.inflight == 0 and gov.waiting == 0


def test_pending_saves_on_asyncio_are_timers_not_tasks() -> None:
    """A governor with unsaved changes waits for its save on a timer: no task per governor."""
    import asyncio

    async def main() -> None:
        store = CountingStore()
        govs = [
            Governor(f"g{i}", AIMD(), environment="prod", store=store, save_interval_s=3600)
            for i in range(50)
        ]
        baseline = len(asyncio.all_tasks())
        for gov in govs:
            async with gov:  # loads what was learned (nothing)
                pass
            gov.reset_limit(8)  # a decision: the first save runs at once
        await wait_until(lambda: len(store.saves) == 50)
        for gov in govs:
            gov.reset_limit(9)  # the next one waits for the interval
        assert len(asyncio.all_tasks()) == baseline  # 50 saves pending, none of them a task
        for gov in govs:
            await gov.aclose()  # flushes: the pending save is written now, its timer cancelled
        assert len(store.saves) == 100 and {s.limit for s in store.saves[50:]} == {9}
        assert len(asyncio.all_tasks()) == baseline

    asyncio.run(main())


def test_a_save_left_pending_by_an_ended_loop_is_scheduled_again_on_the_next() -> None:
    """A loop that ends with a save pending (its timer never fires) does not stop the next loop's saves."""
    store = CountingStore()
    gov = Governor("api", AIMD(), environment="prod", store=store, save_interval_s=5.0)

    async def decide(limit: int) -> None:
        async with gov:  # loads what was learned, once
            pass
        gov.reset_limit(limit)

    async def first() -> None:
        await decide(8)  # saved at once
        await anyio.sleep(1.0)
        assert len(store.saves) == 1
        await decide(9)  # waits for the interval: the loop ends first

    async def second() -> None:
        await decide(10)
        await anyio.sleep(10.0)  # virtual time: past the interval
        assert len(store.saves) == 2, "saved by this loop, not only at the exit"
        assert store.saves[-1].limit == 10

    run_virtual(first)
    assert len(store.saves) == 1
    run_virtual(second)
