"""The feedback loop on its own: scripted samples and explicit times, no event loop at all."""

from __future__ import annotations

import logging

import pytest

from aiogovernor import AIMD, Decision, Fixed, Outcome, WindowConfig
from aiogovernor._feedback import Feedback

WINDOW = WindowConfig(min_duration_s=1.0, min_samples=4, max_samples=100)


class Gate:
    """What a gate does with decisions: takes the new limit, remembers the order of calls."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.calls: list[str] = []

    def apply(self, decision: Decision) -> None:
        self.calls.append(f"apply {decision.old_limit}->{decision.new_limit}")
        self.limit = decision.new_limit


def make(policy: AIMD | Fixed, gate: Gate, history_size: int = 100) -> Feedback:
    return Feedback(
        policy, governor="api", environment="prod", window=WINDOW, history_size=history_size, apply=gate.apply
    )


def test_a_window_of_samples_becomes_one_decision_applied_before_listeners_hear_of_it() -> None:
    gate = Gate(4)
    fb = make(AIMD(initial_limit=4, max_limit=64, slow_start=False), gate)
    fb.add_listener(lambda d: gate.calls.append(f"listener sees gate at {gate.limit}"))
    assert fb.close_at == float("-inf")  # no window opens before the first sample
    due = [fb.sample(0.0, 0.1 * i + 0.5, Outcome.OK, True, gate.limit) for i in range(4)]
    assert due == [False, False, False, False]  # 4 samples, but the window is not 1 s old yet
    assert fb.close_at == 1.0
    assert fb.sample(0.0, 1.2, Outcome.OK, True, gate.limit)
    decision = fb.close(1.2, gate.limit, peak_inflight=4, saw_waiters=True)
    assert decision.new_limit == gate.limit > 4  # the window was limit-bound: additive increase
    assert gate.calls == [f"apply 4->{gate.limit}", f"listener sees gate at {gate.limit}"]
    assert fb.history == (decision,)
    assert fb.last_decision is decision and fb.decision_count == 1
    assert fb.last_window is decision.window and decision.window is not None
    assert decision.window.count == 5
    assert decision.governor == "api" and decision.environment == "prod" and decision.at == 1.2
    assert fb.close_at == pytest.approx(2.2)  # the next window opened at the close


def test_a_fresh_overload_closes_the_window_at_once_and_the_policy_decreases() -> None:
    gate = Gate(10)
    fb = make(AIMD(initial_limit=10, max_limit=64), gate)
    assert not fb.sample(0.0, 0.1, Outcome.OK, True, gate.limit)
    assert fb.sample(0.0, 0.2, Outcome.OVERLOAD, True, gate.limit)
    decision = fb.close(0.2, gate.limit, peak_inflight=10, saw_waiters=False)
    assert decision.new_limit < 10 == decision.old_limit
    assert fb.counts() == {"ok": 1, "overload": 1, "error": 0, "ignored": 0}


def test_the_fast_path_appends_latencies_and_asks_due() -> None:
    gate = Gate(2)
    fb = make(Fixed(2), gate)
    fb.ok_latencies.append(0.1)
    assert not fb.due(5.0, 5.1, gate.limit)  # opens the first window at the sample's start
    assert fb.close_at == 6.0
    fb.ok_latencies.append(0.1)
    assert fb.due(5.0, 6.5, gate.limit)  # min(min_samples, limit) samples and the duration passed
    assert fb.counts()["ok"] == 2
    fb.close(6.5, gate.limit, peak_inflight=1, saw_waiters=False)
    assert fb.ok_latencies == [] and fb.counts()["ok"] == 2  # same list, cleared; counts kept


def test_reset_is_a_decision_clamped_to_the_policy_bounds() -> None:
    gate = Gate(4)
    fb = make(AIMD(initial_limit=4, max_limit=64), gate, history_size=2)
    seen: list[Decision] = []
    fb.add_listener(seen.append)
    for limit in (500.0, 8.0, 16.0):
        fb.reset(limit, f"to {limit:g}", 0.0, gate.limit)
    assert gate.limit == 16
    assert [d.new_limit for d in seen] == [64, 8, 16]
    assert [d.reason for d in fb.history] == ["to 8", "to 16"]  # the history is bounded
    assert fb.decision_count == 3
    fb.remove_listener(seen.append)
    with pytest.raises(ValueError):
        fb.remove_listener(seen.append)


def test_a_failing_listener_is_logged_and_the_others_still_hear(caplog: pytest.LogCaptureFixture) -> None:
    gate = Gate(4)
    fb = make(Fixed(4), gate)
    heard: list[int] = []

    def broken(decision: Decision) -> None:
        raise RuntimeError("boom")

    fb.add_listener(broken)
    fb.add_listener(lambda d: heard.append(d.new_limit))
    with caplog.at_level(logging.ERROR, logger="aiogovernor"):
        fb.reset(4, "hand", 0.0, gate.limit)
    assert heard == [4]
    assert "decision listener" in caplog.text
    with pytest.raises(TypeError, match="callable"):
        fb.add_listener(42)  # type: ignore[arg-type]


def test_bad_history_size_is_refused() -> None:
    with pytest.raises(ValueError, match="history_size"):
        make(Fixed(1), Gate(1), history_size=0)
