"""Callables run by the worker processes of tests/test_workers.py (importable by the spawned children)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any


def square(x: int) -> int:
    return x * x


def pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def fail(x: Any) -> None:
    raise ValueError(f"bad payload {x!r}")


def env(name: str) -> str | None:
    return os.environ.get(name)


async def async_double(x: int) -> int:
    return 2 * x


def die_once(marker: str) -> int:
    """Kill its own worker the first time (the marker file does not exist yet), answer the second."""
    path = Path(marker)
    if not path.exists():
        path.write_text("died")
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


def noisy(x: int) -> int:
    print("a job's print goes to stderr, not into the protocol")
    return x


def tagged(n: int) -> dict[str, int]:
    """A short job that says which pool process ran it (its worker's parent)."""
    time.sleep(0.2)
    return {"n": n, "pool": os.getppid()}


def tagged_when_open(job: dict[str, Any]) -> dict[str, int]:
    """`tagged`, once the file ``job["gate"]`` exists: the test decides when jobs may end."""
    gate = Path(job["gate"])
    deadline = time.monotonic() + 60.0
    while not gate.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{gate} never appeared")
        time.sleep(0.005)
    return {"n": job["n"], "pool": os.getppid()}


def identity(x: Any) -> Any:
    return x


_held: list[bytes] = []


def hold_memory(mb: int) -> int:
    """Keep ``mb`` megabytes resident in the worker after the job (written, so really resident)."""
    if mb:
        _held.append(b"\x01" * (mb * 1_000_000))
    return os.getpid()
