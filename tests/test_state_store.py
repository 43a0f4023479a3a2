"""Learned-state records, name validation, and the memory and JSON file stores."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from aiogovernor import Governor
from aiogovernor.state import (
    SCHEMA_VERSION,
    JsonFileStore,
    LearnedState,
    MemoryStore,
    StateStore,
    StateStoreError,
    check_environment,
    check_governor_name,
    default_state_dir,
)
from aiogovernor.state._json import _forget_database

pytestmark = pytest.mark.anyio


def state(limit: float = 12.0, **kw: object) -> LearnedState:
    return LearnedState(limit=limit, policy="aimd", updated_at=1_700_000_000.0, **kw)  # type: ignore[arg-type]


# -- the record ---------------------------------------------------------------


def test_record_round_trips_through_json() -> None:
    s = state(7.5, sample_count=40, latency_floor_s=0.012, chunk_size=64)
    assert LearnedState.from_json(json.loads(json.dumps(s.to_json()))) == s
    assert s.schema_version == SCHEMA_VERSION


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "JSON object"),
        ({"schema_version": 99, "limit": 1, "policy": "aimd", "updated_at": 0, "sample_count": 0}, "schema"),
        ({"schema_version": 1, "limit": "8", "policy": "aimd", "updated_at": 0, "sample_count": 0}, "limit"),
        ({"schema_version": 1, "limit": -1, "policy": "aimd", "updated_at": 0, "sample_count": 0}, "limit"),
        ({"schema_version": 1, "limit": 2, "policy": 3, "updated_at": 0, "sample_count": 0}, "policy"),
        (
            {"schema_version": 1, "limit": 2, "policy": "a", "updated_at": 0, "sample_count": -1},
            "sample_count",
        ),
    ],
)
def test_bad_records_are_refused(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LearnedState.from_json(data)


# -- names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("..", "start with '.'"),
        (".", "start with '.'"),
        (".hidden", "start with '.'"),
        ("../etc", "separators"),
        ("a/b", "separators"),
        ("a\\b", "separators"),
        ("a\x00b", "NUL"),
        ("x" * 129, "at most 128"),
        ("", "non-empty"),
        (" prod", "whitespace"),
        ("c:", "':'"),
    ],
)
def test_environment_names_cannot_escape_the_directory(bad: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_environment(bad)
    with pytest.raises(ValueError, match=message):
        Governor("api", environment=bad)


def test_reasonable_names_are_accepted() -> None:
    assert check_environment("api.example.com") == "api.example.com"
    assert check_environment("staging-2") == "staging-2"
    # A governor name is a key inside the file, never a path: URLs are fine.
    assert check_governor_name("https://api.example.com/v1") == "https://api.example.com/v1"
    with pytest.raises(ValueError, match="NUL"):
        Governor("a\x00b", store=None)
    with pytest.raises(TypeError, match="string"):
        check_environment(3)


def test_environment_comes_from_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOGOVERNOR_ENV", "staging")
    assert Governor("api", store=None).environment == "staging"
    monkeypatch.setenv("AIOGOVERNOR_ENV", "../x")
    with pytest.raises(ValueError, match="environment"):
        Governor("api", store=None)


def test_state_dir_comes_from_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIOGOVERNOR_STATE_DIR", str(tmp_path / "here"))
    assert default_state_dir() == tmp_path / "here"
    monkeypatch.delenv("AIOGOVERNOR_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "aiogovernor"


# -- both stores -------------------------------------------------------------


@pytest.fixture(params=["memory", "json"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> StateStore:
    return MemoryStore() if request.param == "memory" else JsonFileStore(tmp_path / "s")


async def test_store_crud(store: StateStore) -> None:
    assert isinstance(store, StateStore)
    assert await store.load("prod", "api") is None
    assert await store.environments() == []
    await store.save("prod", "api", state(10))
    await store.save("prod", "db", state(3))
    await store.save("staging", "api", state(5))
    assert await store.load("prod", "api") == state(10)
    await store.save("prod", "api", state(11))
    assert await store.load("prod", "api") == state(11)
    assert await store.list("prod") == {"api": state(11), "db": state(3)}
    assert await store.environments() == ["prod", "staging"]
    assert await store.delete("prod", "api") is True
    assert await store.delete("prod", "api") is False
    assert await store.list("prod") == {"db": state(3)}
    await store.aclose()


# -- the JSON file store -------------------------------------------------------


def raw_records(path: Path) -> dict[str, str]:
    """The records in a store's database, as text, read without the store."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT name, record FROM governors").fetchall())
    finally:
        conn.close()


