"""The public surface: sorted re-exports, documented names, no integration pulled in by the core."""

from __future__ import annotations

import inspect
import subprocess
import sys
from typing import Any

import pytest

import aiogovernor
import aiogovernor.aiohttp
import aiogovernor.dispatch
import aiogovernor.dispatch.testing
import aiogovernor.fleet
import aiogovernor.httpx
import aiogovernor.limits
import aiogovernor.metrics
import aiogovernor.metrics.otel
import aiogovernor.metrics.prometheus
import aiogovernor.requests
import aiogovernor.sim
import aiogovernor.state
import aiogovernor.sync
import aiogovernor.testing
import aiogovernor.testing.servers
import aiogovernor.uploads
import aiogovernor.workers

PUBLIC_MODULES = [
    aiogovernor,
    aiogovernor.aiohttp,
    aiogovernor.dispatch,
    aiogovernor.dispatch.testing,
    aiogovernor.fleet,
    aiogovernor.httpx,
    aiogovernor.limits,
    aiogovernor.metrics,
    aiogovernor.metrics.otel,
    aiogovernor.metrics.prometheus,
    aiogovernor.requests,
    aiogovernor.sim,
    aiogovernor.state,
    aiogovernor.sync,
    aiogovernor.testing,
    aiogovernor.testing.servers,
    aiogovernor.uploads,
    aiogovernor.workers,
]


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_all_is_sorted_and_complete(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    assert list(names) == sorted(names), "keep __all__ sorted"
    assert len(set(names)) == len(names)
    for name in names:
        assert hasattr(module, name), name


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_public_names_are_documented(module: object) -> None:
    for name in module.__all__:  # type: ignore[attr-defined]
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{module.__name__}.{name} has no docstring"  # type: ignore[attr-defined]


def test_public_classes_live_in_private_modules() -> None:
    for name in aiogovernor.__all__:
        obj = getattr(aiogovernor, name)
        if inspect.isclass(obj):
            assert obj.__module__.split(".")[-1].startswith("_"), (name, obj.__module__)


def test_version_comes_from_metadata() -> None:
    from importlib.metadata import version

    assert aiogovernor.__version__ == version("aiogovernor")


def test_core_import_pulls_in_no_integration() -> None:
    heavy = ["httpx", "redis", "optuna", "rich", "matplotlib", "aiofiles", "psutil", "trio", "anyio"]
    heavy += ["opentelemetry", "prometheus_client", "requests", "aiohttp", "urllib3"]
    code = (
        "import sys, aiogovernor, aiogovernor.limits, aiogovernor.state, aiogovernor.metrics\n"
        "import aiogovernor.sync\n"
        "aiogovernor.Governor('x', store=None)\n"
        "aiogovernor.sync.Governor('y', store=None)\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_py_typed_is_shipped() -> None:
    from importlib.resources import files

    assert files("aiogovernor").joinpath("py.typed").is_file()


@pytest.mark.parametrize(
    ("old", "module", "name"),
    [
        ("Adjustment", aiogovernor.limits, "Adjustment"),
        ("Clock", aiogovernor.testing, "Clock"),
        ("MapProgress", aiogovernor, "Progress"),
        ("Sample", aiogovernor.limits, "Sample"),
        ("Window", aiogovernor.limits, "Window"),
        ("WindowAggregator", aiogovernor.limits, "WindowAggregator"),
        ("loop_time", aiogovernor.testing, "loop_time"),
    ],
)
def test_moved_names_still_work_with_a_warning(old: str, module: object, name: str) -> None:
    assert old not in aiogovernor.__all__
    with pytest.warns(DeprecationWarning, match=f"{module.__name__}.{name}"):  # type: ignore[attr-defined]
        assert getattr(aiogovernor, old) is getattr(module, name)


def test_the_upload_progress_bar_class_still_works_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match="progress=True"):
        bar_class: Any = aiogovernor.uploads.UploadProgress
    with bar_class(total_items=1, governor=aiogovernor.Governor("t", store=None), enabled=False) as bar:
        bar.finished(failed=False)


def test_testing_needs_no_server_packages_until_the_servers_are_used() -> None:
    code = (
        "import sys, aiogovernor.testing\n"
        "print(','.join(m for m in ('starlette', 'uvicorn', 'python_multipart') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_servers_say_which_extra_they_need() -> None:
    code = "import sys\nsys.modules['uvicorn'] = None\nimport aiogovernor.testing.servers"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0
    assert "pip install 'aiogovernor[testing]'" in out.stderr
