"""What the metrics exporters read from the core: live governors, window listeners, decisions, logs."""

from __future__ import annotations

import gc
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from aiogovernor import AIMD, Fixed, Governor, Outcome, WindowConfig, live_governors
from aiogovernor.limits import Window
from aiogovernor.metrics import LatencyHistograms
from aiogovernor.testing import ManualClock


def drive(
    gov: Governor, clock: ManualClock, latencies_s: Sequence[float], outcome: Outcome = Outcome.OK
) -> None:
    """One unit of work per latency, one after another, on a manual clock (no event loop)."""
    for latency in latencies_s:
        permit = gov.try_acquire()
        assert permit is not None
        clock.advance(latency)
        permit.release(outcome)


def test_live_governors_holds_governors_weakly() -> None:
    gov = Governor("registry-weak", store=None)
    assert gov in live_governors()
    derived = gov.derive("registry-derived")
    assert derived in live_governors()
    del gov, derived
    gc.collect()
    assert not [g for g in live_governors() if g.name.startswith("registry-")]


def test_window_listeners_get_each_windows_sorted_successful_latencies() -> None:
    clock = ManualClock()
    gov = Governor("windows", AIMD(initial_limit=4), clock=clock, store=None)
    seen: list[tuple[Window, list[float]]] = []
    gov.add_window_listener(lambda w, lat: seen.append((w, list(lat))))
    drive(gov, clock, [0.03, 0.01, 0.02] * 5)
    drive(gov, clock, [0.5], Outcome.ERROR)
    drive(gov, clock, [0.02] * 10)
    assert seen
    for window, latencies in seen:
        assert latencies == sorted(latencies)
        assert len(latencies) == window.ok
    assert 0.5 not in [x for _, lat in seen for x in lat]  # failures are not successful latencies
    assert gov.stats().counts["ok"] == 25


def test_a_failing_window_listener_is_logged_and_the_gate_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    gov = Governor("bad-listener", AIMD(initial_limit=4), clock=clock, store=None)

    def broken(window: Window, latencies: Sequence[float], /) -> None:
        raise RuntimeError("listener bug")

    gov.add_window_listener(broken)
    with caplog.at_level(logging.ERROR, logger="aiogovernor"):
        drive(gov, clock, [0.01] * 30)
    assert "window listener" in caplog.text
    assert gov.inflight == 0 and gov.stats().decision_count >= 1
    gov.remove_window_listener(broken)
    with pytest.raises(ValueError):
        gov.remove_window_listener(broken)
    with pytest.raises(TypeError):
        gov.add_window_listener(42)  # type: ignore[arg-type]


def test_decisions_by_direction_add_up_to_the_decisions() -> None:
    clock = ManualClock()
    gov = Governor("directions", AIMD(initial_limit=4, min_limit=1), clock=clock, store=None)
    directions: list[str] = []
    gov.add_listener(
        lambda d: directions.append("up" if d.new_limit > d.old_limit else "down" if d.changed else "hold")
    )
    drive(gov, clock, [0.01] * 40)
    drive(gov, clock, [0.01], Outcome.OVERLOAD)
    gov.reset_limit(gov.limit)  # a hold
    stats = gov.stats()
    counts = dict(stats.decisions_by_direction)
    assert counts == {d: directions.count(d) for d in ("up", "down", "hold")}
    assert sum(counts.values()) == stats.decision_count
    assert counts["down"] >= 1 and counts["hold"] >= 1


