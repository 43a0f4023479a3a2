"""The thread gate and the thread maps against what threaded code uses today, side by side.

    .venv/bin/python benchmarks/threads.py [--rounds 5] [--seconds 6] [--parts gate,map,knee,http]

1. Uncontended ``with gov:`` against ``threading.Semaphore`` (target: at most 3x), and
   ``threading.Lock`` for scale: one thread enters and leaves ``--ops`` times.
2. ``sync.governed_map`` (and ``governed_batches``, chunked) against
   ``ThreadPoolExecutor.map`` over 100 000 cheap items, 8 threads (target: at most 1.5x).
3. A knee upstream simulated in this process (8 servers, 20 ms each, queueing beyond):
   closed-loop goodput of fixed thread pools (a sweep) against ``governed_imap_unordered``
   with the default policy.
4. Real time against the local HTTP upstream (its own process: 24 at once in 50 ms,
   429 past 48 in flight) through ``requests`` in threads: fixed thread counts (a sweep)
   against 128 threads through a ``GovernedAdapter`` with the default policy (target:
   at least 90 % of the best fixed).

Rounds are interleaved; each figure is reported as the median and the worst round.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from aiogovernor import AIMD, Fixed, sync


def med_worst(values: list[float], *, higher_is_worse: bool = True) -> str:
    worst = max(values) if higher_is_worse else min(values)
    return f"{statistics.median(values):.2f} (worst {worst:.2f})"


# -- 1. the gate's cost -------------------------------------------------------


def uncontended(gate: object, ops: int) -> float:
    start = time.perf_counter()
    for _ in range(ops):
        with gate:  # type: ignore[attr-defined]
            pass
    return time.perf_counter() - start


def gate_cost(ops: int, rounds: int) -> None:
    contenders: dict[str, Callable[[], object]] = {
        "threading.Semaphore": lambda: threading.Semaphore(8),
        "threading.Lock": threading.Lock,
        "sync.Governor(Fixed)": lambda: sync.Governor("bench", Fixed(8), store=None),
        "sync.Governor(AIMD)": lambda: sync.Governor(
            "bench", AIMD(initial_limit=8, min_limit=8, max_limit=8), store=None
        ),
    }
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, make in contenders.items():
            times[name].append(uncontended(make(), ops))
    base = times["threading.Semaphore"]
    print(f"\n### Uncontended `with gate:`, {ops} ops, {rounds} rounds\n")
    print("| gate | ns per enter+exit, median | vs threading.Semaphore, median (worst) |")
    print("| --- | --- | --- |")
    for name, ts in times.items():
        ratios = [t / b for t, b in zip(ts, base, strict=True)]
        print(f"| {name} | {statistics.median(ts) / ops * 1e9:.0f} | {med_worst(ratios)} |")


# -- 2. the map's cost ----------------------------------------------------------


def identity(x: int) -> int:
    return x


def map_cost(items: int, rounds: int) -> None:
    def pool_map() -> None:
        with ThreadPoolExecutor(8) as pool:
            for _ in pool.map(identity, range(items)):
                pass

    def governed() -> None:
        sync.governed_map(identity, range(items), governor=sync.Governor("b", Fixed(8), store=None))

    def batches() -> None:
        sync.governed_batches(
            lambda chunk: chunk, range(items), governor=sync.Governor("b", Fixed(8), store=None)
        )

    contenders = {
        "ThreadPoolExecutor(8).map": pool_map,
        "sync.governed_map (limit 8)": governed,
        "sync.governed_batches (limit 8, adaptive chunks)": batches,
    }
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    base = times["ThreadPoolExecutor(8).map"]
    print(f"\n### {items} cheap items, {rounds} rounds\n")
    print("| map | seconds, median (worst) | vs ThreadPoolExecutor.map, median (worst) |")
    print("| --- | --- | --- |")
    for name, ts in times.items():
        ratios = [t / b for t, b in zip(ts, base, strict=True)]
        print(f"| {name} | {med_worst(ts)} | {med_worst(ratios)} |")


# -- 3. a knee upstream in this process --------------------------------------------


class Knee:
    """``servers`` calls are served at once in ``service_s``; more queue (latency grows past the knee)."""

    def __init__(self, servers: int, service_s: float) -> None:
        self._servers = threading.Semaphore(servers)
        self._service_s = service_s

    def __call__(self, item: int) -> int:
        with self._servers:
            time.sleep(self._service_s)
        return item


def knee_goodput(seconds: float, sweep: list[int], rounds: int) -> None:
    def fixed(n: int) -> float:
        knee = Knee(8, 0.02)
        stop = time.monotonic() + seconds
        done = [0]
        lock = threading.Lock()

        def worker() -> None:
            while time.monotonic() < stop:
                knee(0)
                with lock:
                    done[0] += 1

        threads = [threading.Thread(target=worker) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return done[0] / seconds

    def governed() -> float:
        knee = Knee(8, 0.02)
        gov = sync.Governor("knee", store=None)
        stop = time.monotonic() + seconds
        n = 0
        stream = sync.governed_imap_unordered(knee, itertools.count(), governor=gov, max_workers=64)
        for _ in stream:
            n += 1
            if time.monotonic() >= stop:
                break
        stream.close()  # type: ignore[attr-defined]
        return n / seconds

    results: dict[str, list[float]] = {f"fixed {n}": [] for n in sweep}
    results["governed (default policy)"] = []
    for _ in range(rounds):
        for n in sweep:
            results[f"fixed {n}"].append(fixed(n))
        results["governed (default policy)"].append(governed())
    best = [max(results[f"fixed {n}"][r] for n in sweep) for r in range(rounds)]
    print(f"\n### Knee upstream in process (8 servers, 20 ms), {seconds:.0f} s per run, {rounds} rounds\n")
    print("| client | goodput (calls/s), median (worst) | vs best fixed of the round, median (worst) |")
    print("| --- | --- | --- |")
    for name, values in results.items():
        ratios = [v / b for v, b in zip(values, best, strict=True)]
        print(
            f"| {name} | {med_worst(values, higher_is_worse=False)} | "
            f"{med_worst(ratios, higher_is_worse=False)} |"
        )


# -- 4. requests against the local HTTP upstream ---------------------------------------


def http_goodput(url: str, seconds: float, *, threads: int, governed: bool) -> tuple[float, float, int]:
    """(goodput/s over the second half, 429 share over the second half, final limit)."""
    import requests

    from aiogovernor.requests import GovernedAdapter

    gov = sync.Governor("bench-requests", store=None)
    session = requests.Session()
    adapter = GovernedAdapter(gov) if governed else requests.adapters.HTTPAdapter(pool_maxsize=threads)
    session.mount("http://", adapter)
    stop = time.monotonic() + seconds
    half = time.monotonic() + seconds / 2
    counts = [0, 0]
    lock = threading.Lock()

    def worker() -> None:
        while time.monotonic() < stop:
            code = session.get(f"{url}/work").status_code
            if time.monotonic() >= half:
                with lock:
                    counts[0] += code == 200
                    counts[1] += code == 429

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    session.close()
    total = counts[0] + counts[1]
    return counts[0] / (seconds / 2), (counts[1] / total if total else 0.0), gov.limit


def http(seconds: float, sweep: list[int], rounds: int) -> None:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiogovernor.testing.servers",
            "--capacity",
            "24",
            "--service-time-s",
            "0.05",
            "--max-inflight",
            "48",
            "--retry-after",
            "1",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[1]
        results: dict[str, list[tuple[float, float, int]]] = {f"fixed {n} threads": [] for n in sweep}
        results["128 threads, GovernedAdapter (default policy)"] = []
        for _ in range(rounds):
            for n in sweep:
                results[f"fixed {n} threads"].append(http_goodput(url, seconds, threads=n, governed=False))
            results["128 threads, GovernedAdapter (default policy)"].append(
                http_goodput(url, seconds * 2, threads=128, governed=True)
            )
        best = [max(results[f"fixed {n} threads"][r][0] for n in sweep) for r in range(rounds)]
        print(
            "\n### requests in threads against the local upstream (c=24, 50 ms, 429 past 48), "
            f"{rounds} rounds\n"
        )
        print(
            "| client | goodput (req/s), median (worst) | 429 share, median | vs best fixed of the round, "
            "median (worst) | final limit |"
        )
        print("| --- | --- | --- | --- | --- |")
        for name, rows in results.items():
            goodputs = [r[0] for r in rows]
            ratios = [g / b for g, b in zip(goodputs, best, strict=True)]
            limit = statistics.median(r[2] for r in rows) if name.startswith("128") else "-"
            print(
                f"| {name} | {med_worst(goodputs, higher_is_worse=False)} | "
                f"{statistics.median(r[1] for r in rows):.1%} | {med_worst(ratios, higher_is_worse=False)} "
                f"| {limit} |"
            )
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--knee-sweep", default="4,8,12,16,32")
    parser.add_argument("--http-sweep", default="16,24,32,40")
    parser.add_argument("--http-rounds", type=int, default=3)
    parser.add_argument("--parts", default="gate,map,knee,http", help="which parts to run, comma-separated")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if "gate" in parts:
        gate_cost(args.ops, args.rounds)
    if "map" in parts:
        map_cost(args.items, args.rounds)
    if "knee" in parts:
        knee_goodput(args.seconds, [int(x) for x in args.knee_sweep.split(",")], max(1, args.rounds // 2))
    if "http" in parts:
        http(args.seconds, [int(x) for x in args.http_sweep.split(",")], args.http_rounds)


if __name__ == "__main__":
    main()
