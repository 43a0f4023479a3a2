"""`GpuWorkerModel`: a GPU worker's measured throughput and latency by trials at once, and a simulated worker.

The model is driven by a table measured on a real GPU (one JSON line per
concurrency level, see ``data/README.md``); between measured levels it
interpolates throughput linearly in log2(concurrency), and latency follows
from Little's law (concurrency ÷ throughput), so the two always agree.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from aiogovernor._validate import check_float

__all__ = ["GpuWorkerModel", "SimulatedGpuWorker"]


@dataclass(frozen=True, slots=True)
class GpuWorkerModel:
    """A GPU worker's throughput (trials/s) by the number of trials it runs at once.

    Attributes:
        concurrency: The measured levels, increasing, from 1.
        trials_per_s: Throughput measured at each level.
        description: Where the table comes from (GPU, model, steps).
    """

    concurrency: tuple[int, ...]
    trials_per_s: tuple[float, ...]
    description: str = ""

    def __post_init__(self) -> None:
        if not self.concurrency or len(self.concurrency) != len(self.trials_per_s):
            raise ValueError("concurrency and trials_per_s must be non-empty and of one length")
        if self.concurrency[0] != 1 or any(b <= a for a, b in itertools.pairwise(self.concurrency)):
            raise ValueError(f"concurrency must start at 1 and increase, got {self.concurrency!r}")
        for value in self.trials_per_s:
            check_float("trials_per_s", value, low=0.0, low_open=True)

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], *, description: str = "") -> GpuWorkerModel:
        """From measurement records with ``concurrency`` and ``trials_per_s`` (others are ignored)."""
        rows = sorted(
            (int(r["concurrency"]), float(r["trials_per_s"])) for r in records if "concurrency" in r
        )
        return cls(tuple(c for c, _ in rows), tuple(t for _, t in rows), description)

    @classmethod
    def from_jsonl(cls, path: str | Path) -> GpuWorkerModel:
        """From a JSON-lines table: a header line (GPU, torch, width, steps), then one line per level."""
        return cls._parse(Path(path).read_text(encoding="utf-8"))

    @classmethod
    def h100_mlp1024(cls) -> GpuWorkerModel:
        """The table shipped with aiogovernor: small MLPs (width 1024, 200 steps) on one H100.

        Throughput peaks at 4 trials at once (5.3 trials/s) and is flat or
        falling beyond, while latency keeps growing: the knee is about 4–8.
        """
        text = resources.files("aiogovernor.dispatch").joinpath("data/gpu_worker_h100_mlp1024.jsonl")
        return cls._parse(text.read_text(encoding="utf-8"))

    @classmethod
    def _parse(cls, text: str) -> GpuWorkerModel:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
        header: dict[str, Any] = next((r for r in records if "concurrency" not in r), {})
        description = ", ".join(f"{k}={v}" for k, v in header.items())
        return cls.from_records(records, description=description)

    def throughput(self, concurrency: float) -> float:
        """Trials/s with ``concurrency`` trials at once (>= 1): interpolated in log2, flat past the table."""
        n = max(1.0, float(concurrency))
        levels, values = self.concurrency, self.trials_per_s
        if n >= levels[-1]:
            return values[-1]
        for i in range(len(levels) - 1):
            a, b, ta, tb = levels[i], levels[i + 1], values[i], values[i + 1]
            if a <= n <= b:
                share = (math.log2(n) - math.log2(a)) / (math.log2(b) - math.log2(a))
                return ta + (tb - ta) * share
        return values[0]  # pragma: no cover - n is within the table here

    def latency_s(self, concurrency: float) -> float:
        """One trial's duration with ``concurrency`` at once: Little's law, concurrency ÷ throughput."""
        n = max(1.0, float(concurrency))
        return n / self.throughput(n)

    def knee(self) -> int:
        """The measured level with the highest throughput."""
        best = max(range(len(self.concurrency)), key=lambda i: self.trials_per_s[i])
        return self.concurrency[best]


class SimulatedGpuWorker:
    """A GPU worker running trials at once, timed by a `GpuWorkerModel`, on the running loop's clock.

    Each trial lasts the model's latency at the number of trials running
    when it starts (itself included), times ``time_scale``: in a steady
    state of n at once that is throughput(n). Runs in real time (a local
    endpoint) or in virtual time (`aiogovernor.sim`).

    Args:
        model: The measured table.
        time_scale: Multiplies every duration (0.05 runs 20 times faster than the GPU).
    """

    def __init__(self, model: GpuWorkerModel, *, time_scale: float = 1.0) -> None:
        self.model = model
        self._scale = check_float("time_scale", time_scale, low=0.0, low_open=True)
        self.running = 0
        self.peak = 0
        self.completed = 0

    async def run(self) -> float:
        """Run one trial; returns how long it took (seconds of the loop's clock)."""
        self.running += 1
        self.peak = max(self.peak, self.running)
        duration = self.model.latency_s(self.running) * self._scale
        try:
            await asyncio.sleep(duration)
        finally:
            self.running -= 1
        self.completed += 1
        return duration
