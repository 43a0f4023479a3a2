"""The reality benchmark's ratios (`benchmarks/_real_method.py`) on made-up goodputs."""

from __future__ import annotations

import importlib.util
import math
import pathlib
from types import ModuleType

import pytest


def _load() -> ModuleType:
    path = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "_real_method.py"
    spec = importlib.util.spec_from_file_location("_real_method", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


method = _load()

# Three repetitions of a sweep; 12 and 16 are within the noise of each other.
SWEEP = {8: [100.0, 104.0, 96.0], 12: [150.0, 140.0, 160.0], 16: [152.0, 138.0, 149.0]}


def test_best_fixed_is_the_limit_with_the_best_median() -> None:
    assert method.best_fixed(SWEEP) == 12  # medians 100, 150, 149
    assert method.best_fixed({20: [5.0], 10: [5.0]}) == 10  # a tie goes to the smaller limit
    with pytest.raises(ValueError):
        method.best_fixed({})


def test_best_fixed_leaves_out_limits_that_buy_goodput_with_refusals() -> None:
    # 16 refuses most requests (a wall answering 503 at once, callers retrying): not a limit to choose.
    overload = {8: [0.0, 0.0, 0.0], 12: [0.0, 0.005, 0.02], 16: [0.7, 0.7, 0.69]}
    sweep = {**SWEEP, 16: [170.0, 171.0, 169.0]}
    assert method.best_fixed(sweep) == 16
    assert method.best_fixed(sweep, overload) == 12  # median overload 0.5 %: within 1 %
    # When every limit is over, the best goodput wins as without overload figures.
    assert method.best_fixed(sweep, {c: [0.5] for c in sweep}) == 16


def test_sweep_max_takes_each_repetitions_own_winner() -> None:
    assert method.sweep_max(SWEEP) == [152.0, 140.0, 160.0]
    with pytest.raises(ValueError):
        method.sweep_max({8: [1.0, 2.0], 12: [1.0]})


def test_same_rep_ratios_pair_repetitions() -> None:
    assert method.same_rep_ratios([75.0, 140.0, 80.0], [150.0, 140.0, 160.0]) == [0.5, 1.0, 0.5]
    nan = method.same_rep_ratios([1.0], [0.0])
    assert math.isnan(nan[0])
    with pytest.raises(ValueError):
        method.same_rep_ratios([1.0, 2.0], [1.0])


def test_the_winners_curse_and_the_held_out_twin() -> None:
    # A copy of the best limit that measured exactly that limit's median each time scores
    # below 1 against the sweep (the sweep's winner got lucky in some repetitions) and
    # against each repetition's maximum, and exactly 1 against itself held out.
    copy = [150.0, 150.0, 150.0]
    vs_best = method.same_rep_ratios(copy, SWEEP[12])
    vs_max = method.same_rep_ratios(copy, method.sweep_max(SWEEP))
    assert method.summary(vs_best) == (1.0, 150.0 / 160.0)
    assert method.summary(vs_max) == (150.0 / 152.0, 150.0 / 160.0)
    assert method.summary(method.same_rep_ratios(copy, copy)) == (1.0, 1.0)


def test_rotation_moves_every_contender_through_the_order() -> None:
    items = ["a", "b", "c", "d", "e", "f"]
    orders = [method.rotation(items, rep, 3) for rep in range(3)]
    assert orders == [items, ["c", "d", "e", "f", "a", "b"], ["e", "f", "a", "b", "c", "d"]]
    assert [o.index("a") for o in orders] == [0, 4, 2]
    assert method.rotation(items, 0, 1) == items
    with pytest.raises(ValueError):
        method.rotation(items, 3, 3)
