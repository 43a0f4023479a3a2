"""Learned-state records, name validation, and the memory and JSON file stores."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

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


async def test_files_are_private_and_versioned(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path / "new" / "dir")
    await store.save("prod", "api", state())
    path = store.path_for("prod")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["environment"] == "prod"
    assert list(doc["governors"]) == ["api"]
    assert [p.name for p in store.directory.iterdir() if p.suffix == ".tmp"] == []


async def test_a_save_leaves_other_environments_temporary_files_alone(tmp_path: Path) -> None:
    # Another process is writing "prod-eu" (under its own lock): its temporary
    # file must survive a save to an environment whose name holds glob characters.
    store = JsonFileStore(tmp_path)
    in_flight = tmp_path / ".prod-eu.json.abc123.tmp"
    in_flight.write_bytes(b"{}")
    await store.save("prod*", "api", state())
    await store.save("prod-[e]u", "api", state())
    assert in_flight.exists()
    assert (await store.load("prod*", "api")) == state()


async def test_a_save_leaves_the_temporary_files_of_an_environment_named_like_its_own_alone(
    tmp_path: Path,
) -> None:
    # "api" and "api.json.eu" are two environments with two locks: a writer of "api" must not
    # take "api.json.eu"'s in-flight temporary file for a stale one of its own.
    store = JsonFileStore(tmp_path)
    in_flight = tmp_path / ".api.json.eu.json.abc123.tmp"
    in_flight.write_bytes(b"{}")
    stale = tmp_path / ".api.json.k2x_9q0z.tmp"  # what mkstemp names: this one is "api"'s own
    stale.write_bytes(b"{}")
    await store.save("api", "gov", state())
    assert in_flight.exists()
    assert not stale.exists()


DAMAGE = {
    "empty": b"",
    "corrupted bytes": b"\xff\xfe\x00garbage\x80",
    "truncated JSON": b'{"format": "aiogovernor-state", "schema_version": 1, "governors": {"api": {"lim',
    "a JSON list": b"[1, 2, 3]",
    "a foreign object": b'{"hello": "world"}',
}


@pytest.mark.parametrize("content", DAMAGE.values(), ids=list(DAMAGE))
async def test_a_damaged_file_warns_once_and_defaults(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    store = JsonFileStore(tmp_path)
    path = store.path_for("prod")
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="aiogovernor.state"):
        assert await store.load("prod", "api") is None
        assert await store.list("prod") == {}
    assert len(caplog.records) == 1, caplog.records
    # The next save keeps the damaged file aside and writes a good one.
    await store.save("prod", "api", state(9))
    assert await store.load("prod", "api") == state(9)
    assert path.with_name("prod.json.corrupt").read_bytes() == content


async def test_an_unknown_schema_version_is_read_as_empty_and_never_overwritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = JsonFileStore(tmp_path)
    path = store.path_for("prod")
    newer = {"format": "aiogovernor-state", "schema_version": 99, "governors": {}}
    path.write_text(json.dumps(newer))
    with caplog.at_level(logging.WARNING, logger="aiogovernor.state"):
        assert await store.load("prod", "api") is None
    assert "schema version 99" in caplog.text
    with pytest.raises(StateStoreError, match="refusing to overwrite"):
        await store.save("prod", "api", state())
    assert json.loads(path.read_text()) == newer


async def test_a_bad_entry_is_skipped_and_the_others_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = JsonFileStore(tmp_path)
    await store.save("prod", "good", state(4))
    doc = json.loads(store.path_for("prod").read_text())
    doc["governors"]["bad"] = {"limit": "lots"}
    store.path_for("prod").write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING, logger="aiogovernor.state"):
        assert await store.list("prod") == {"good": state(4)}
    assert "'bad'" in caplog.text


async def test_a_directory_in_place_of_the_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = JsonFileStore(tmp_path)
    store.path_for("prod").mkdir()
    with caplog.at_level(logging.WARNING, logger="aiogovernor.state"):
        assert await store.load("prod", "api") is None
    assert "is a directory" in caplog.text
    with pytest.raises(StateStoreError, match="directory"):
        await store.save("prod", "api", state())


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