def put_raw(path: Path, name: str, record: str) -> None:
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute("INSERT OR REPLACE INTO governors (name, record) VALUES (?, ?)", (name, record))
    finally:
        conn.close()


def legacy_file(path: Path, governors: dict[str, object], *, schema_version: int = 1) -> bytes:
    doc = {"format": "aiogovernor-state", "schema_version": schema_version, "governors": governors}
    data = json.dumps(doc, indent=2).encode()
    path.write_bytes(data)
    return data


async def test_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path / "new" / "dir")
    old = os.umask(0)
    try:
        await store.save("prod", "api", state())
    finally:
        os.umask(old)
    for d in (tmp_path / "new", tmp_path / "new" / "dir"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    made = list(store.directory.iterdir())
    assert {p.name for p in made} >= {"prod.sqlite3", ".prod.lock"}
    for p in made:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert json.loads(raw_records(store.path_for("prod"))["api"])["schema_version"] == SCHEMA_VERSION


async def test_one_record_per_governor(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path)
    await store.save("prod", "api", state(4))
    await store.save("prod", "https://example.com:443", state(5))
    records = raw_records(store.path_for("prod"))
    assert sorted(records) == ["api", "https://example.com:443"]
    assert json.loads(records["api"]) == state(4).to_json()


def make_foreign_database(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.commit()
    conn.close()


DAMAGE = {
    "corrupted bytes": lambda p: p.write_bytes(b"\xff\xfe\x00garbage\x80" * 300),
    "not a database": lambda p: p.write_text('{"format": "aiogovernor-state"}'),
    "another program's database": make_foreign_database,
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=list(DAMAGE))
async def test_a_damaged_file_warns_once_and_defaults(
    tmp_path: Path, damage: Callable[[Path], None], caplog: pytest.LogCaptureFixture
) -> None:
    store = JsonFileStore(tmp_path)
    path = store.path_for("prod")
    damage(path)
    path.chmod(0o644)
    content = path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="aiogovernor.state"):
        assert await store.load("prod", "api") is None
        assert await store.list("prod") == {}
    assert len(caplog.records) == 1, caplog.records
    # The next save keeps the damaged file aside, private, and writes a good one.
    await store.save("prod", "api", state(9))
    assert await store.load("prod", "api") == state(9)
    backup = path.with_name("prod.sqlite3.corrupt")
    assert backup.read_bytes() == content
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600


async def test_a_newer_layout_is_read_as_empty_and_never_overwritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = JsonFileStore(tmp_path)
    await store.save("prod", "api", state())
    path = store.path_for("prod")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    fresh = JsonFileStore(tmp_path)  # the open database is shared: a new one is opened only
    _forget_database(path)  # when the file changes, so drop it to see the change now
    with caplog.at_level(logging.WARNING, logger="aiogovernor.state"):
        assert await fresh.load("prod", "api") is None
    assert "layout version 99" in caplog.text
    with pytest.raises(StateStoreError, match="refusing to overwrite"):
        await fresh.save("prod", "api", state(3))
    assert json.loads(raw_records(path)["api"])["limit"] == state().limit


async def test_a_bad_record_is_skipped_and_the_others_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = JsonFileStore(tmp_path)
    await store.save("prod", "good", state(4))
    huge = dict(state().to_json(), limit=10**400)
    put_raw(store.path_for("prod"), "huge", json.dumps(huge))
    put_raw(store.path_for("prod"), "lots", json.dumps({"limit": "lots"}))
    put_raw(store.path_for("prod"), "nested", "[" * 100_000 + "]" * 100_000)
    with caplog.at_level(logging.WARNING, logger="aiogovernor.state"):
        assert await store.list("prod") == {"good": state(4)}
        assert await store.load("prod", "huge") is None
    assert "'huge'" in caplog.text and "'lots'" in caplog.text and "'nested'" in caplog.text
    assert await store.names("prod") == ["good", "huge", "lots", "nested"]
    assert await store.delete("prod", "huge") is True
    assert await store.names("prod") == ["good", "lots", "nested"]


async def test_a_directory_in_place_of_the_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = JsonFileStore(tmp_path)
    store.path_for("prod").mkdir()
    with caplog.at_level(logging.WARNING, logger="aiogovernor.state"):
        assert await store.load("prod", "api") is None
    assert "is a directory" in caplog.text
    with pytest.raises(StateStoreError, match="directory"):
        await store.save("prod", "api", state())


async def test_the_lock_file_never_follows_a_symbolic_link(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path / "s")
    store.directory.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.directory / ".prod.lock").symlink_to(outside / "planted")
    with pytest.raises(StateStoreError):
        await store.save("prod", "api", state())
    assert not (outside / "planted").exists()


