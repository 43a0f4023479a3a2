"""The command line."""

from __future__ import annotations

import io
import pathlib
import subprocess
import sys

import pytest

from aiogovernor.__main__ import main
from aiogovernor._demo import run_demo


def test_demo_finds_the_knee_and_reports() -> None:
    out = io.StringIO()
    gov = run_demo(capacity=8, duration_s=30, workers=50, out=out)
    text = out.getvalue()
    assert "limit=" in text
    assert "Final limit" in text
    assert 5 <= gov.limit <= 12
    assert gov.inflight == 0


def test_module_entry_point_runs_the_demo() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "aiogovernor", "demo", "--duration-s", "5", "--capacity", "4", "--no-plot"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "Final limit" in done.stdout


def test_bad_arguments_exit_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--capacity", "0"])
    assert exc.value.code == 2
    assert "must be >= 1" in capsys.readouterr().err


def test_demo_follows_a_capacity_shift_and_writes_a_plot(tmp_path: pathlib.Path) -> None:
    out = io.StringIO()
    path = tmp_path / "demo.png"
    gov = run_demo(capacity=16, shift_to=8, duration_s=30, workers=100, plot_path=str(path), out=out)
    assert "capacity changes to 8" in out.getvalue()
    assert 13 <= gov.limit <= 20
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("option", ["--duration-s", "--service-time-s"])
def test_an_infinite_time_is_a_usage_error_not_a_demo_that_never_ends(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", option, "inf", "--no-plot"])
    assert exc.value.code == 2
    assert "finite" in capsys.readouterr().err


def test_a_plot_that_cannot_be_written_is_a_clear_error(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "missing-folder" / "demo.png"
    assert main(["demo", "--duration-s", "2", "--capacity", "4", "--plot", str(path)]) == 1
    captured = capsys.readouterr()
    assert "Final limit" in captured.out
    assert "cannot write the plot" in captured.err and str(path) in captured.err


def test_the_demo_writes_nothing_unless_asked(tmp_path: pathlib.Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "aiogovernor", "demo", "--duration-s", "3", "--capacity", "4"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert "Final limit" in done.stdout
    assert "--plot" in done.stdout  # says how to get the picture
    assert list(tmp_path.iterdir()) == []


def test_demo_help_shows_the_defaults_and_what_it_shows(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: 16)", "(default: 0.05)", "(default: 60.0)", "(default: 200)"):
        assert default in text
    assert "knee" in text and "virtual time" in text
