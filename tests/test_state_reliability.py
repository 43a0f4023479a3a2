"""The file store under kill -9, concurrent processes, and FIFOs or devices in place of its files."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from aiogovernor.state import JsonFileStore, LearnedState
from aiogovernor.state._json import _check_layout, _forget_database, _initialise, _Uninitialised

# A writer saving an ever-larger limit for one governor, as fast as it can. It calls the
# store's blocking update directly (what the worker thread runs) to start quickly.
WRITER = textwrap.dedent(
    """
    import json, sys, time
    from aiogovernor.state import JsonFileStore, LearnedState
    store = JsonFileStore(sys.argv[1])
    name, start, count = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    for i in range(start, start + count):
        entry = LearnedState(limit=float(i), policy="aimd", updated_at=time.time()).to_json()
        store._save_sync("prod", name, json.dumps(entry))
        if i == start:
            print("ready", flush=True)
    """
)


def read_limits(directory: Path) -> dict[str, float]:
    # A store of a new process: what the file holds, not what a cached connection saw.
    states = anyio.run(JsonFileStore(directory).list, "prod")
    assert states, "the database must always open and hold the records"
    return {name: state.limit for name, state in states.items()}


def test_kill_9_mid_write_never_leaves_a_torn_file(tmp_path: Path) -> None:
    rng = random.Random(5)
    store = JsonFileStore(tmp_path)
    anyio.run(store.save, "prod", "keep", LearnedState(limit=7.0, policy="aimd", updated_at=0.0))
    path = store.path_for("prod")
    last = 0.0
    for kill in range(25):
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
        _forget_database(path)
        limits = read_limits(tmp_path)
        assert limits["keep"] == 7.0
        # The previous value or a newer one: never older, never missing.
        assert limits["w"] >= max(last, start), (kill, limits, last)
        last = limits["w"]
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
    try:
        errors = [(proc.communicate(timeout=60)[1], proc.returncode) for proc in procs]
    finally:
        for proc in procs:  # every writer waited for, even when one fails: none outlives the test
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    for err, returncode in errors:
        assert returncode == 0, err
        assert err == ""
    limits = read_limits(tmp_path)
    assert limits == {f"gov-{n}": 60.0 for n in range(8)}


@pytest.mark.anyio
async def test_concurrent_saves_in_one_process_lose_nothing(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path)
    async with anyio.create_task_group() as tg:
        for n in range(16):
            tg.start_soon(
                store.save, "prod", f"g{n}", LearnedState(limit=n + 1, policy="aimd", updated_at=0.0)
            )
    assert sorted(await store.list("prod")) == sorted(f"g{n}" for n in range(16))


# Every way into the state folder's files, with a FIFO or a device where a file should be:
# none may block (a FIFO blocks an open for reading until a writer comes; /dev/zero never ends).
NO_HANG = textwrap.dedent(
    """
    import asyncio, os, sys
    from aiogovernor import Governor
    from aiogovernor.__main__ import main
    from aiogovernor.state import JsonFileStore, LearnedState

    async def run():
        gov = Governor("api", environment=sys.argv[1])
        async with gov:  # the first acquire loads the learned state
            pass
        await gov.aclose()  # and saves it
        store = JsonFileStore()
        await store.list(sys.argv[1])
        await store.environments()

    asyncio.run(run())
    for action in (["show", "api", "--env", sys.argv[1]], ["list"], ["export"]):
        try:
            main(["state", *action])
        except SystemExit:
            pass
    print("done", flush=True)
    """
)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("where", ["database", "legacy file"])
@pytest.mark.parametrize("what", ["fifo", "/dev/zero", "/dev/zero link"])
def test_a_fifo_or_device_in_place_of_a_state_file_never_hangs(tmp_path: Path, where: str, what: str) -> None:
    path = tmp_path / ("prod.sqlite3" if where == "database" else "prod.json")
    if what == "fifo":
        os.mkfifo(path)
    elif what == "/dev/zero":
        if not hasattr(os, "mknod"):
            pytest.skip("no device nodes here")
        try:
            os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 5))
        except PermissionError:
            pytest.skip("making a device node needs root")
    else:
        path.symlink_to("/dev/zero")
    env = {**os.environ, "AIOGOVERNOR_STATE_DIR": str(tmp_path)}
    env.pop("AIOGOVERNOR_DISABLE_STATE", None)
    proc = subprocess.run(
        [sys.executable, "-c", NO_HANG, "prod"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("done\n")
    assert "Traceback" not in proc.stderr


def test_a_database_initialised_while_its_layout_is_read_is_not_taken_for_another_programs(
    tmp_path: Path,
) -> None:
    # Eight processes opening a new environment at once: one initialises the file while
    # another reads its layout. The read must see the file before or after, never half.
    path = tmp_path / "prod.sqlite3"
    sqlite3.connect(path).close()  # an empty database, as the first process leaves it
    maker = sqlite3.connect(path, isolation_level=None)
    reader = sqlite3.connect(path, isolation_level=None)

    class Racing:
        """The reader's connection; another process commits after its first statement."""

        def __init__(self) -> None:
            self.statements = 0

        def execute(self, sql: str) -> Racing:
            self.cursor = reader.execute(sql)
            self.statements += 1
            return self

        def fetchone(self) -> tuple[object, ...]:
            row: tuple[object, ...] = self.cursor.fetchone()
            self.cursor.close()  # the statement is done: its read lock goes
            if self.statements == 1:
                _initialise(maker)
            return row

    try:
        with pytest.raises(_Uninitialised):  # it saw the empty file, whole
            _check_layout(Racing())  # type: ignore[arg-type]
        _check_layout(reader)  # and now ours, whole
    finally:
        maker.close()
        reader.close()
