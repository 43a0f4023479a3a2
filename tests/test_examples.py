"""Every example runs alone, as a user would run it, and leaves nothing behind.

Each runs in a fresh process with an empty home, working directory and temporary directory,
so that a file written anywhere a user would find it (learned state in the home folder, a
plot in the current directory) fails the test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# Every example in the folder is listed here; a new one without a test fails
# test_every_example_is_run.
RUNS_ALONE = [
    "quickstart.py",
    "service.py",
    "map_http.py",
    "retry_after.py",
    "uploads.py",
    "optuna_remote.py",
    "workers.py",
]
RUN_TWICE = ["learned_state.py"]


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[dict[str, str], dict[str, Path]]:
    places = {name: tmp_path / name for name in ("home", "cwd", "tmp")}
    for place in places.values():
        place.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOGOVERNOR_")}
    env.update(HOME=str(places["home"]), TMPDIR=str(places["tmp"]), XDG_STATE_HOME="", MPLBACKEND="Agg")
    # A warning the library raises at a user running an example (a false nesting warning, say)
    # is a bug the user sees first: it fails the example.
    env["PYTHONWARNINGS"] = "error::RuntimeWarning"
    return env, places


def _run(example: str, env: dict[str, str], cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / example), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_every_example_is_run() -> None:
    found = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert found == sorted(RUNS_ALONE + RUN_TWICE)


@pytest.mark.parametrize("example", RUNS_ALONE)
def test_the_example_runs_and_leaves_nothing_behind(
    example: str, sandbox: tuple[dict[str, str], dict[str, Path]]
) -> None:
    env, places = sandbox
    assert _run(example, env, places["cwd"]).strip()
    assert list(places["home"].rglob("*")) == []
    assert list(places["cwd"].rglob("*")) == []


def test_learned_state_starts_the_second_run_where_the_first_ended(
    sandbox: tuple[dict[str, str], dict[str, Path]],
) -> None:
    env, places = sandbox
    first = _run("learned_state.py", env, places["cwd"])
    second = _run("learned_state.py", env, places["cwd"])
    ended = re.search(r"after .* calls: limit (\d+)", first)
    started = re.search(r"starting at limit (\d+)", second)
    assert ended is not None and started is not None
    assert started.group(1) == ended.group(1)
    assert str(places["tmp"]) in first  # the state folder is printed, and is the temporary one
    _run("learned_state.py", env, places["cwd"], "--reset")
    assert list(places["tmp"].iterdir()) == []
    assert list(places["home"].rglob("*")) == [] and list(places["cwd"].rglob("*")) == []
