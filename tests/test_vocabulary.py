"""What users read speaks their language: no internal vocabulary, no reST that renders literally.

The docs, the docstrings (the API reference is built from them), the README and the examples
are read by people who never saw this project's tracker or its history: a reference to an
issue number or to how the code came to be means nothing to them. The API reference renders
docstrings as Markdown, where a reST ``::`` literal block shows as a stray ``::`` and an
unhighlighted paragraph: code blocks are fenced.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
READ_BY_USERS = [
    *sorted((ROOT / "src").rglob("*.py")),
    *sorted((ROOT / "docs").rglob("*.md")),
    *sorted((ROOT / "examples").rglob("*.py")),
    *sorted((ROOT / "examples").rglob("*.md")),
    *sorted((ROOT / "benchmarks").rglob("*.py")),  # their tables are pasted into the docs
    ROOT / "README.md",
]

INTERNAL = re.compile(
    # This project's tracker ("issue 3"); another project's issue is cited with its name and
    # a '#' ("httpx issue #1171"), which a reader can look up.
    r"\bissues? \d+\b"
    r"|\bthe seed(?:'s)?\b|\bseed uploader"  # where the code came from
    r"|\bthis library grew from\b|\bgrew out of this project\b",
    re.IGNORECASE,
)


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", READ_BY_USERS, ids=_rel)
def test_no_internal_vocabulary(path: Path) -> None:
    found = [
        f"{_rel(path)}:{n}: {line.strip()}"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if INTERNAL.search(line)
    ]
    assert found == []


@pytest.mark.parametrize("path", sorted((ROOT / "src").rglob("*.py")), ids=_rel)
def test_docstring_code_is_fenced_not_rest(path: Path) -> None:
    found = [
        f"{_rel(path)}:{n}: {line.strip()}"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if line.rstrip().endswith("::") and not line.lstrip().startswith("#")
    ]
    assert found == []
