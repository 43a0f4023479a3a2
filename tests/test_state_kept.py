"""Learned state kept without ceremony: closed by the integrations, saved at exit, restored up front.

Also the chunk size and the decision history, which are kept beside the limit.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import anyio
import pytest

from aiogovernor import (
    AIMD,
    AdaptiveChunker,
    Governor,
    Outcome,
    _persistence,
    governed_batches,
    governed_imap_unordered,
    governed_map,
)
from aiogovernor.__main__ import main
from aiogovernor.limits import gate_limit
from aiogovernor.state import JsonFileStore, KeptDecision, LearnedState, MemoryStore
from aiogovernor.testing import ManualClock

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _persistence_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIOGOVERNOR_DISABLE_STATE", raising=False)


def child_env(state_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOGOVERNOR_")}
    env["AIOGOVERNOR_STATE_DIR"] = str(state_dir)
    return {**env, **extra}


def run_child(code: str, state_dir: Path, *, timeout_s: float = 60.0, **extra: str) -> tuple[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=child_env(state_dir, **extra),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def records(state_dir: Path, environment: str = "default") -> dict[str, LearnedState]:
    return anyio.run(JsonFileStore(state_dir).list, environment)


def busy(gov: Governor, clock: ManualClock, n: int = 120) -> None:
    """Make ``gov`` decide, without an event loop: one sample at a time, an overload now and then."""
    for i in range(n):
        permit = gov.try_acquire()
        assert permit is not None
        clock.advance(0.01 + 0.001 * (i % 5))
        permit.release(Outcome.OVERLOAD if i % 25 == 24 else Outcome.OK)


# -- runs that never call aclose, in a process of their own --------------------------


def test_a_script_that_never_closes_anything_leaves_its_final_state(tmp_path: Path) -> None:
    # A map and an upload close the governors they make when they end; the dispatch
    # pool and the script's own governor are never closed: the exit hook saves them.
    files = tmp_path / "files"
    files.mkdir()
    for i in range(12):
        (files / f"{i}.txt").write_text("x" * i)
    stdout, stderr = run_child(
        f"""
        import asyncio, logging, httpx
        from aiogovernor import AIMD, Governor, governed_map
        from aiogovernor.dispatch import EndpointPool, JobClient
        from aiogovernor.dispatch.testing import FakeEndpoint, LocalServerless
        from aiogovernor.uploads import upload_files

        logging.basicConfig(level=logging.DEBUG, format="%(name)s %(message)s")

        async def work(x):
            await asyncio.sleep(0.0005)
            return x

        async def main():
            await governed_map(work, range(400))
            client = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(201)))
            paths = sorted(str(p) for p in __import__("pathlib").Path({str(files)!r}).iterdir())
            await upload_files(client, paths, url="http://uploads.test/in")
            with LocalServerless({{"ep1": FakeEndpoint(workers=4, job_duration_s=0.005)}}) as srv:
                fast = dict(poll_interval_s=0.005, max_poll_interval_s=0.02)
                pool = EndpointPool([JobClient("ep1", api_key=srv.api_key, base_url=srv.base_url, **fast)])
                await pool.start()
                await asyncio.gather(*(pool.run({{"x": i}}) for i in range(40)))
                print("jobs limit", pool.clients[0].governor.policy.limit, flush=True)
            mine = Governor("script", AIMD(initial_limit=3))
            async with mine:
                pass
            mine.reset_limit(9, reason="learned")

        asyncio.run(main())
        """,
        tmp_path / "state",
    )
    kept = records(tmp_path / "state")
    mapped = next(s for n, s in kept.items() if n.startswith("map:"))
    # Every unit of work is counted: saved after the map's end, not a snapshot of its start.
    assert mapped.sample_count == 400
    assert mapped.history and mapped.history[-1].new_limit == gate_limit(mapped.limit)
    assert kept["uploads:http://uploads.test"].sample_count == 12
    # The pool was never closed: the exit hook wrote its job governor's final limit.
    assert f"jobs limit {kept['dispatch:ep1'].limit}" in stdout
    assert kept["dispatch:ep1"].sample_count == 40
    assert kept["script"].limit == 9
    assert "saved learned state at exit" in stderr
    assert "script[default]" in stderr and "dispatch:ep1[default]" in stderr

    async def next_run() -> None:
        gov = Governor("script", AIMD(initial_limit=3), store=JsonFileStore(tmp_path / "state"))
        assert gov.limit == 3
        await gov.restore()
        assert gov.limit == 9

    anyio.run(next_run)


def test_kill_9_mid_run_leaves_the_last_debounced_save(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import asyncio
                from aiogovernor import AIMD, Governor

                async def main():
                    gov = Governor("killed", AIMD(initial_limit=3), save_interval_s=0.01)
                    await gov.restore()
                    gov.reset_limit(5, reason="learned")
                    while gov.store and (await gov.store.load("default", "killed")) is None:
                        await asyncio.sleep(0.01)
                    # Saved; from here on, decisions that would be saved only much later.
                    gov._persistence._save_interval_s = 3600.0
                    print("saved", flush=True)
                    n = 0
                    while True:
                        n += 1
                        gov.reset_limit(6 + n % 10, reason="more")
                        await asyncio.sleep(0.001)

                asyncio.run(main())
                """
            ),
        ],
        env=child_env(state_dir),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "saved"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
    state = records(state_dir)["killed"]
    assert state.limit == 5
    assert [d.reason for d in state.history] == ["reset"]


