"""Policies driven by scripted windows: no event loop."""

from __future__ import annotations

import math
from unittest import mock

import pytest

from aiogovernor import AIMD, Fixed, LimitPolicy, ThroughputAIMD
from aiogovernor.limits import default_policy, gate_limit
from aiogovernor.testing import window


class TestAIMD:
    def test_slow_start_doubles_while_limit_bound(self) -> None:
        p = AIMD(initial_limit=4, max_limit=100)
        assert p.update(window(limit=4)).limit == 8
        assert p.update(window(limit=8)).limit == 16
        assert p.in_slow_start

    def test_overload_backs_off_and_ends_slow_start(self) -> None:
        p = AIMD(initial_limit=40, max_limit=100)
        adj = p.update(window(limit=40, ok=9, overload=1))
        assert adj.limit == pytest.approx(36)
        assert "overload" in adj.reason
        assert not p.in_slow_start
        assert p.update(window(limit=36)).limit == pytest.approx(37)

    def test_decrease_is_at_least_one(self) -> None:
        p = AIMD(initial_limit=5, backoff_ratio=0.9)
        assert p.update(window(limit=5, overload=1)).limit == 4  # 4.5 would admit as many

    def test_no_growth_when_not_limit_bound(self) -> None:
        p = AIMD(initial_limit=10, slow_start=False)
        adj = p.update(window(limit=10, peak_inflight=3))
        assert adj.limit == 10
        assert adj.reason == "not limit-bound"

    def test_plain_errors_do_not_move_it(self) -> None:
        p = AIMD(initial_limit=10, slow_start=False)
        assert p.update(window(limit=10, ok=5, error=5, peak_inflight=2)).limit == 10

    def test_stale_overload_is_not_a_new_event(self) -> None:
        p = AIMD(initial_limit=10, slow_start=False)
        assert p.update(window(limit=10, stale_overload=5, peak_inflight=2)).limit == 10

    def test_overload_threshold(self) -> None:
        p = AIMD(initial_limit=10, slow_start=False, overload_threshold=0.2)
        assert p.update(window(limit=10, ok=9, overload=1)).limit == 11
        assert p.update(window(limit=11, ok=7, overload=3)).limit == pytest.approx(9.9)

    def test_bounds_are_respected(self) -> None:
        p = AIMD(initial_limit=3, min_limit=3, max_limit=5)
        assert p.update(window(limit=3, overload=10)).limit == 3
        for _ in range(5):
            p.update(window(limit=5))
        assert p.limit == 5

    def test_probes_up_from_the_floor(self) -> None:
        p = AIMD(initial_limit=1, min_limit=1, slow_start=False, floor_probe_windows=3)
        idle = window(limit=1, ok=0, peak_inflight=0, limit_bound=False)
        assert [p.update(idle).limit for _ in range(3)] == [1, 1, 2]

    def test_reset_clamps_and_leaves_slow_start(self) -> None:
        p = AIMD(max_limit=50)
        p.reset(500)
        assert p.limit == 50
        assert not p.in_slow_start

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"min_limit": 0}, "min_limit"),
            ({"min_limit": 10, "max_limit": 5}, "must not exceed"),
            ({"initial_limit": 500}, "initial_limit"),
            ({"initial_limit": math.nan}, "initial_limit"),
            ({"backoff_ratio": 1.0}, r"backoff_ratio .*\[0.5, 1.0\)"),
            ({"backoff_ratio": 0.4}, "backoff_ratio"),
            ({"increase": 0}, "increase"),
            ({"overload_threshold": 1.0}, "overload_threshold"),
            ({"floor_probe_windows": 0}, "floor_probe_windows"),
            ({"max_limit": 2.5}, "max_limit"),
        ],
    )
    def test_bad_parameters_are_named(self, kwargs: dict[str, object], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            AIMD(**kwargs)  # type: ignore[arg-type]


class TestFixed:
    def test_never_moves(self) -> None:
        p = Fixed(7)
        assert p.update(window(limit=7, overload=10)).limit == 7
        assert p.update(window(limit=7)).limit == 7
        p.reset(100)
        assert p.limit == 7

    def test_rejects_nonpositive(self) -> None:
        with pytest.raises(ValueError, match="limit"):
            Fixed(0)


class TestThroughputAIMD:
    def test_initial_limit_is_twice_the_cores_clamped(self) -> None:
        with mock.patch("os.cpu_count", return_value=8):
            assert ThroughputAIMD().limit == 16
            assert ThroughputAIMD(max_limit=10).limit == 10

    def test_rules_in_order(self) -> None:
        p = ThroughputAIMD(initial_limit=10)
        assert p.update(window(limit=10, ok=100)).reason.startswith("first window")
        # throughput up > 5 %: x1.2
        assert p.update(window(limit=10, ok=110)).limit == pytest.approx(12)
        # stable and failure < 3 %: x1.1
        assert p.update(window(limit=12, ok=111)).limit == pytest.approx(13.2)
        # throughput down > 15 %: x0.85
        assert p.update(window(limit=13, ok=90)).limit == pytest.approx(13.2 * 0.85)
        # failure rate > 5 %: x0.7
        assert p.update(window(limit=11, ok=90, error=10)).limit == pytest.approx(13.2 * 0.85 * 0.7)

    def test_it_learns_from_its_own_history(self) -> None:
        # The seed never stored the previous throughput, so rule 2 and 3 never fired.
        p = ThroughputAIMD(initial_limit=10)
        p.update(window(limit=10, ok=100))
        p.update(window(limit=10, ok=100))
        down = p.update(window(limit=11, ok=50))
        assert "throughput down" in down.reason

    @pytest.mark.parametrize("start", [1, 2, 3, 4])
    def test_integer_progress_on_small_limits(self, start: int) -> None:
        p = ThroughputAIMD(initial_limit=start, max_limit=100)
        p.update(window(limit=start, ok=100))
        grown = p.update(window(limit=start, ok=100))
        assert gate_limit(grown.limit) == start + 1
        shrunk = p.update(window(limit=start + 1, ok=90, error=10))
        assert gate_limit(shrunk.limit) <= start

    def test_no_growth_when_not_limit_bound(self) -> None:
        p = ThroughputAIMD(initial_limit=10)
        p.update(window(limit=10, ok=100))
        assert p.update(window(limit=10, ok=150, peak_inflight=2)).limit == 10


def test_policies_satisfy_the_protocol() -> None:
    for policy in (AIMD(), Fixed(3), ThroughputAIMD(), default_policy()):
        assert isinstance(policy, LimitPolicy)
        assert policy.min_limit <= policy.limit <= policy.max_limit


def test_gate_limit_floors_with_a_minimum() -> None:
    assert gate_limit(9.99) == 9
    assert gate_limit(10.0 - 1e-12) == 10
    assert gate_limit(0.3) == 1
    assert gate_limit(2.5, 3) == 3


def test_stale_overload_holds_every_policy() -> None:
    stale = window(limit=10, ok=5, stale_overload=5)
    for policy in (AIMD(initial_limit=10, slow_start=False), ThroughputAIMD(initial_limit=10)):
        policy.update(window(limit=10, ok=100))
        before = policy.limit
        assert policy.update(stale).limit == before, policy