def test_decisions_are_logged_with_structured_fields() -> None:
    records: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("aiogovernor")
    handler, level = Capture(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        clock = ManualClock()
        gov = Governor("logged", AIMD(initial_limit=4), environment="staging", clock=clock, store=None)
        drive(gov, clock, [0.01] * 12)
        drive(gov, clock, [0.01], Outcome.OVERLOAD)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    decisions = [r for r in records if hasattr(r, "reason")]
    assert len(decisions) == gov.stats().decision_count
    for record, decision in zip(decisions, gov.decisions, strict=True):
        fields = vars(record)  # what a JSON formatter or structlog's stdlib bridge reads
        assert fields["governor"] == "logged"
        assert fields["environment"] == "staging"
        assert (fields["old"], fields["new"]) == (decision.old_limit, decision.new_limit)
        assert fields["reason"] == decision.reason
        assert record.getMessage() == decision.describe()  # the message stays for people
    last = vars(decisions[-1])
    assert last["new"] < last["old"]


def test_latency_histograms_fold_every_window_exactly() -> None:
    hist = LatencyHistograms([0.01, 0.1, 1.0])
    clock = ManualClock()
    gov = Governor("histogram", AIMD(initial_limit=4), clock=clock, store=None)
    folded: list[float] = []
    gov.add_window_listener(lambda w, lat: folded.extend(lat))
    try:
        drive(gov, clock, [0.005, 0.05, 0.5, 5.0, 0.01] * 6)
        drive(gov, clock, [0.2], Outcome.ERROR)
        state = hist.get(gov)
        assert state is not None and folded
        counts, total, count = state
        assert counts == tuple(sum(x <= bound for x in folded) for bound in (0.01, 0.1, 1.0))
        assert count == len(folded)
        assert total == pytest.approx(sum(folded))
    finally:
        hist.close()
    drive(gov, clock, [0.01] * 20)
    assert hist.get(gov) == state  # kept, no longer fed


@pytest.mark.parametrize("bad", [[], [0.1, 0.1], [0.2, 0.1], [-1.0], [float("inf")], ["1"]])
def test_latency_buckets_are_validated(bad: list[float]) -> None:
    with pytest.raises(ValueError):
        LatencyHistograms(bad)


def test_the_docs_json_formatter_shows_the_decision_fields() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "metrics.md").read_text()
    match = re.search(r"## Structured decision logs.*?```python\n(.*?)```", text, re.S)
    assert match is not None
    formatter_code = match.group(1).split("\n\nhandler")[0]  # the class, not the global wiring
    namespace: dict[str, Any] = {}
    exec(compile(formatter_code, "<docs/metrics.md>", "exec"), namespace)
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Capture()
    handler.setFormatter(namespace["JsonLines"]())
    logger = logging.getLogger("aiogovernor")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        clock = ManualClock()
        gov = Governor("json", AIMD(initial_limit=4), environment="docs", clock=clock, store=None)
        drive(gov, clock, [0.01] * 12)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    first = json.loads(lines[0])
    decision = gov.decisions[0]
    assert first == {
        "message": decision.describe(),
        "governor": "json",
        "environment": "docs",
        "old": decision.old_limit,
        "new": decision.new_limit,
        "reason": decision.reason,
    }


def test_latency_histograms_count_every_call_of_a_window_past_max_samples() -> None:
    hist = LatencyHistograms([0.01, 0.1, 1.0])
    clock = ManualClock()
    window = WindowConfig(min_samples=1, max_samples=10, min_duration_s=1.0)
    gov = Governor("histogram-thinned", Fixed(4), clock=clock, window=window, store=None)
    seen: list[tuple[int, int]] = []
    gov.add_window_listener(lambda w, lat: seen.append((w.ok, len(lat))))
    try:
        drive(gov, clock, [0.001, 0.02, 0.05] * 400)  # about 1 s a window
        state = hist.get(gov)
        assert state is not None and seen
        counts, total, count = state
        assert count == sum(ok for ok, _ in seen)  # every call, not the subsample's
        assert any(kept < ok for ok, kept in seen)  # some window was thinned
        assert counts[2] == count  # every latency is under 1 s
        assert counts[0] == pytest.approx(count / 3, rel=0.1)
        assert total == pytest.approx(count * 0.071 / 3, rel=0.1)
    finally:
        hist.close()
