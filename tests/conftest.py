"""Shared fixtures: every async test runs on asyncio and on trio, both in virtual time."""

from __future__ import annotations

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
