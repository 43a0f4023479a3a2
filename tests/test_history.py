"""The decision history: compact records, the same decisions read back, memory bounded."""

from __future__ import annotations

import copy
import dataclasses
import gc
import math
import pathlib
import pickle
import random
import tracemalloc

import pytest

from aiogovernor import AIMD, Decision, Governor, Outcome, WindowConfig, WindowSummary
from aiogovernor._history import _REASONS, DecisionHistory
from aiogovernor.limits import Window
from aiogovernor.state import JsonFileStore
from aiogovernor.testing import ManualClock, window


def decision(i: int, *, window: Window | None, old: int = 4, new: int = 5) -> Decision:
    return Decision(
        governor="api",
        environment="prod",
        at=window.end if window is not None else 10.0 + i,  # a window closes with its decision
        old_limit=old,
        new_limit=new,
        policy_limit=new + 0.25,
        reason=f"step {i % 3}",
        window=window,
        confidence=window.confidence if window is not None else 1.0,
    )


def test_kept_decisions_read_back_with_their_figures_the_latest_whole() -> None:
    history = DecisionHistory(3, governor="api", environment="prod")
    assert history.decisions() == () and len(history) == 0
    made = []
    for i in range(5):
        w = window(
            ok=7 + i,
            overload=1,
            error=2,
            stale_overload=3,
            ignored=4,
            latency_s=0.02 * (i + 1),
            start=9.9 + i - 0.1 * i,
            duration_s=0.1 * (i + 1),
        )
        made.append(decision(i, window=w))
        history.append(made[-1])
    kept = history.decisions()
    assert len(kept) == len(history) == 3  # bounded, oldest first
    assert kept[-1] is made[-1] is history.last  # the latest is the very object listeners got
    for got, want in zip(kept[:-1], made[2:4], strict=True):
        assert isinstance(got.window, WindowSummary) and isinstance(want.window, Window)
        assert (got.at, got.old_limit, got.new_limit, got.reason) == (
            want.at,
            want.old_limit,
            want.new_limit,
            want.reason,
        )
        # The policy's limit past the new one is kept in single precision.
        assert got.policy_limit == pytest.approx(want.policy_limit, abs=1e-6)
        # The confidence is kept to 1/65 535; the window's times exactly.
        assert got.confidence == pytest.approx(want.confidence, abs=1 / 65535 / 2)
        for name in WindowSummary.__slots__:
            if name == "sized":
                assert got.window.sized is bool(want.window.bands)
            else:
                assert getattr(got.window, name) == getattr(want.window, name), name
        for name in ("count", "overload_rate", "error_rate"):
            assert getattr(got.window, name) == getattr(want.window, name), name
        assert got.describe() == want.describe()


def test_decisions_without_a_window_and_big_numbers() -> None:
    history = DecisionHistory(4, governor="api", environment="prod")
    history.append(decision(0, window=None, old=3, new=70_000))  # past two bytes
    history.append(decision(1, window=None, old=70_000, new=2**70))  # past eight bytes
    history.append(decision(2, window=None))
    first, second, _ = history.decisions()
    assert first.window is None and (first.old_limit, first.new_limit) == (3, 70_000)
    assert (second.old_limit, second.new_limit) == (70_000, 2**70)


def test_rare_counts_are_kept_once_a_window_has_one_and_widen_past_a_byte() -> None:
    """Errors, ignored calls and stale overloads read back exactly, before and after the first one."""
    history = DecisionHistory(5, governor="api", environment="prod")
    plain = [window(ok=10, start=float(i), duration_s=1.0, limit=4) for i in range(2)]
    rare = window(ok=10, error=300, ignored=2, stale_overload=70_000, start=2.0, duration_s=1.0, limit=4)
    after = window(ok=10, start=3.0, duration_s=1.0, limit=4)
    made = [decision(i, window=w, old=4, new=4) for i, w in enumerate((*plain, rare, after))]
    made.append(decision(4, window=None, old=4, new=4))
    for d in made:
        history.append(d)
    for got, want in zip(history.decisions(), made, strict=True):
        if want.window is None:
            assert got.window is None
            continue
        assert got.window is not None
        assert (got.window.error, got.window.ignored, got.window.stale_overload) == (
            want.window.error,
            want.window.ignored,
            want.window.stale_overload,
        )
    # The record's overload count includes the stale ones.
    text, count = history.entries(0, offset=0.0)
    assert count == 5 and ",70000," in text