async def test_a_symbolic_link_in_place_of_the_file_is_not_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    elsewhere = JsonFileStore(tmp_path / "elsewhere")
    await elsewhere.save("prod", "api", state(8))
    store = JsonFileStore(tmp_path / "s")
    store.directory.mkdir()
    store.path_for("prod").symlink_to(elsewhere.path_for("prod"))
    with caplog.at_level(logging.WARNING, logger="aiogovernor.state"):
        assert await store.load("prod", "api") is None
    assert "symbolic link" in caplog.text
    await store.save("prod", "api", state(2))
    assert await elsewhere.load("prod", "api") == state(8)
    assert await store.load("prod", "api") == state(2)


async def test_an_unwritable_place_raises_a_store_error(tmp_path: Path) -> None:
    # A regular file where the directory should be: fails for root too.
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StateStoreError, match="cannot write"):
        await JsonFileStore(blocker / "state").save("prod", "api", state())


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores file modes")
async def test_a_read_only_directory_raises_a_store_error(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path / "ro")
    store.directory.mkdir()
    store.directory.chmod(0o500)
    try:
        with pytest.raises(StateStoreError):
            await store.save("prod", "api", state())
    finally:
        store.directory.chmod(0o700)


async def test_state_io_uses_a_few_threads_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JsonFileStore(tmp_path)
    inside = 0
    most = 0
    guard = threading.Lock()

    def counting(method: Callable[..., Any]) -> Callable[..., Any]:
        def run(self: JsonFileStore, *args: Any) -> Any:
            nonlocal inside, most
            with guard:
                inside += 1
                most = max(most, inside)
            try:
                time.sleep(0.002)  # long enough for other calls to pile up, if they could
                return method(self, *args)
            finally:
                with guard:
                    inside -= 1

        return run

    monkeypatch.setattr(JsonFileStore, "_save_sync", counting(JsonFileStore._save_sync))
    monkeypatch.setattr(JsonFileStore, "_save_many_sync", counting(JsonFileStore._save_many_sync))
    monkeypatch.setattr(JsonFileStore, "_load_sync", counting(JsonFileStore._load_sync))
    async with anyio.create_task_group() as tg:
        for n in range(60):
            tg.start_soon(store.save, "prod", f"g{n}", state(n + 1))
            tg.start_soon(store.load, "prod", f"g{n}")
    assert len(await store.list("prod")) == 60
    assert 1 <= most <= 4
    # The shared pool stays free for everyone else meanwhile.
    assert anyio.to_thread.current_default_thread_limiter().borrowed_tokens == 0


async def test_saves_that_come_together_share_one_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[int] = []
    real = JsonFileStore._save_many_sync

    def spy(self: JsonFileStore, environment: str, records: dict[str, str]) -> None:
        writes.append(len(records))
        real(self, environment, records)

    monkeypatch.setattr(JsonFileStore, "_save_many_sync", spy)
    stores = [JsonFileStore(tmp_path) for _ in range(3)]  # each governor makes its own
    await stores[0].save("prod", "first", state(1))  # a lone save is written at once
    async with anyio.create_task_group() as tg:
        for n in range(30):
            tg.start_soon(stores[n % 3].save, "prod", f"g{n}", state(n + 1))
    assert writes[0] == 1 and sum(writes) == 31 and len(writes) <= 3
    assert (await stores[1].load("prod", "g29")) == state(30)


