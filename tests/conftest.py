"""Shared fixtures: every async test runs on asyncio and on trio, both in virtual time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio.testing

from aiogovernor.sim import VirtualTimeEventLoop


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {"loop_factory": VirtualTimeEventLoop}), id="asyncio"),
        pytest.param(("trio", {"clock": "virtual"}), id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """asyncio on aiogovernor's virtual-time loop; trio on its autojumping mock clock."""
    name, options = request.param
    if name == "trio":
        # A fresh clock per test: a MockClock keeps its time between runs.
        options = {"clock": trio.testing.MockClock(autojump_threshold=0)}
    return name, options


@pytest.fixture
def asyncio_only(anyio_backend: tuple[str, dict[str, Any]]) -> None:
    """Skip on trio: for tests of asyncio-only fast paths."""
    if anyio_backend[0] != "asyncio":
        pytest.skip("asyncio-only")


@pytest.fixture(autouse=True)
def _private_state(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Never touch the user's state directory, and keep persistence off unless a test turns it on.

    Governors default to a JSON file store; a test that did not ask for one
    should neither leave files behind nor start from what another test learned.
    Tests of persistence use the ``state_dir`` fixture or pass a store.
    """
    monkeypatch.setenv("AIOGOVERNOR_STATE_DIR", str(tmp_path_factory.mktemp("state")))
    monkeypatch.setenv("AIOGOVERNOR_DISABLE_STATE", "1")


@pytest.fixture
def state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Persistence on, with the default store in a fresh directory (which does not exist yet)."""
    directory = tmp_path / "state"
    monkeypatch.setenv("AIOGOVERNOR_STATE_DIR", str(directory))
    monkeypatch.delenv("AIOGOVERNOR_DISABLE_STATE", raising=False)
    return directory