def test_a_governor_with_a_full_history_stays_small() -> None:
    """A full history of 100 decisions costs ~4.5 KB (whole ones cost ~50 KB), and no more after 400."""
    clock = ManualClock()
    config = WindowConfig(min_samples=1, min_duration_s=0.0, latency_multiple=0.0)

    def run(gov: Governor, n: int) -> None:
        for i in range(n):
            permit = gov.try_acquire()
            assert permit is not None
            clock.advance(0.01 + 0.001 * (i % 3))
            permit.release(Outcome.OVERLOAD if i % 50 == 0 else Outcome.OK)

    def weigh(n: int) -> float:
        gc.collect()
        tracemalloc.start()
        try:
            govs = [
                Governor(f"g{i}", AIMD(max_limit=8), clock=clock, window=config, store=None) for i in range(5)
            ]
            before = tracemalloc.get_traced_memory()[0]
            for gov in govs:
                run(gov, n)
            assert all(gov.stats().decision_count == n for gov in govs)
            gc.collect()
            return (tracemalloc.get_traced_memory()[0] - before) / len(govs)
        finally:
            tracemalloc.stop()

    hundred, more = weigh(100), weigh(400)
    # ~4.5 KB, the history object itself included (made at the first decision); ~9 KB with rows
    # of 71 B, ~50 KB with whole decisions and windows.
    assert hundred < 5_800
    assert more < hundred + 500  # bounded: the rows are reused


def test_a_default_governor_weighs_under_8_kb_after_100_decisions(tmp_path: pathlib.Path) -> None:
    """The default policy and the default (JSON file) store, 100 decisions kept: at most 8 000 bytes each."""
    clock = ManualClock()
    config = WindowConfig(min_samples=10, min_duration_s=0.0, latency_multiple=0.0)
    store = JsonFileStore(tmp_path)

    def run(gov: Governor) -> None:  # windows of 10 calls, an overload now and then
        while gov.stats().decision_count < 100:
            permits = [gov.try_acquire() for _ in range(4)]
            clock.advance(0.011)
            for j, permit in enumerate(permits):
                if permit is not None:
                    permit.release(Outcome.OVERLOAD if j == 0 and clock() % 3 < 0.011 else Outcome.OK)

    def weigh(n: int) -> float:
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            govs = [Governor(f"g{i}", clock=clock, window=config, store=store) for i in range(n)]
            for gov in govs:
                run(gov)
            gc.collect()
            return (tracemalloc.get_traced_memory()[0] - before) / n
        finally:
            tracemalloc.stop()

    weigh(2)  # the first governors import what saving needs: not a governor's weight
    assert weigh(30) <= 8_000


def made_decision(
    at: float, old: int, new: int, policy_limit: float, reason: str, w: Window | None, confidence: float
) -> Decision:
    return Decision(
        governor="api",
        environment="prod",
        at=at,
        old_limit=old,
        new_limit=new,
        policy_limit=policy_limit,
        reason=reason,
        window=w,
        confidence=confidence,
    )


