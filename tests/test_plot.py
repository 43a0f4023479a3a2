"""`Governor.plot`: the demo's picture, drawn from a live governor's decisions."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aiogovernor import AIMD, Governor, Outcome, PlotError
from aiogovernor.testing import ManualClock

PNG = b"\x89PNG\r\n\x1a\n"


def busy_governor() -> Governor:
    clock = ManualClock()
    gov = Governor("plotted", AIMD(initial_limit=4), environment="plots", clock=clock, store=None)
    for i in range(80):
        permit = gov.try_acquire()
        assert permit is not None
        clock.advance(0.01 + 0.001 * (i % 5))
        permit.release(Outcome.OVERLOAD if i % 25 == 24 else Outcome.OK)
    assert any(d.window is not None and d.window.overload for d in gov.decisions)
    return gov


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "gov.png"
    busy_governor().plot(str(path))
    assert path.read_bytes()[:8] == PNG


def test_plot_of_a_governor_that_decided_nothing_yet(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "empty.png"
    Governor("idle", store=None).plot(str(path))
    assert path.read_bytes()[:8] == PNG


def test_an_unwritable_path_is_a_plot_error(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    with pytest.raises(PlotError, match="cannot write the plot"):
        busy_governor().plot(str(tmp_path / "missing-folder" / "gov.png"))


def test_without_matplotlib_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"aiogovernor\[plot\]"):
        busy_governor().plot(str(tmp_path / "gov.png"))