async def test_a_failed_group_write_fails_every_save_of_its_group(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    bad, good = JsonFileStore(blocker / "state"), JsonFileStore(tmp_path / "ok")
    outcomes: dict[str, BaseException | None] = {}

    async def save(store: JsonFileStore, name: str) -> None:
        try:
            await store.save("prod", name, state())
        except StateStoreError as exc:
            outcomes[name] = exc
        else:
            outcomes[name] = None

    async with anyio.create_task_group() as tg:
        for n in range(6):
            tg.start_soon(save, bad if n % 2 else good, f"g{n}")
    assert all(isinstance(outcomes[f"g{n}"], StateStoreError) for n in (1, 3, 5))
    assert all(outcomes[f"g{n}"] is None for n in (0, 2, 4))
    assert sorted(await good.list("prod")) == ["g0", "g2", "g4"]


# -- migration of the whole-environment JSON files of earlier versions ---------


async def test_a_legacy_file_is_migrated_with_its_bad_entries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = JsonFileStore(tmp_path)
    legacy = tmp_path / "prod.json"
    data = legacy_file(
        legacy,
        {"api": state(4).to_json(), "db": state(6).to_json(), "huge": dict(state().to_json(), limit=10**400)},
    )
    legacy.chmod(0o644)
    assert await store.environments() == ["prod"]
    with caplog.at_level(logging.WARNING, logger="aiogovernor.state"):
        assert await store.load("prod", "api") == state(4)
        assert await store.list("prod") == {"api": state(4), "db": state(6)}
    assert "'huge'" in caplog.text
    assert await store.names("prod") == ["api", "db", "huge"]  # so that reset can remove it
    migrated = tmp_path / "prod.json.migrated"
    assert migrated.read_bytes() == data and not legacy.exists()
    assert stat.S_IMODE(migrated.stat().st_mode) == 0o600
    assert await store.environments() == ["prod"]
    await store.save("prod", "api", state(5))
    assert await JsonFileStore(tmp_path).load("prod", "api") == state(5)


async def test_a_legacy_file_written_again_by_an_older_version_adds_only_new_governors(
    tmp_path: Path,
) -> None:
    store = JsonFileStore(tmp_path)
    await store.save("prod", "api", state(5))
    legacy_file(tmp_path / "prod.json", {"api": state(1).to_json(), "old": state(2).to_json()})
    _forget_database(store.path_for("prod"))  # what a new process sees
    assert await store.list("prod") == {"api": state(5), "old": state(2)}


async def test_a_legacy_file_that_cannot_be_migrated_is_read_in_place(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path)
    legacy_file(tmp_path / "prod.json", {"api": state(4).to_json(), "db": state(6).to_json()})
    (tmp_path / ".prod.lock").mkdir()  # the migration cannot take its lock (as in a read-only folder)
    assert await store.load("prod", "api") == state(4)
    assert await store.list("prod") == {"api": state(4), "db": state(6)}
    assert (tmp_path / "prod.json").exists()
    with pytest.raises(StateStoreError):
        await store.save("prod", "api", state(5))


async def test_a_damaged_legacy_file_is_set_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = JsonFileStore(tmp_path)
    (tmp_path / "prod.json").write_bytes(b'{"format": "aiogovernor-state", "gov')
    with caplog.at_level(logging.WARNING, logger="aiogovernor.state"):
        assert await store.load("prod", "api") is None
    assert "not valid JSON" in caplog.text
    assert (tmp_path / "prod.json.corrupt").exists()
    await store.save("prod", "api", state())
    assert await store.load("prod", "api") == state()


async def test_a_newer_legacy_file_is_left_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = JsonFileStore(tmp_path)
    data = legacy_file(tmp_path / "prod.json", {}, schema_version=99)
    with caplog.at_level(logging.WARNING, logger="aiogovernor.state"):
        assert await store.load("prod", "api") is None
    assert "schema version 99" in caplog.text
    assert (tmp_path / "prod.json").read_bytes() == data


# -- scale ------------------------------------------------------------------------


def median_save_s(store: JsonFileStore, environment: str, rounds: int) -> float:
    record = json.dumps(state().to_json())
    times = []
    for n in range(rounds):
        t0 = time.perf_counter()
        store._save_sync(environment, f"probe-{n % 5}", record)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def test_a_save_costs_the_same_with_3000_governors_in_the_environment(tmp_path: Path) -> None:
    # The shape, not a speed: a save rewrote the whole environment's file (O(governors)).
    store = JsonFileStore(tmp_path)
    record = json.dumps(state().to_json())
    for env, size in (("small", 10), ("large", 3000)):
        for n in range(size):
            store._save_sync(env, f"gov-{n}", record)
    small, large = [], []
    for _ in range(5):  # interleaved, so that the machine's noise falls on both
        small.append(median_save_s(store, "small", 40))
        large.append(median_save_s(store, "large", 40))
    assert statistics.median(large) < 3 * statistics.median(small), (small, large)


async def test_a_redis_password_never_reaches_the_logs(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("redis")
    monkeypatch.delenv("AIOGOVERNOR_DISABLE_STATE")
    from aiogovernor.state import RedisStore

    class Unreachable(RedisStore):
        async def load(self, environment: str, name: str) -> LearnedState | None:
            raise StateStoreError("Redis is unreachable")

    store = Unreachable("redis://admin:s3cret-pw@127.0.0.1:1/0")
    assert "s3cret-pw" not in repr(store) and "127.0.0.1:1" in repr(store)
    gov = Governor("api", store=store)
    with caplog.at_level(logging.WARNING, logger="aiogovernor"):
        async with gov:
            pass
    assert "cannot load learned state" in caplog.text
    assert "s3cret-pw" not in caplog.text
