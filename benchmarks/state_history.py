"""What keeping the last decisions costs a save: the loop's share and the store's, by history size.

A governor's save takes a snapshot (`LearnedState`, its history included) and
turns it into JSON text on the event loop; the default store then upserts that
text in its worker thread. Both grow with the history kept (``state_history_size``,
1 000 by default), so both are measured, side by side for 0, 100 and 1 000
decisions kept, in interleaved rounds; median and worst of the per-round medians.
Beside it, the encoding a save would cost if every kept decision were encoded
again each time (``json.dumps(state.to_json())``) rather than once
(``state.to_json_text()``, what the store calls).

    .venv/bin/python benchmarks/state_history.py [--rounds 7] [--saves 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

from aiogovernor import AIMD, Governor, Outcome
from aiogovernor.state import JsonFileStore
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--saves", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        store = JsonFileStore(directory)
        govs = {size: governor(size, store) for size in SIZES}
        record_bytes = {}
        loop_us: dict[int, list[float]] = {size: [] for size in SIZES}
        store_us: dict[int, list[float]] = {size: [] for size in SIZES}
        again_us: dict[int, list[float]] = {size: [] for size in SIZES}
        for _ in range(args.rounds):
            for size, gov in govs.items():
                persistence = gov._persistence
                assert persistence is not None
                times_loop, times_store, times_again = [], [], []
                for _ in range(args.saves):
                    t0 = time.perf_counter()
                    record = persistence.snapshot().to_json_text()  # what JsonFileStore.save does
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
    print(f"{args.rounds} interleaved rounds of {args.saves} saves; median of the round medians (worst), µs")
    print(
        "| decisions kept | record bytes | snapshot + JSON (loop) | upsert (store's thread) | total "
        "| snapshot + JSON, every decision encoded again |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for size in SIZES:
        a, b = loop_us[size], store_us[size]
        total = [x + y for x, y in zip(a, b, strict=True)]
        cells = [f"{statistics.median(x):,.0f} ({max(x):,.0f})" for x in (a, b, total, again_us[size])]
        print(f"| {size:,} | {record_bytes[size]:,} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
