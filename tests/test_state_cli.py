"""``aiogovernor state list | show | reset | export``: tables, JSON and exit codes."""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from aiogovernor.__main__ import build_parser, main
from aiogovernor._state_cli import EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_STORE_ERROR, run_state
from aiogovernor.state import JsonFileStore, LearnedState


@pytest.fixture
def filled(state_dir: Path) -> JsonFileStore:
    store = JsonFileStore()
    now = time.time()
    for env, name, limit in [("prod", "api", 24.0), ("prod", "db", 6.0), ("staging", "api", 3.0)]:
        s = LearnedState(limit=limit, policy="aimd", updated_at=now - 7200, sample_count=10)
        anyio.run(store.save, env, name, s)
    return store


def run(argv: list[str], *, confirm: bool = False) -> tuple[int, str, str]:
    parser = build_parser()
    args = parser.parse_args(["state", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = run_state(args, parser, out=out, err=err, confirm=lambda _: confirm)
    return code, out.getvalue(), err.getvalue()


def test_list_prints_a_table_of_every_environment(filled: JsonFileStore) -> None:
    code, out, _ = run(["list"])
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ENVIRONMENT", "GOVERNOR", "LIMIT"]
    assert [line.split()[:3] for line in lines[2:]] == [
        ["prod", "api", "24"],
        ["prod", "db", "6"],
        ["staging", "api", "3"],
    ]
    assert "2h ago" in out


def test_show_and_json(filled: JsonFileStore) -> None:
    code, out, _ = run(["show", "api", "--env", "prod", "--json"])
    assert code == 0
    assert json.loads(out)["prod"]["api"]["limit"] == 24.0
    code, _, err = run(["show", "nope", "--env", "prod"])
    assert code == EXIT_NOT_FOUND
    assert "no learned state" in err


def test_export_dumps_everything(filled: JsonFileStore) -> None:
    code, out, _ = run(["export"])
    assert code == 0
    doc = json.loads(out)["environments"]
    assert sorted(doc) == ["prod", "staging"]
    assert LearnedState.from_json(doc["prod"]["db"]).limit == 6.0


def test_reset_asks_and_refuses_without_yes(filled: JsonFileStore) -> None:
    code, _, err = run(["reset", "api", "--env", "prod"])
    assert code == EXIT_REFUSED
    assert "--yes" in err
    assert anyio.run(filled.load, "prod", "api") is not None
    code, out, _ = run(["reset", "api", "--env", "prod"], confirm=True)
    assert code == 0
    assert "reset api[prod]" in out
    assert anyio.run(filled.load, "prod", "api") is None
    code, out, _ = run(["reset", "--env", "prod", "--yes", "--json"])
    assert code == 0
    assert json.loads(out) == {"reset": [{"environment": "prod", "name": "db"}]}
    assert anyio.run(filled.list, "prod") == {}
    assert run(["reset", "--env", "prod", "--yes"])[0] == EXIT_NOT_FOUND


def test_bad_names_are_usage_errors(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["state", "show", "--env", "../../etc"])
    assert exc.value.code == 2
    assert "separators" in capsys.readouterr().err


def test_an_unreachable_store_exits_3(state_dir: Path) -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    code, _, err = run(["--redis", "redis://127.0.0.1:1/0", "list"])
    assert code == EXIT_STORE_ERROR
    assert "unreachable" in err


def test_the_entry_point(filled: JsonFileStore) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "aiogovernor", "state", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["staging"]["api"]["limit"] == 3.0
    done = subprocess.run(
        [sys.executable, "-m", "aiogovernor", "state", "reset", "--env", "prod"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == EXIT_REFUSED


def test_a_foreign_json_file_in_the_state_dir_is_not_an_environment(filled: JsonFileStore) -> None:
    # Not names a governor can have: list and export skip them instead of crashing.
    for stem in ("notes:old", " spaced", "x" * 200):
        (filled.directory / f"{stem}.json").write_text("{}")
    assert anyio.run(filled.environments) == ["prod", "staging"]
    code, out, _ = run(["list"])
    assert code == 0 and "staging" in out
    code, out, _ = run(["export"])
    assert code == 0 and set(json.loads(out)["environments"]) == {"prod", "staging"}


def test_a_bad_redis_url_is_a_usage_error(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["state", "--redis", "http://user:hunter2@host/0", "list"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--redis" in err and "hunter2" not in err


def test_store_options_work_after_the_action(filled: JsonFileStore, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, out, _ = run(["list", "--dir", str(elsewhere)])
    assert code == 0
    assert "no learned state in directory" in out and str(elsewhere) in out
    # Before the action, as before; and the action's copy does not erase it.
    code, out, _ = run(["--dir", str(filled.directory), "list"])
    assert code == 0 and "prod" in out


def test_a_missing_directory_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    for argv in (["list", "--dir", str(missing)], ["show", "api", "--dir", str(missing)]):
        code, out, err = run(argv)
        assert code == EXIT_NOT_FOUND
        assert "no state directory" in err and str(missing) in err
        assert out == ""


def test_limits_print_as_the_integers_the_gate_admits(state_dir: Path) -> None:
    store = JsonFileStore()
    anyio.run(store.save, "prod", "api", LearnedState(limit=11.6867, policy="x", updated_at=time.time()))
    code, out, _ = run(["list"])
    assert code == 0
    assert out.splitlines()[2].split()[:3] == ["prod", "api", "11"]
    assert "11.68" not in out


def test_export_into_a_closed_pipe_is_quiet(filled: JsonFileStore) -> None:
    # `state export | head`: the reader is gone before the export writes (our end of the pipe
    # is closed before the interpreter has even started), so the write fails with EPIPE.
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiogovernor", "state", "export"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err


@pytest.mark.parametrize("where", ["database", "legacy file"])
def test_an_out_of_range_number_poisons_nothing(
    filled: JsonFileStore, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    huge = dict(LearnedState(limit=1.0, policy="aimd", updated_at=time.time()).to_json(), limit=10**400)
    if where == "database":
        conn = sqlite3.connect(filled.path_for("prod"))
        with conn:
            conn.execute("INSERT INTO governors (name, record) VALUES ('huge', ?)", (json.dumps(huge),))
        conn.close()
        env = "prod"
    else:
        doc = {
            "format": "aiogovernor-state",
            "schema_version": 1,
            "governors": {"huge": huge, "ok": huge | {"limit": 2}},
        }
        (filled.directory / "old.json").write_text(json.dumps(doc))
        env = "old"
    # Every command works, and shows the readable records.
    code, out, _ = run(["list"])
    assert code == 0 and "api" in out and "huge" not in out
    assert run(["show", "--env", "prod"])[0] == 0
    code, out, _ = run(["export"])
    assert code == 0 and json.loads(out)["environments"]["prod"]["api"]["limit"] == 24.0
    assert "'huge'" in caplog.text
    # Reset can always remove it, by name or with its environment.
    code, out, _ = run(["reset", "huge", "--env", env, "--yes"])
    assert code == 0 and f"reset huge[{env}]" in out
    assert "huge" not in anyio.run(filled.names, env)
    assert run(["reset", "huge", "--env", env, "--yes"])[0] == EXIT_NOT_FOUND


def test_reset_of_an_environment_removes_its_damaged_records(filled: JsonFileStore) -> None:
    conn = sqlite3.connect(filled.path_for("staging"))
    with conn:
        conn.execute("INSERT INTO governors (name, record) VALUES ('bad', '{not json')")
    conn.close()
    code, out, _ = run(["reset", "--env", "staging", "--yes", "--json"])
    assert code == 0
    assert json.loads(out) == {
        "reset": [{"environment": "staging", "name": "api"}, {"environment": "staging", "name": "bad"}]
    }
    assert anyio.run(filled.names, "staging") == []


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:1/0?password=hunter2",
        "redis://user:hunter2@127.0.0.1:1/0",
        "redis://:hun#ter2@127.0.0.1:1/0",
        "redis://:hun?ter2@127.0.0.1:1/0",
        "redis://:hunter2#@127.0.0.1:1/0",
    ],
)
def test_a_redis_password_never_reaches_the_output(
    state_dir: Path, url: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        code: object
        try:
            code = main(["state", "--redis", url, "list"])
        except SystemExit as exc:
            code = exc.code
    assert code in (2, EXIT_STORE_ERROR)
    captured = capsys.readouterr()
    shown = captured.out + captured.err + caplog.text
    for secret in ("hunter2", "hun", "ter2"):
        assert secret not in shown
