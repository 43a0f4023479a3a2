"""``--policy [NAME=]module:callable``: a policy under development, loaded by name or from a file."""

from __future__ import annotations

import importlib
import importlib.util
import os
import pathlib
import sys
from collections.abc import Callable


def load_factory(spec: str) -> tuple[str, Callable[[], object]]:
    """The name and the callable of ``[NAME=]module:callable`` (``module`` may be a path to a .py file).

    The name is NAME, or the callable's own name without one.
    """
    name, _, target = spec.rpartition("=") if "=" in spec else ("", "", spec)
    module_name, _, attr = target.rpartition(":")
    if not module_name or not attr:
        raise SystemExit(f"--policy {spec!r}: expected [NAME=]module:callable")
    if module_name.endswith(".py") or os.sep in module_name:
        path = pathlib.Path(module_name).resolve()
        loaded = importlib.util.spec_from_file_location(path.stem, path)
        if loaded is None or loaded.loader is None:
            raise SystemExit(f"--policy {spec!r}: cannot load {path}")
        module = importlib.util.module_from_spec(loaded)
        sys.modules[path.stem] = module
        loaded.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise SystemExit(f"--policy {spec!r}: {module_name} has no callable {attr!r}")
    return name or attr, factory