def test_rows_told_from_their_neighbours_read_back_exactly() -> None:
    """Old limits, window limits and starts are stored only when the neighbouring rows do not tell them."""
    rng = random.Random(7)
    history = DecisionHistory(7, governor="api", environment="prod")
    made: list[Decision] = []
    at, limit, lagged = 100.0, 4, False
    for i in range(60):
        old = limit if rng.random() > 0.1 else limit + 3  # now and then the limit moved in between
        limit = max(1, old + rng.choice((-2, -1, 0, 1, 1, 300)))
        policy_limit = limit + rng.choice((0.0, 0.25, 0.1))
        if rng.random() < 0.15:  # a reset: no window, and the window stays open
            made.append(made_decision(at + 0.01, old, limit, policy_limit, "reset", None, 1.0))
            at += 0.01
            continue
        start = at if rng.random() > 0.1 else at + 0.5  # now and then a window reopened later
        end = start + rng.uniform(0.01, 2.0)
        w = window(
            ok=rng.randrange(0, 400),
            overload=rng.randrange(0, 3),
            error=rng.randrange(0, 2),
            ignored=rng.randrange(0, 2),
            stale_overload=rng.randrange(0, 2),
            latency_s=rng.uniform(0.001, 0.2),
            start=start,
            duration_s=end - start,
            limit=old if rng.random() > 0.1 else old + 1,
            peak_inflight=rng.randrange(0, 300),
        )
        lagged = lagged or i > 30
        if lagged:  # the loop's lag and a call size reported from the middle on
            w = dataclasses.replace(w, loop_lag_s=rng.uniform(0, 0.01), loop_pause_s=0.001, size_mean=2.5)
        made.append(made_decision(w.end, old, limit, policy_limit, f"step {i % 5}", w, w.confidence))
        at = w.end
    for i, d in enumerate(made):
        history.append(d)
        kept = history.decisions()
        assert len(kept) == min(i + 1, 7)
        for got, want in zip(kept[:-1], made[i + 1 - len(kept) : i], strict=True):
            assert (got.at, got.old_limit, got.new_limit, got.reason) == (
                want.at,
                want.old_limit,
                want.new_limit,
                want.reason,
            )
            # The policy's limit past the new one is kept in single precision.
            assert got.policy_limit == pytest.approx(want.policy_limit, abs=1e-6)
            assert got.confidence == pytest.approx(want.confidence, abs=1 / 65535 / 2)
            if want.window is None:
                assert got.window is None
                continue
            assert got.window is not None
            for name in WindowSummary.__slots__:
                value = getattr(got.window, name)
                if name == "sized":
                    assert value is False
                elif name in ("size_mean", "loop_lag_s", "loop_pause_s"):  # single precision
                    assert value == pytest.approx(getattr(want.window, name), rel=1e-6), name
                else:
                    assert value == getattr(want.window, name), name


def test_reason_texts_are_kept_once_while_in_use() -> None:
    """A policy whose texts carry numbers does not grow the shared table past the texts kept."""
    gc.collect()
    history = DecisionHistory(10, governor="api", environment="prod")
    history.append(decision(0, window=None))  # releases what collected histories left
    before = len(_REASONS)
    for i in range(1000):
        history.append(dataclasses.replace(decision(i, window=None), reason=f"latency {i / 7:.3f}x"))
        assert len(_REASONS) <= before + 10
    twin = DecisionHistory(10, governor="api", environment="prod")
    twin.append(dataclasses.replace(decision(0, window=None), reason="latency 142.714x"))
    assert len(_REASONS) <= before + 10  # the same text: one code for both histories
    assert twin.decisions()[0].reason == history.decisions()[-1].reason == "latency 142.714x"
    del history, twin
    gc.collect()
    DecisionHistory(1, governor="api", environment="prod").append(decision(0, window=None))
    assert len(_REASONS) <= before


def test_a_copied_history_keeps_its_own_reasons() -> None:
    history = DecisionHistory(3, governor="api", environment="prod")
    for i in range(5):
        history.append(dataclasses.replace(decision(i, window=window(start=float(i))), reason=f"copied {i}"))
    copied = copy.deepcopy(history)
    assert copied.decisions() == history.decisions()
    del history
    gc.collect()
    DecisionHistory(1, governor="api", environment="prod").append(decision(0, window=None))
    assert [d.reason for d in copied.decisions()] == ["copied 2", "copied 3", "copied 4"]
    restored = pickle.loads(pickle.dumps(copied))
    assert restored.decisions() == copied.decisions()


def test_a_confidence_outside_zero_to_one_reads_back_as_the_nearer_end() -> None:
    history = DecisionHistory(4, governor="api", environment="prod")
    made = [
        dataclasses.replace(decision(i, window=None), confidence=c)
        for i, c in enumerate((1.5, -0.2, math.nan))
    ]
    made.append(decision(3, window=None))  # the latest is kept whole
    for d in made:
        history.append(d)
    assert [d.confidence for d in history.decisions()[:3]] == [1.0, 0.0, 0.0]
