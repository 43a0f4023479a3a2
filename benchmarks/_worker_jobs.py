"""The jobs of benchmarks/workers.py, in a module of their own: a worker then imports only this."""

from __future__ import annotations

import time


def cpu_job(seconds: float) -> float:
    """Spin for ``seconds`` of this process's CPU time; return the wall time it took."""
    start_wall = time.perf_counter()
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    return time.perf_counter() - start_wall


def echo(n: int) -> int:
    return n
