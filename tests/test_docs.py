"""The docs' examples do what they say: run them (those that need no network)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from aiogovernor import AIMD, Governor, Outcome, default_classify

pytestmark = pytest.mark.anyio

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _block_after(page: str, marker: str) -> str:
    text = (DOCS / page).read_text()
    match = re.search(re.escape(marker) + r".*?```python\n(.*?)```", text, re.S)
    assert match is not None, f"no python block after {marker!r} in {page}"
    return match.group(1)


async def _run_snippet(code: str, namespace: dict[str, Any]) -> None:
    source = "async def _snippet():\n" + textwrap.indent(code, "    ")
    exec(compile(source, "<docs>", "exec"), namespace)
    await namespace["_snippet"]()


@pytest.mark.parametrize("fails", [False, True], ids=["ok", "raises"])
async def test_the_guides_acquire_release_example_releases_the_permit(fails: bool) -> None:
    code = _block_after("guide.md", "For code that cannot use `async with`").split("\n\n")[0]
    gov = Governor("api", AIMD(max_limit=4))

    async def call() -> int:
        if fails:
            raise ValueError("boom")
        return 429

    namespace = {"gov": gov, "call": call, "Outcome": Outcome, "default_classify": default_classify}
    if fails:
        with pytest.raises(ValueError, match="boom"):  # the work's own error, not a NameError
            await _run_snippet(code, namespace)
    else:
        await _run_snippet(code, namespace)
    assert gov.inflight == 0
    assert gov.stats().counts[(Outcome.ERROR if fails else Outcome.OVERLOAD).value] == 1
