"""AdaptiveChunker: convergence from both sides, small sizes not stuck, bounds, bad input. No event loop."""

from __future__ import annotations

import pytest

from aiogovernor import AdaptiveChunker
from aiogovernor.testing import ManualClock


def settle(chunker: AdaptiveChunker, cost_per_item_s: float, calls: int = 300) -> list[int]:
    """Feed calls whose duration is size × cost; return the sizes it went through."""
    sizes = [chunker.size]
    for _ in range(calls):
        chunker.record(chunker.size, chunker.size * cost_per_item_s)
        sizes.append(chunker.size)
    return sizes


def in_band(chunker: AdaptiveChunker, cost_per_item_s: float) -> bool:
    duration = chunker.size * cost_per_item_s
    return abs(duration - chunker.target_duration_s) <= 0.2 * chunker.target_duration_s


@pytest.mark.parametrize("start", [1, 2, 3, 4, 5000])
def test_converges_into_the_band_from_too_small_and_too_large(start: int) -> None:
    chunker = AdaptiveChunker(initial_size=start, max_size=10_000)
    sizes = settle(chunker, cost_per_item_s=0.002)  # the target (0.2 s) is 100 items
    assert in_band(chunker, 0.002), sizes[-5:]
    assert sizes[-1] == sizes[-50], "it settles instead of oscillating"


def test_growth_doubles_from_far_below_and_settles_on_the_target_not_the_band_edge() -> None:
    # A batch API: 20 ms per call plus 1 ms per item; the target (0.2 s) is 180 items.
    chunker = AdaptiveChunker()
    sizes = [chunker.size]
    for _ in range(60):
        duration = 0.02 + 0.001 * chunker.size
        assert duration <= 0.2, "growing never overshoots a cost affine in the size"
        chunker.record(chunker.size, duration)
        if chunker.size != sizes[-1]:
            sizes.append(chunker.size)
    # A slow start (doubling every min_samples calls while a call takes at most half the
    # target), then one step onto the target. With `rate` (0.3) on the way up too it took
    # 13 steps and stopped at 148 items (0.168 s), near the band's lower edge.
    assert sizes == [1, 2, 4, 8, 16, 32, 64, 128, 173], sizes
    assert 0.02 + 0.001 * sizes[-1] >= 0.95 * 0.2


def test_a_step_down_goes_only_rate_of_the_way() -> None:
    # Twice the target: (1/2) ** 0.3 = 0.81, not a halving (a queue's wait is not the chunk's).
    chunker = AdaptiveChunker(initial_size=100)
    for _ in range(3):
        chunker.record(100, 0.4)
    assert chunker.size == 81
    steep = AdaptiveChunker(initial_size=100, rate=1.0)
    for _ in range(3):
        steep.record(100, 0.4)
    assert steep.size == 50


@pytest.mark.parametrize("start", [2, 3, 4])
def test_small_sizes_shrink_to_one_when_one_item_is_already_too_slow(start: int) -> None:
    # The seed's linear rule truncated to an integer could never shrink 2 or 3.
    chunker = AdaptiveChunker(initial_size=start)
    settle(chunker, cost_per_item_s=0.3, calls=20)
    assert chunker.size == 1


def test_a_size_only_a_little_too_slow_still_steps_down_by_one() -> None:
    chunker = AdaptiveChunker(initial_size=4)
    for _ in range(3):
        chunker.record(4, 0.25 * 1.3)  # 30 % over: outside the band, factor rounds back to 4
    assert chunker.size == 3


def test_each_step_is_at_most_a_doubling_or_a_halving() -> None:
    chunker = AdaptiveChunker(initial_size=64, max_size=10_000)
    for duration, expected in ((0.0, 128), (1000.0, 64)):
        for _ in range(3):
            chunker.record(chunker.size, duration)
        assert chunker.size == expected


def test_needs_min_samples_and_holds_inside_the_band() -> None:
    chunker = AdaptiveChunker(initial_size=10, min_samples=3)
    chunker.record(10, 1.0)
    chunker.record(10, 1.0)
    assert chunker.size == 10
    chunker.record(10, 1.0)
    assert chunker.size < 10
    held = AdaptiveChunker(initial_size=10)
    for d in (0.17, 0.23, 0.2, 0.21):
        held.record(10, d)
    assert (held.size, held.changes) == (10, 0)


def test_calls_at_an_old_size_are_ignored() -> None:
    chunker = AdaptiveChunker(initial_size=10)
    for _ in range(3):
        chunker.record(10, 0.01)
    assert chunker.size == 20
    for _ in range(5):
        chunker.record(10, 5.0)  # stragglers started before the change
    assert chunker.size == 20 and chunker.mean_duration_s() is None


def test_bounds_hold() -> None:
    chunker = AdaptiveChunker(initial_size=5, min_size=3, max_size=8)
    settle(chunker, 1e-6, calls=30)
    assert chunker.size == 8
    settle(chunker, 10.0, calls=30)
    assert chunker.size == 3


def test_measure_reads_the_injected_clock() -> None:
    clock = ManualClock()
    chunker = AdaptiveChunker(initial_size=10, min_samples=1, window_size=1, clock=clock)
    with chunker.measure(10):
        clock.advance(2.0)
    assert chunker.size == 5  # 10× over target: halved
    with pytest.raises(TimeoutError), chunker.measure(5):
        clock.advance(2.0)
        raise TimeoutError
    assert chunker.size == 3  # a timed-out call counts: it was too big
    with pytest.raises(KeyError), chunker.measure(3):
        clock.advance(50.0)
        raise KeyError
    assert chunker.size == 3  # other failures say nothing about duration


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_size": 10, "max_size": 5}, "min_size"),
        ({"min_size": 0}, "min_size"),
        ({"initial_size": 50, "max_size": 10}, "initial_size"),
        ({"target_duration_s": 0.0}, "target_duration_s"),
        ({"target_duration_s": -1.0}, "target_duration_s"),
        ({"rate": 0.0}, "rate"),
        ({"rate": 1.5}, "rate"),
        ({"tolerance": 1.0}, "tolerance"),
        ({"min_samples": 0}, "min_samples"),
        ({"min_samples": 5, "window_size": 3}, "window_size"),
    ],
)
def test_bad_config_is_refused_by_name(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AdaptiveChunker(**kwargs)  # type: ignore[arg-type]


def test_bad_records_and_clock_are_refused() -> None:
    chunker = AdaptiveChunker()
    with pytest.raises(ValueError, match="duration_s"):
        chunker.record(1, -0.1)
    with pytest.raises(ValueError, match="size"):
        chunker.record(0, 0.1)
    with pytest.raises(TypeError, match="clock"):
        AdaptiveChunker(clock=3.0)  # type: ignore[arg-type]
