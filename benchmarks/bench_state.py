"""Learned state costs nothing on the permit path; a JSON file save costs one thread hop.

Measures, side by side in one run, the uncontended ``async with`` of an
asyncio.Semaphore, a Governor without a store, and a Governor with a store
(after its state is loaded), then the latency of JsonFileStore saves.
Prints ratios and a markdown table.

    .venv/bin/python benchmarks/bench_state.py [--rounds 7] [--n 200000] [--saves 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from aiogovernor import Fixed, Governor
from aiogovernor.state import JsonFileStore, LearnedState, MemoryStore


async def loop_time(gate: AbstractAsyncContextManager[Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        async with gate:
            pass
    return time.perf_counter() - start


async def main(rounds: int, n: int, saves: int) -> None:
    store = MemoryStore()
    await store.save("bench", "g", LearnedState(limit=8, policy="fixed", updated_at=time.time()))
    makers: dict[str, Callable[[], AbstractAsyncContextManager[Any]]] = {
        "asyncio.Semaphore": lambda: asyncio.Semaphore(8),
        "Governor(store=None)": lambda: Governor("g", Fixed(8), environment="bench", store=None),
        "Governor(store=MemoryStore)": lambda: Governor("g", Fixed(8), environment="bench", store=store),
    }
    results: dict[str, list[float]] = {k: [] for k in makers}
    for _ in range(rounds):
        for name, make in makers.items():  # interleaved: the machine's noise hits all alike
            gate = make()
            async with gate:  # the first acquire loads the state
                pass
            results[name].append(await loop_time(gate, n) / n * 1e9)
    base = statistics.median(results["asyncio.Semaphore"])
    print("| gate | median ns per acquire/release | ratio to asyncio.Semaphore |")
    print("| --- | ---: | ---: |")
    for name, values in results.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.0f} | {med / base:.2f}x |")

    with tempfile.TemporaryDirectory() as directory:
        files = JsonFileStore(directory)
        for i in range(20):
            await files.save("bench", f"other-{i}", LearnedState(limit=4, policy="aimd", updated_at=0.0))
        lat = []
        for i in range(saves):
            s = LearnedState(limit=float(i + 1), policy="aimd", updated_at=time.time())
            t0 = time.perf_counter()
            await files.save("bench", "g", s)
            lat.append(time.perf_counter() - t0)
        lat.sort()
        median_ms = statistics.median(lat) * 1e3
        print(
            f"\nJsonFileStore.save (21 governors in the file, fsync on): median {median_ms:.2f} ms, "
            f"p90 {lat[int(0.9 * len(lat))] * 1e3:.2f} ms over {saves} saves (off the permit path: "
            "a governor saves at most once per save_interval_s, in a background task)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--saves", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.n, args.saves))
