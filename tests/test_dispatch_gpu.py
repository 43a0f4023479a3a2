"""The measured GPU worker model, and a latency-aware job governor finding its knee in virtual time."""

from __future__ import annotations

import asyncio
import json
import statistics
from pathlib import Path

import pytest

from aiogovernor import Fixed, Governor
from aiogovernor.dispatch import JobClient
from aiogovernor.dispatch.testing import FakeEndpoint, GpuWorkerModel, SimulatedGpuWorker
from aiogovernor.sim import run_virtual

H100 = GpuWorkerModel.h100_mlp1024()


def test_the_shipped_table_is_the_measured_one() -> None:
    assert H100.concurrency == (1, 2, 4, 8, 16, 32, 64)
    assert H100.trials_per_s[:3] == (2.98, 4.48, 5.26)
    assert "H100" in H100.description and "width=1024" in H100.description
    assert H100.knee() == 4


def test_throughput_is_interpolated_in_log2_and_latency_follows_littles_law() -> None:
    for n, t in zip(H100.concurrency, H100.trials_per_s, strict=True):
        assert H100.throughput(n) == pytest.approx(t)
    assert H100.throughput(3) == pytest.approx(4.48 + (5.26 - 4.48) * 0.5849625, rel=1e-6)
    assert H100.throughput(0.5) == H100.throughput(1) and H100.throughput(500) == H100.throughput(64)
    for n in (1, 3, 6, 40):
        assert H100.latency_s(n) == pytest.approx(n / H100.throughput(n))


def test_a_table_is_read_from_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "gpu.jsonl"
    lines = [
        {"gpu": "test"},
        {"concurrency": 2, "trials_per_s": 4.0},
        {"concurrency": 1, "trials_per_s": 3.0},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    model = GpuWorkerModel.from_jsonl(path)
    assert (model.concurrency, model.trials_per_s, model.description) == ((1, 2), (3.0, 4.0), "gpu=test")
    with pytest.raises(ValueError, match="start at 1"):
        GpuWorkerModel((2, 4), (1.0, 2.0))
    with pytest.raises(TypeError, match="GpuWorkerModel"):
        FakeEndpoint(gpu="h100")  # type: ignore[arg-type]


def _drive(governor: Governor, seconds: float = 600.0) -> tuple[float, list[int]]:
    """64 callers keep a simulated H100 worker busy through ``governor``: (trials/s, limit each second)."""

    async def main() -> tuple[float, list[int]]:
        gpu = SimulatedGpuWorker(H100)
        loop = asyncio.get_running_loop()
        stop = loop.time() + seconds
        limits: list[int] = []

        async def caller() -> None:
            while loop.time() < stop:
                async with governor:
                    await gpu.run()

        async def watch() -> None:
            while loop.time() < stop:
                await asyncio.sleep(1.0)
                limits.append(governor.limit)

        await asyncio.gather(*(caller() for _ in range(64)), watch())
        return gpu.completed / seconds, limits

    return run_virtual(main())


def test_a_latency_aware_job_governor_finds_the_gpu_knee() -> None:
    best, _ = _drive(Governor("fixed", Fixed(H100.knee()), store=None))
    # The configuration the docs give for a GPU worker with a concurrency setting.
    client = JobClient("gpu", api_key="k", governor=Governor("dispatch:gpu", store=None))
    throughput, limits = _drive(client.governor)
    settled = limits[len(limits) // 2 :]
    assert 3 <= statistics.mean(settled) <= 8, f"settled at {statistics.mean(settled):.1f}"
    assert max(settled) <= 8
    assert throughput >= 0.93 * best, f"{throughput:.2f} trials/s against {best:.2f} at the knee"
    # Past the knee the worker only queues: 64 at once is far slower than the knee (0.78 of
    # it), where the governor is.
    crowded, _ = _drive(Governor("fixed", Fixed(64), store=None))
    assert crowded < 0.8 * best
