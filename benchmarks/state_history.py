"""What keeping the last decisions costs a save: the loop's share and the store's, by history size.

A governor's save takes a snapshot (`LearnedState`, its history included) and
turns it into JSON text on the event loop; the default store then upserts that
text in its worker thread. Both grow with the history kept (``state_history_size``,
1 000 by default), so both are measured, side by side for 0, 100 and 1 000
decisions kept, in interleaved rounds; median and worst of the per-round medians.
Beside it, the encoding a save would cost if every kept decision were encoded
again each time (``json.dumps(state.to_json())``) rather than once
(``state.to_json_text()``, what the store calls).

    .venv/bin/python benchmarks/state_history.py [--rounds 7] [--saves 200] [--baseline OTHER/src]

With ``--baseline``, the loop's part beside another tree's (``OTHER/src``: a checkout of
an earlier commit), one process per round for each tree, the two taking turns.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiogovernor import AIMD, Governor, Outcome
from aiogovernor.state import JsonFileStore

try:
    from aiogovernor._record import record_text
except ImportError:  # a tree from before
    record_text = None  # type: ignore[assignment]
from aiogovernor.testing import ManualClock

SIZES = (0, 100, 1_000)


def governor(size: int, store: JsonFileStore) -> Governor:
    """A governor that made more decisions than it keeps (some with overloads)."""
    clock = ManualClock()
    gov = Governor(f"g{size}", AIMD(initial_limit=8), clock=clock, store=store, state_history_size=size)
    for i in range(12 * (size + 10)):  # about one decision per 10 samples
        permit = gov.try_acquire()
        assert permit is not None
        clock.advance(0.01)
        permit.release(Outcome.OVERLOAD if i % 97 == 96 else Outcome.OK)
    return gov


def loop_record(persistence: Any) -> str:
    """What a save does on the event loop: the snapshot and its JSON text (what the store writes)."""
    parts = getattr(persistence, "_snapshot_parts", None)
    if parts is None:  # a tree from before the record read the history's rows
        return str(persistence.snapshot().to_json_text())
    head, entries = parts()
    return record_text(head, entries)  # type: ignore[no-any-return]


def measure(rounds: int, saves: int) -> dict[str, Any]:
    """Per-round medians (µs) by history size: the loop's part, the store's, every decision encoded again."""
    with tempfile.TemporaryDirectory() as directory:
        store = JsonFileStore(directory)
        govs = {size: governor(size, store) for size in SIZES}
        record_bytes = {}
        loop_us: dict[int, list[float]] = {size: [] for size in SIZES}
        store_us: dict[int, list[float]] = {size: [] for size in SIZES}
        again_us: dict[int, list[float]] = {size: [] for size in SIZES}
        for _ in range(rounds):
            for size, gov in govs.items():
                persistence = gov._persistence
                assert persistence is not None
                times_loop, times_store, times_again = [], [], []
                for _ in range(saves):
                    t0 = time.perf_counter()
                    record = loop_record(persistence)
                    t1 = time.perf_counter()
                    store._save_sync("default", gov.name, record)
                    t2 = time.perf_counter()
                    json.dumps(persistence.snapshot().to_json(), allow_nan=False)
                    t3 = time.perf_counter()
                    times_loop.append(t1 - t0)
                    times_store.append(t2 - t1)
                    times_again.append(t3 - t2)
                record_bytes[size] = len(record)
                loop_us[size].append(statistics.median(times_loop) * 1e6)
                store_us[size].append(statistics.median(times_store) * 1e6)
                again_us[size].append(statistics.median(times_again) * 1e6)
    return {"bytes": record_bytes, "loop": loop_us, "store": store_us, "again": again_us}


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({max(values):,.0f})"


def compare(baseline: str, rounds: int, saves: int) -> None:
    """This tree beside ``baseline`` (another tree's ``src``), one process per round each, taking turns."""
    trees = {"before": baseline, "now": str(Path(__file__).resolve().parents[1] / "src")}
    got: dict[str, list[dict[str, Any]]] = {label: [] for label in trees}
    for _ in range(rounds):
        for label, src in trees.items():
            env = {**os.environ, "PYTHONPATH": src}
            out = subprocess.run(
                [sys.executable, __file__, "--rounds", "1", "--saves", str(saves), "--json"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            got[label].append(json.loads(out))
    print(
        f"{rounds} rounds of {saves} saves, the two trees taking turns; median (worst) of the round medians"
    )
    parts = (("loop", "the loop's part of a save (snapshot + record text)"), ("store", "the upsert"))
    for part, what in parts:
        print(f"\n{what}, µs, by decisions kept\n")
        print("| decisions kept | record bytes before | now | before | now | now / before (worst) |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: |")
        for size in SIZES:
            key = str(size)
            before = [r[part][key][0] for r in got["before"]]
            now = [r[part][key][0] for r in got["now"]]
            ratios = [n / b for n, b in zip(now, before, strict=True)]
            print(
                f"| {size:,} | {got['before'][0]['bytes'][key]:,} | {got['now'][0]['bytes'][key]:,} "
                f"| {_cell(before)} | {_cell(now)} | {statistics.median(ratios):.2f}x ({max(ratios):.2f}x) |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--saves", type=int, default=200)
    parser.add_argument("--baseline", help="another tree's src directory, measured beside this one")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        compare(args.baseline, args.rounds, args.saves)
        return
    got = measure(args.rounds, args.saves)
    if args.json:
        print(json.dumps(got))
        return
    record_bytes, loop_us, store_us, again_us = got["bytes"], got["loop"], got["store"], got["again"]
    print(f"{args.rounds} interleaved rounds of {args.saves} saves; median of the round medians (worst), µs")
    print(
        "| decisions kept | record bytes | snapshot + JSON (loop) | upsert (store's thread) | total "
        "| snapshot + JSON, every decision encoded again |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for size in SIZES:
        a, b = loop_us[size], store_us[size]
        total = [x + y for x, y in zip(a, b, strict=True)]
        cells = [_cell(x) for x in (a, b, total, again_us[size])]
        print(f"| {size:,} | {record_bytes[size]:,} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
