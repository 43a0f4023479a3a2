"""Environment variables read per governor: what `os.environ` says, at once."""

from __future__ import annotations

import os

import pytest

from aiogovernor._env import getenv


def test_getenv_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIOGOVERNOR_TEST_VARIABLE", raising=False)
    assert getenv("AIOGOVERNOR_TEST_VARIABLE") is None
    monkeypatch.setenv("AIOGOVERNOR_TEST_VARIABLE", "staging é")
    assert getenv("AIOGOVERNOR_TEST_VARIABLE") == "staging é"
    monkeypatch.setenv("AIOGOVERNOR_TEST_VARIABLE", "")
    assert getenv("AIOGOVERNOR_TEST_VARIABLE") == ""
    monkeypatch.delenv("AIOGOVERNOR_TEST_VARIABLE")
    assert getenv("AIOGOVERNOR_TEST_VARIABLE") is None


def test_getenv_reads_a_mapping_put_in_place_of_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "environ", {"AIOGOVERNOR_TEST_VARIABLE": "x"})
    assert getenv("AIOGOVERNOR_TEST_VARIABLE") == "x"
    assert getenv("AIOGOVERNOR_OTHER") is None
