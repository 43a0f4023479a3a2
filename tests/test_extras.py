"""An integration imported without its extra says which extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "missing", "extra"),
    [
        ("aiogovernor.httpx", "httpx", "httpx"),
        ("aiogovernor.uploads", "httpx", "httpx"),
        ("aiogovernor.requests", "requests", "requests"),
        ("aiogovernor.aiohttp", "aiohttp", "aiohttp"),
    ],
)
def test_a_missing_extra_names_the_install_line(module: str, missing: str, extra: str) -> None:
    # A None entry in sys.modules makes `import missing` fail as if it were not installed.
    code = f"import sys; sys.modules[{missing!r}] = None; import {module}"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert f"pip install 'aiogovernor[{extra}]'" in done.stderr
