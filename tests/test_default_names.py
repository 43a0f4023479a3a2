"""Governors made for a call without one are named so that unrelated upstreams do not share a limit."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiogovernor import Governor, governed_map
from aiogovernor._names import MAX_NAME_LENGTH, _warned, name_after_callable
from aiogovernor.uploads import upload_files

pytestmark = pytest.mark.anyio


async def fetch(url: str, *, token: str = "") -> str:
    return url


def decorated(fn: Any) -> Any:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await fn(*args, **kwargs)

    return wrapper


class Client:
    async def get(self, url: str) -> str:
        return url


class CallableThing:
    async def __call__(self, x: int) -> int:
        return x


def test_partials_and_decorators_are_named_after_the_function_they_wrap() -> None:
    name, why = name_after_callable(functools.partial(fetch, token="s3cr3t"), prefix="map:")
    assert name == "map:fetch"
    assert why is not None and "partial" in why
    assert "s3cr3t" not in name  # arguments never go into a name
    assert name_after_callable(functools.partial(functools.partial(fetch), token="x"), prefix="map:")[0] == (
        "map:fetch"
    )
    assert name_after_callable(decorated(fetch), prefix="map:") == ("map:fetch", None)
    assert name_after_callable(Client().get, prefix="map:") == ("map:Client.get", None)


def test_lambdas_and_callable_objects_are_ambiguous() -> None:
    name, why = name_after_callable(lambda x: x, prefix="map:")
    assert name.endswith("<lambda>") and why is not None
    name, why = name_after_callable(CallableThing(), prefix="map:")
    assert name == "map:CallableThing" and why is not None


def test_a_deeply_nested_name_is_cut_to_a_valid_length() -> None:
    async def f() -> None: ...

    f.__qualname__ = "outer.<locals>." * 20 + "f"
    name, _ = name_after_callable(f, prefix="map:")
    assert len(name) == MAX_NAME_LENGTH and name.startswith("map:") and name.endswith(".f")


@pytest.fixture
def fresh_warnings() -> None:
    _warned.clear()


@pytest.mark.usefixtures("fresh_warnings")
async def test_a_persisted_ambiguous_name_is_warned_about_once(state_dir: Path) -> None:
    with pytest.warns(UserWarning, match="partials of one function share") as record:
        await governed_map(functools.partial(fetch, token="a"), ["a"])
    assert len(record) == 1
    assert "map:fetch" in str(record[0].message) and "governor=Governor(" in str(record[0].message)
    assert record[0].filename == __file__  # points at the call, not into the library
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        await governed_map(functools.partial(fetch, token="b"), ["b"])  # once per name


@pytest.mark.usefixtures("fresh_warnings")
async def test_no_warning_when_nothing_is_kept_or_the_name_is_clear() -> None:
    # The suite's default: persistence off (AIOGOVERNOR_DISABLE_STATE=1).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        await governed_map(functools.partial(fetch, token="a"), ["a"])
        await governed_map(fetch, ["a"])


async def test_upload_files_names_its_governor_after_the_destination(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[str] = []

    class Spy(Governor):
        def __init__(self, name: str, *args: Any, **kwargs: Any) -> None:
            seen.append(name)
            super().__init__(name, *args, **kwargs)

    monkeypatch.setattr("aiogovernor.uploads._uploader.Governor", Spy)
    path = tmp_path / "a.txt"
    path.write_text("x")

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        await upload_files(client, [path], url="https://user:pw@files.example.com:8443/up?key=k")
        await upload_files(client, [path], url="http://other.example.com/up")
    assert seen == ["uploads:https://files.example.com:8443", "uploads:http://other.example.com"]
