"""One window's close, end to end, by the window's size: µs, and its ratio to a bare sort.

A close (`Feedback.close`: the window's figures, the policy's update, the decision applied and
kept in the history) is the feedback loop's cost per window; the gate and `governed_map` pay
it once per ``max_samples`` calls (1 000 by default). Each round closes windows of 10, 100,
1 000 and 10 000 successful samples (fresh floats from a seeded exponential distribution, in
arrival order, a few loop-lag readings each) under `Fixed` (the window and the decision alone)
and under the default policy, and times one ``sorted()`` of the same latencies beside them
(the floor any exact percentile needs, and a yardstick for the machine's speed at that
moment). CPU time of the thread; median and worst of the rounds.

    .venv/bin/python benchmarks/window_close.py [--rounds 15] [--baseline OTHER_TREE/src]

``--baseline`` compares two trees in one run (this tree's ``src`` and another's, a checkout
of the commit before a change), each in a process of its own, the two processes taking
turns one round each (see ``_turns.py``).
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import _turns

from aiogovernor import Fixed, WindowConfig
from aiogovernor._feedback import Feedback
from aiogovernor.limits import LatencyAIMD

SIZES = (10, 100, 1_000, 10_000)
POLICIES: dict[str, Callable[[], Any]] = {"Fixed": lambda: Fixed(10), "default": LatencyAIMD}


def closes_per_round(size: int) -> int:
    return max(4, 4_000 // size)


def one_size(size: int, policy: Callable[[], Any], seed: int) -> tuple[float, float]:
    """µs per close and per sort of the same latencies, over one round's windows of ``size``."""
    config = WindowConfig(
        min_samples=min(size, 10), max_samples=size, min_duration_s=0.0, latency_multiple=0.0
    )
    feedback = Feedback(
        policy(), governor="g", environment="e", window=config, history_size=100, apply=_ignore
    )
    latencies = feedback.ok_latencies
    rnd = random.Random(seed)
    t = 0.0
    closing = sorting = 0.0
    count = closes_per_round(size)
    for _ in range(count):
        feedback.due(t, t, 10)
        latencies.extend([0.01 + rnd.expovariate(200.0) for _ in range(size)])
        for k in range(5):
            feedback.record_lag(0.0002 * k, 0.01)
        start = time.thread_time()
        sorted(latencies)
        sorting += time.thread_time() - start
        t += 0.1
        start = time.thread_time()
        feedback.close(t, 10, peak_inflight=10, saw_waiters=False)
        closing += time.thread_time() - start
    return closing / count * 1e6, sorting / count * 1e6


def _ignore(decision: object) -> None:
    pass


def one_round(seed: int) -> dict[str, list[float]]:
    """One round: per (policy, size), µs per close and per sort."""
    return {
        f"{name} {size}": list(one_size(size, make, seed))
        for size in SIZES
        for name, make in POLICIES.items()
    }


def report(name: str, rounds: list[dict[str, list[float]]]) -> None:
    print(f"\n{name}: one close, µs, and its ratio to one sorted() of its latencies, median (worst)\n")
    print("| samples per window | Fixed, µs | Fixed / sort | default, µs | default / sort |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for size in SIZES:
        cells = []
        for policy in POLICIES:
            key = f"{policy} {size}"
            us = [r[key][0] for r in rounds]
            ratio = [r[key][0] / r[key][1] for r in rounds]
            cells.append(f"{statistics.median(us):.1f} ({max(us):.1f})")
            cells.append(f"{statistics.median(ratio):.1f}× ({max(ratio):.1f}×)")
        print(f"| {size:,} | " + " | ".join(cells) + " |")


def compare(args: argparse.Namespace) -> None:
    for tree in _turns.take_turns(__file__, [], args.baseline, args.rounds):
        report(f"{tree.name} ({tree.src.parent.name})", tree.rounds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15)
    _turns.add_arguments(parser)
    arguments = parser.parse_args()
    if arguments.serve:
        seeds = itertools.count(1)
        _turns.serve(lambda: one_round(next(seeds)))
    elif arguments.baseline:
        compare(arguments)
    else:
        report("this tree", [one_round(seed) for seed in range(1, arguments.rounds + 1)])
