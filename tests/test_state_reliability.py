"""The JSON file store under kill -9 and concurrent processes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from aiogovernor.state import JsonFileStore, LearnedState

# A writer saving an ever-larger limit for one governor, as fast as it can. It calls the
# store's blocking update directly (what the worker thread runs) to start quickly.
WRITER = textwrap.dedent(
    """
    import sys, time
    from aiogovernor.state import JsonFileStore, LearnedState
    store = JsonFileStore(sys.argv[1])
    name, start, count = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    for i in range(start, start + count):
        entry = LearnedState(limit=float(i), policy="aimd", updated_at=time.time()).to_json()
        store._update_sync("prod", lambda g: g.__setitem__(name, entry) or True)
        if i == start:
            print("ready", flush=True)
    """
)


def read_limits(path: Path) -> dict[str, float]:
    doc = json.loads(path.read_text())  # must always parse
    assert doc["format"] == "aiogovernor-state"
    return {name: entry["limit"] for name, entry in doc["governors"].items()}


def test_kill_9_mid_write_never_leaves_a_torn_file(tmp_path: Path) -> None:
    rng = random.Random(5)
    store = JsonFileStore(tmp_path)
    anyio.run(store.save, "prod", "keep", LearnedState(limit=7.0, policy="aimd", updated_at=0.0))
    path = store.path_for("prod")
    last = 0.0
    for kill in range(100):
        start = int(last) + 1
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), "w", str(start), "1000000"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        # Let it run a little (sometimes not at all), then kill it wherever it is.
        if rng.random() < 0.8:
            os.sched_yield()
            for _ in range(rng.randrange(2000)):
                pass
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL, kill
        limits = read_limits(path)
        assert limits["keep"] == 7.0
        # The previous value or a newer one: never older, never missing.
        assert limits["w"] >= max(last, start), (kill, limits, last)
        last = limits["w"]
    stray = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(stray) <= 1  # a killed writer's temporary file, swept by the next writer
    assert stat_mode(path) == 0o600


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_eight_processes_saving_at_once_lose_nothing(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), f"gov-{n}", "1", "60"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(8)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert err == ""
    limits = read_limits(JsonFileStore(tmp_path).path_for("prod"))
    assert limits == {f"gov-{n}": 60.0 for n in range(8)}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.anyio
async def test_concurrent_saves_in_one_process_lose_nothing(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path)
    async with anyio.create_task_group() as tg:
        for n in range(16):
            tg.start_soon(
                store.save, "prod", f"g{n}", LearnedState(limit=n + 1, policy="aimd", updated_at=0.0)
            )
    assert sorted(await store.list("prod")) == sorted(f"g{n}" for n in range(16))
