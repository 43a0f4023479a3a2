"""The decisions a saved record keeps: read from the governor's own history, none lost, small.

A governor's saved record keeps its latest ``state_history_size`` decisions; the
governor's own history (``history_size``) holds fewer by default. The record reads
the decisions still in that history from its rows, and keeps only those it forgot
(and those restored from the store) as text. Checked here against a plain model: every
decision, in order, with the figures the record has always kept.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from pathlib import Path

import anyio
import pytest

from aiogovernor import AIMD, Decision, Governor, Outcome, _persistence
from aiogovernor._persistence import GovernorPersistence
from aiogovernor.state import JsonFileStore, KeptDecision, LearnedState, MemoryStore
from aiogovernor.testing import ManualClock

pytestmark = pytest.mark.anyio

WALL = 1_700_000_000.0  # the wall clock reads the governor's clock plus this


@pytest.fixture(autouse=True)
def _persistence_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIOGOVERNOR_DISABLE_STATE", raising=False)


def expected(decision: Decision) -> KeptDecision:
    """What the record has always kept of ``decision`` (the model)."""
    w = decision.window
    old, new = decision.old_limit, decision.new_limit
    if w is None:
        reason = "reset"
    elif new > old:
        reason = "up"
    elif new < old:
        reason = "overload" if w.overload or w.stale_overload else "down"
    else:
        reason = "hold"
    return KeptDecision(
        round(decision.at + WALL, 3),
        old,
        new,
        reason,
        None if w is None or not w.ok else round(w.latency_p50_s, 6),
        0 if w is None else w.ok,
        0 if w is None else w.overload + w.stale_overload,
        0 if w is None else w.peak_inflight,
    )


def persistence_of(gov: Governor, clock: ManualClock) -> GovernorPersistence:
    persistence = gov._persistence
    assert isinstance(persistence, GovernorPersistence)
    persistence._wall_clock = lambda: clock() + WALL
    return persistence


def decide(gov: Governor, clock: ManualClock, n: int) -> None:
    """``n`` decisions (windows of one sample, an overload now and then, a reset now and then)."""
    for _ in range(n):
        i = gov.stats().decision_count
        if i % 17 == 16:
            gov.reset_limit(3 + i % 4)
            continue
        permit = gov.try_acquire()
        assert permit is not None
        clock.advance(0.01 + 0.001 * (i % 5))
        permit.release(Outcome.OVERLOAD if i % 7 == 6 else Outcome.OK)


def governor(
    store: object, clock: ManualClock, *, history: int, kept: int
) -> tuple[Governor, list[KeptDecision]]:
    gov = Governor(
        "rec",
        AIMD(initial_limit=4),
        clock=clock,
        store=store,  # type: ignore[arg-type]
        history_size=history,
        state_history_size=kept,
    )
    model: list[KeptDecision] = []
    persistence_of(gov, clock)
    gov.add_listener(lambda d: model.append(expected(d)))
    return gov, model


@pytest.mark.parametrize(("history", "kept"), [(5, 12), (12, 5), (1, 3), (3, 450), (100, 1000)])
def test_the_record_keeps_the_latest_decisions_across_the_history_ring(history: int, kept: int) -> None:
    clock = ManualClock(1.0)
    gov, model = governor(MemoryStore(), clock, history=history, kept=kept)
    persistence = persistence_of(gov, clock)
    for step in (1, history - 1, 1, 1, kept, 3 * kept + 7):
        decide(gov, clock, step)
        state = persistence.snapshot()
        assert state.history == tuple(model[-kept:])
        _, entries = persistence._snapshot_parts()
        # The text the JSON file store writes is the record's own text.
        assert json.loads(f"[{entries}]") == [d.to_json() for d in model[-kept:]]


def test_decisions_of_a_restored_record_come_first_and_the_restore_is_not_kept() -> None:
    clock = ManualClock(1.0)
    store = MemoryStore()
    first, model = governor(store, clock, history=4, kept=10)
    decide(first, clock, 13)
    anyio.run(first.aclose)
    saved = anyio.run(store.load, "default", "rec")
    assert saved is not None and saved.history == tuple(model[-10:])
    second, newer = governor(store, clock, history=4, kept=10)
    restored = anyio.run(second.restore)
    # What restore() returns leaves the decisions out: the record keeps them, once.
    assert restored is not None and restored.history == () and restored.limit == saved.limit
    assert second.decisions[-1].reason.startswith("restored learned limit")
    persistence = persistence_of(second, clock)
    assert persistence.snapshot().history == saved.history  # the restore itself is not a kept decision
    for step in (1, 3, 2, 9):
        decide(second, clock, step)
        assert persistence.snapshot().history == (*saved.history, *newer[1:])[-10:]


def test_a_long_record_restored_and_kept_in_compressed_blocks_loses_nothing() -> None:
    clock = ManualClock(1.0)
    store = MemoryStore()
    first, model = governor(store, clock, history=7, kept=350)
    decide(first, clock, 420)  # past the ring, 3 blocks packed, the oldest cut
    anyio.run(first.aclose)
    saved = anyio.run(store.load, "default", "rec")
    assert saved is not None and saved.history == tuple(model[-350:])
    second, newer = governor(store, clock, history=7, kept=350)
    anyio.run(second.restore)  # the restored 350 as one block, older than any
    persistence = persistence_of(second, clock)
    for step in (1, 150, 99, 260):
        decide(second, clock, step)
        assert persistence.snapshot().history == (*saved.history, *newer[1:])[-350:]


async def test_a_json_file_store_saves_the_record_as_text_and_reads_it_back(tmp_path: Path) -> None:
    clock = ManualClock(1.0)
    store = JsonFileStore(tmp_path)
    gov, model = governor(store, clock, history=6, kept=20)
    decide(gov, clock, 31)
    persistence = persistence_of(gov, clock)
    await gov.aclose()
    state = await store.load("default", "rec")
    assert state is not None and state.history == tuple(model[-20:])
    assert state == LearnedState.from_json(json.loads(persistence.snapshot().to_json_text())) or (
        state.history == persistence.snapshot().history
    )


def test_a_thread_gate_keeps_its_decisions_past_its_own_ring() -> None:
    from aiogovernor import sync

    store = MemoryStore()
    gov = sync.Governor("threads", AIMD(initial_limit=4), store=store, state_history_size=150)
    reasons = []
    for i in range(130):
        gov.reset_limit(3 + i % 5)
        reasons.append(3 + i % 5)
    gov.close()
    state = anyio.run(store.load, "default", "threads")
    assert state is not None
    assert [d.new_limit for d in state.history] == reasons
    assert all(d.reason == "reset" for d in state.history)


def kept_bytes(*, store: bool, decisions: int, kept: int = 1000) -> float:
    """Bytes per governor (tracemalloc, 20 governors) after ``decisions`` decisions each."""
    clock = ManualClock(1.0)
    shared = MemoryStore() if store else None
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        govs = [
            Governor(f"m{i}", AIMD(initial_limit=4), clock=clock, store=shared, state_history_size=kept)
            for i in range(20)
        ]
        for gov in govs:
            for _ in range(decisions):
                gov.reset_limit(3 + gov.stats().decision_count % 5)
        gc.collect()
        return (tracemalloc.get_traced_memory()[0] - before) / len(govs)
    finally:
        tracemalloc.stop()


def test_the_record_costs_no_memory_per_decision_the_history_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    # Governors left unsaved by other tests stay in the exit hook's table: its growth is not ours.
    monkeypatch.setattr(_persistence, "_unsaved", {})
    kept_bytes(store=True, decisions=2)  # what the first save-capable governor imports
    # The decisions the governor's history (100) holds cost the record nothing of its own
    # (kept whole, as before, 90 more decisions cost some 14 KB), and the record's
    # bookkeeping is under 1 KB per governor.
    assert kept_bytes(store=True, decisions=100) - kept_bytes(store=True, decisions=10) < 400
    assert kept_bytes(store=True, decisions=100) - kept_bytes(store=False, decisions=100) < 1000
    # Past the history, a forgotten decision is kept as text (~45 B), and no more than the
    # record keeps: 400 decisions with a record of 100 weigh about what 100 do (at most 32
    # texts past the bound are kept before a cut).
    assert kept_bytes(store=True, decisions=400, kept=100) - kept_bytes(store=True, decisions=100) < 45 * 33


async def test_a_store_that_overrides_save_alone_gets_every_save(tmp_path: Path) -> None:
    # A store subclass that wraps `save` (counting, encrypting...) expects every save to come
    # through it: the record's text (`save_record`) is for stores that say so themselves.
    class Counting(JsonFileStore):
        def __init__(self, directory: Path) -> None:
            super().__init__(directory)
            self.saves = 0

        async def save(self, environment: str, name: str, state: LearnedState) -> None:
            self.saves += 1
            await super().save(environment, name, state)

    store = Counting(tmp_path)
    gov = Governor("counted", AIMD(initial_limit=4), store=store)
    gov.reset_limit(3)
    await gov.aclose()
    state = await store.load("default", "counted")
    assert store.saves == 1
    assert state is not None and [d.reason for d in state.history] == ["reset"]