def test_the_exit_hook_gives_up_on_a_store_that_hangs(tmp_path: Path) -> None:
    _, stderr = run_child(
        """
        import logging, time
        from aiogovernor import Governor
        from aiogovernor.state import MemoryStore

        logging.basicConfig(level=logging.DEBUG, format="%(name)s %(message)s")

        class Hangs(MemoryStore):
            def save_blocking(self, environment, name, state):
                time.sleep(3600)

        gov = Governor("stuck", store=Hangs())
        gov.reset_limit(4)  # no event loop: nothing saves it before the exit
        """,
        tmp_path / "state",
        timeout_s=30.0,
        AIOGOVERNOR_EXIT_SAVE_TIMEOUT_S="0.2",
    )
    assert "took longer than 0.2s: gave up" in stderr


# -- the exit hook, in this process ---------------------------------------------------


def test_the_exit_hook_writes_through_a_file_store_and_says_what(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = JsonFileStore(tmp_path)
    gov = Governor("left", AIMD(initial_limit=3), store=store)
    gov.reset_limit(8)  # no event loop: the change waits for someone to save it
    other = Governor("in-memory", store=MemoryStore())
    other.reset_limit(5)
    with caplog.at_level(logging.DEBUG, logger="aiogovernor.state"):
        _persistence._save_at_exit()
    assert anyio.run(store.load, "default", "left").limit == 8  # type: ignore[union-attr]
    assert "saved learned state at exit: left[default]" in caplog.text
    assert "in-memory[default]: not saved at exit" in caplog.text
    assert not _persistence._unsaved


async def test_a_saved_governor_is_not_held_for_the_exit_hook() -> None:
    gov = Governor("saved", store=MemoryStore())
    gov.reset_limit(4)
    assert id(gov._persistence) in _persistence._unsaved
    await gov.aclose()
    assert id(gov._persistence) not in _persistence._unsaved


# -- integrations close what they make --------------------------------------------------


async def test_a_map_closes_its_governor_even_when_it_fails(state_dir: Path) -> None:
    async def fails(x: int) -> int:
        await anyio.sleep(0.01)
        if x == 30:
            raise ValueError(x)
        return x

    with pytest.raises(ValueError):
        await governed_map(fails, range(40))
    store = JsonFileStore(state_dir)
    (name,) = await store.list("default")
    state = await store.load("default", name)
    assert state is not None and state.sample_count >= 30


async def test_a_cancelled_map_closes_its_governor(state_dir: Path) -> None:
    async def slow(x: int) -> int:
        await anyio.sleep(0.01 * (x + 1))
        return x

    with anyio.move_on_after(0.5) as scope:
        async with governed_imap_unordered(slow, range(1000)) as results:
            async for _ in results:
                pass
    assert scope.cancelled_caught
    store = JsonFileStore(state_dir)
    (name,) = await store.list("default")
    state = await store.load("default", name)
    assert state is not None and state.sample_count > 0


async def test_a_transport_closes_the_governors_it_made(state_dir: Path) -> None:
    httpx = pytest.importorskip("httpx")
    from aiogovernor.httpx import GovernedTransport

    inner = httpx.MockTransport(lambda request: httpx.Response(200))
    memory = MemoryStore()
    mine = Governor("mine", store=memory)
    for transport in (
        GovernedTransport(transport=inner),
        GovernedTransport(mine, transport=inner, per_host=True),
    ):
        async with httpx.AsyncClient(transport=transport) as client:
            await client.get("http://a.test/")
    assert set(await JsonFileStore(state_dir).list("default")) == {"http"}
    # Each origin's governor is the transport's; the template is the caller's.
    assert set(await memory.list("default")) == {"mine@http://a.test:80"}


# -- restore ---------------------------------------------------------------------------------


async def test_restore_loads_the_learned_state_up_front() -> None:
    store = MemoryStore()
    saved = LearnedState(limit=9.0, policy="aimd", updated_at=time.time() - 60)
    await store.save("default", "api", saved)
    gov = Governor("api", AIMD(initial_limit=3), store=store)
    assert gov.limit == 3 and not gov.stats().restored
    assert await gov.restore() == saved
    assert gov.limit == 9
    stats = gov.stats()
    assert stats.restored and stats.restored_saved_at == saved.updated_at
    assert await gov.restore() == saved  # once: the second call changes nothing

    fresh = Governor("new", store=store)
    assert await fresh.restore() is None
    assert not fresh.stats().restored and fresh.stats().restored_saved_at is None
    assert await Governor("off", store=None).restore() is None


# -- the chunk size ----------------------------------------------------------------------------


async def test_the_chunk_size_is_saved_and_restored() -> None:
    store = MemoryStore()

    async def quick(chunk: list[int]) -> list[int]:
        await anyio.sleep(0.001 * len(chunk))  # 1 ms an item: 200 items make the 0.2 s target
        return chunk

    first = Governor("batches", store=store)
    await governed_batches(quick, range(3000), governor=first)
    await first.aclose()
    state = await store.load("default", "batches")
    assert state is not None and state.chunk_size is not None and state.chunk_size > 1

    sizes: list[int] = []

    async def seen(chunk: list[int]) -> list[int]:
        sizes.append(len(chunk))
        return chunk

    await governed_batches(seen, range(10), governor=Governor("batches", store=store))
    assert sizes[0] == min(10, state.chunk_size)
    chunker = AdaptiveChunker(max_size=100_000)
    gov = Governor("batches", store=store)
    await gov.restore()
    gov.attach_chunker(chunker)
    assert chunker.size == state.chunk_size


async def test_a_chunker_that_moved_is_saved_without_a_decision() -> None:
    store = MemoryStore()
    gov = Governor("chunks", store=store)
    chunker = AdaptiveChunker(initial_size=4, min_samples=1, target_duration_s=1.0)
    gov.attach_chunker(chunker)
    chunker.record(4, 0.1)
    await gov.aclose()
    state = await store.load("default", "chunks")
    assert state is not None and state.chunk_size == chunker.size > 4


# -- the decision history ------------------------------------------------------------------------


async def test_the_history_is_capped_and_round_trips(tmp_path: Path) -> None:
    clock = ManualClock()
    store = MemoryStore()
    gov = Governor("hist", AIMD(initial_limit=4), clock=clock, store=store, state_history_size=5)
    busy(gov, clock)
    await gov.aclose()
    state = await store.load("default", "hist")
    assert state is not None and len(state.history) == 5
    last = gov.decisions[-5:]
    assert [(d.old_limit, d.new_limit) for d in state.history] == [(d.old_limit, d.new_limit) for d in last]
    assert all(d.reason in ("up", "down", "overload", "hold") for d in state.history)
    files = JsonFileStore(tmp_path)
    await files.save("default", "hist", state)
    assert await files.load("default", "hist") == state
    # The next run's decisions follow the restored ones, still capped.
    again = Governor("hist", AIMD(initial_limit=4), clock=clock, store=store, state_history_size=5)
    await again.restore()
    again.reset_limit(2)
    await again.aclose()
    later = await store.load("default", "hist")
    assert later is not None and later.history == (*state.history[1:], later.history[-1])
    assert later.history[-1].reason == "reset"


async def test_a_history_size_of_zero_keeps_none() -> None:
    clock = ManualClock()
    store = MemoryStore()
    gov = Governor("quiet", clock=clock, store=store, state_history_size=0)
    busy(gov, clock)
    await gov.aclose()
    state = await store.load("default", "quiet")
    assert state is not None and state.history == ()
    with pytest.raises(ValueError, match="state_history_size"):
        Governor("bad", store=store, state_history_size=-1)


def test_a_kept_decision_is_one_compact_array() -> None:
    d = KeptDecision(1_700_000_000.123, 4, 2, "overload", 0.012, 30, 3, 4)
    assert d.to_json() == [1_700_000_000.123, 4, 2, "overload", 0.012, 30, 3, 4]
    assert KeptDecision.from_json(d.to_json()) == d
    for bad in ([1, 2, 3], [0, 1, 2, "sideways", None, 0, 0, 0], [0, -1, 2, "up", None, 0, 0, 0]):
        with pytest.raises(ValueError):
            KeptDecision.from_json(bad)
    # The text a store writes reads back as the record (each decision encoded once).
    state = LearnedState(limit=3.0, policy="aimd", updated_at=0.0, history=(d, d))
    assert json.loads(state.to_json_text()) == state.to_json()
    assert json.loads(LearnedState(limit=3.0, policy="aimd", updated_at=0.0).to_json_text())["history"] == []
    old = LearnedState(limit=3.0, policy="aimd", updated_at=0.0).to_json()
    del old["history"]  # written before decisions were kept
    assert LearnedState.from_json(old).history == ()


# -- the command line: history and plot ----------------------------------------------------------


def kept_history(directory: Path) -> LearnedState:
    clock = ManualClock()
    store = JsonFileStore(directory)
    gov = Governor("api", AIMD(initial_limit=4), clock=clock, store=store)
    busy(gov, clock)
    anyio.run(gov.aclose)
    state = anyio.run(store.load, "default", "api")
    assert state is not None and state.history
    return state


def test_history_prints_the_kept_decisions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = kept_history(tmp_path)
    # The store options are taken before or after the action.
    assert main(["state", "history", "api", "--dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["TIME", "LIMIT", "REASON"]
    assert len(table) == 2 + len(state.history)
    last = state.history[-1]
    assert f"{last.old_limit} -> {last.new_limit}" in table[-1] and last.reason in table[-1]
    assert main(["state", "--dir", str(tmp_path), "history", "--json", "api"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["name"] == "api" and len(doc["history"]) == len(state.history)
    assert doc["history"][-1]["new_limit"] == last.new_limit


def test_history_of_an_empty_store_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tmp_path.joinpath("empty").mkdir()
    assert main(["state", "history", "api", "--dir", str(tmp_path / "empty")]) == 1
    assert "no learned state for 'api' in environment 'default'" in capsys.readouterr().err
    anyio.run(
        JsonFileStore(tmp_path).save, "default", "bare", LearnedState(limit=3.0, policy="x", updated_at=0.0)
    )
    assert main(["state", "history", "bare", "--dir", str(tmp_path)]) == 0
    assert "no decisions kept for bare[default]" in capsys.readouterr().out


def test_plot_draws_the_saved_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    state = kept_history(tmp_path)
    out = tmp_path / "api.png"
    assert main(["plot", "api", "-o", str(out), "--dir", str(tmp_path)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"Plot of {len(state.history)} decisions written" in capsys.readouterr().out
    # An empty store, a record without decisions: clear messages, nothing drawn.
    tmp_path.joinpath("empty").mkdir()
    assert main(["plot", "--dir", str(tmp_path / "empty"), "api", "-o", str(tmp_path / "none.png")]) == 1
    assert "no learned state for 'api'" in capsys.readouterr().err
    anyio.run(
        JsonFileStore(tmp_path).save, "default", "bare", LearnedState(limit=3.0, policy="x", updated_at=0.0)
    )
    assert main(["plot", "bare", "-o", str(tmp_path / "bare.png"), "--dir", str(tmp_path)]) == 1
    assert "nothing to draw" in capsys.readouterr().err
    assert not (tmp_path / "none.png").exists() and not (tmp_path / "bare.png").exists()


def test_closing_the_databases_at_exit_never_waits_on_a_stuck_writer(tmp_path: Path) -> None:
    from aiogovernor.state import _json

    store = JsonFileStore(tmp_path / "state")
    anyio.run(store.save, "prod", "api", LearnedState(limit=3.0, policy="x", updated_at=1.0))
    db = _json._databases[str(store.path_for("prod"))]
    assert db.lock.acquire()  # a writer stuck inside SQLite on a stalled disk holds it for ever
    try:
        closer = threading.Thread(target=_json._close_databases, daemon=True)
        closer.start()
        closer.join(timeout=30)  # generous: the hook gives up after about a second
        assert not closer.is_alive(), "the exit hook waited on the stuck writer"
    finally:
        db.lock.release()
        db.conn.close()
