"""The import graph keeps its layers: read every module's imports with `ast`, no import executed.

Arrows point down: integrations -> core -> policies; stores implement the core's
protocol and never import a gate; the core imports no integration and no store;
no module takes part in an import circle.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

import aiogovernor

PACKAGE = "aiogovernor"
SRC = Path(aiogovernor.__file__).parent

# The core: the gate, its helpers and the vocabulary they share. Everything else is
# an integration (public subpackages, the CLI), a store (`state`) or a policy (`limits`).
CORE = frozenset(
    {
        "aiogovernor._chunking",
        "aiogovernor._classify",
        "aiogovernor._clock",
        "aiogovernor._clone",
        "aiogovernor._env",
        "aiogovernor._events",
        "aiogovernor._feedback",
        "aiogovernor._frozen",
        "aiogovernor._governor",
        "aiogovernor._guard",
        "aiogovernor._http",
        "aiogovernor._lag",
        "aiogovernor._history",
        "aiogovernor._map",
        "aiogovernor._map_options",
        "aiogovernor._names",
        "aiogovernor._permit",
        "aiogovernor._persistence",
        "aiogovernor._plot",
        "aiogovernor._progress",
        "aiogovernor._record",
        "aiogovernor._registry",
        "aiogovernor._retry",
        "aiogovernor._samples",
        "aiogovernor._time_gates",
        "aiogovernor._validate",
        # The thread gate and its maps: core too (DESIGN's "gates: async Governor, sync Governor"),
        # held to the core's rules: no integration, no store, no third-party package.
        "aiogovernor.sync",
        "aiogovernor.sync._gate",
        "aiogovernor.sync._map",
        "aiogovernor.sync._persistence",
        "aiogovernor.sync._processes",
        # Modules the core may grow (they are core when they exist).
        "aiogovernor._attempt",
        "aiogovernor._sizing",
    }
)
# What the core's layers below it offer: the policies.
POLICIES = "aiogovernor.limits"
STORES = "aiogovernor.state"
# The core may use its one hard dependency, and trio where anyio runs on it.
CORE_THIRD_PARTY = frozenset({"anyio", "sniffio", "trio"})
# Optional extras the core imports where used (inside a function, with an install hint).
CORE_LAZY_EXTRAS = {
    "aiogovernor._progress": frozenset({"rich"}),
    "aiogovernor._plot": frozenset({"matplotlib"}),
}
# What stores and policies may import from the rest of the package: the protocol and
# record they implement, and the shared vocabulary. Never a gate, never the package.
STORES_MAY_USE = frozenset(
    {"aiogovernor._names", "aiogovernor._persistence", "aiogovernor._record", "aiogovernor._validate"}
)
POLICIES_MAY_USE = frozenset(
    {
        "aiogovernor._clock",
        # Two helpers that import nothing of the package: a copy of a configured object
        # (the default policy's), and frozen dataclasses built cheaply (a policy's answer).
        "aiogovernor._clone",
        "aiogovernor._env",
        "aiogovernor._events",
        "aiogovernor._frozen",
        "aiogovernor._samples",
        "aiogovernor._validate",
    }
)
# Known arrows that run against the layers, each with its reason; allowed only inside
# a function (imported on first use, never at import time).
ALLOWED_UPWARD = {
    # Deprecated alias: `aiogovernor.state.FleetCeiling` resolves (lazily, with a
    # DeprecationWarning) to its new home.
    ("aiogovernor.state", "aiogovernor.fleet"),
    # The package's __init__ is the composition root: it names the default store,
    # imported on first use.
    ("aiogovernor", "aiogovernor.state"),
}


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    lazy: bool  # inside a function: runs when called, not at import
    typing_only: bool  # under `if TYPE_CHECKING:`: never runs


def module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, source: str, is_package: bool, modules: Iterable[str]) -> list[Import]:
    """Every import statement of one module, resolved to absolute module names."""
    known = set(modules)
    found: list[Import] = []
    base = name.split(".") if is_package else name.split(".")[:-1]

    def visit(node: ast.AST, lazy: bool, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit_stmt(stmt, lazy, True)
                for stmt in child.orelse:
                    visit_stmt(stmt, lazy, typing_only)
                continue
            visit_stmt(child, lazy, typing_only)

    def visit_stmt(child: ast.AST, lazy: bool, typing_only: bool) -> None:
        if isinstance(child, ast.Import):
            for alias in child.names:
                found.append(Import(name, alias.name, child.lineno, lazy, typing_only))
        elif isinstance(child, ast.ImportFrom):
            if child.level:
                anchor = base[: len(base) - child.level + 1]
                module = ".".join([*anchor, child.module] if child.module else anchor)
            else:
                module = child.module or ""
            for alias in child.names:
                sub = f"{module}.{alias.name}"
                target = sub if sub in known else module
                found.append(Import(name, target, child.lineno, lazy, typing_only))
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            visit(child, True, typing_only)
        else:
            visit(child, lazy, typing_only)

    visit(ast.parse(source), False, False)
    return found


def package_imports(root: Path = SRC, package: str = PACKAGE) -> list[Import]:
    files = {module_name(p, root, package): p for p in sorted(root.rglob("*.py"))}
    return [
        imp
        for name, path in files.items()
        for imp in imports_of(name, path.read_text(encoding="utf-8"), path.name == "__init__.py", files)
    ]


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_violations(imports: Iterable[Import]) -> list[str]:
    """The imports that run against the layers, in words."""
    bad: list[str] = []
    for imp in imports:
        src, dst = imp.source, imp.target
        where = f"{src}:{imp.line} imports {dst}"
        if imp.lazy and (src, dst) in ALLOWED_UPWARD:
            continue
        ours = within(dst, PACKAGE)
        top = dst.split(".")[0]
        if within(src, STORES):
            if ours and not (within(dst, STORES) or dst in STORES_MAY_USE):
                bad.append(f"{where} (a store reaches above the persistence protocol)")
        elif within(src, POLICIES):
            if ours and not (within(dst, POLICIES) or dst in POLICIES_MAY_USE):
                bad.append(f"{where} (a policy reaches above the vocabulary)")
        elif src in CORE:
            if ours:
                if dst not in CORE and not within(dst, POLICIES):
                    bad.append(f"{where} (the core imports an integration, a store or the package)")
            elif (
                top not in sys.stdlib_module_names
                and top not in CORE_THIRD_PARTY
                and not (imp.lazy and top in CORE_LAZY_EXTRAS.get(src, frozenset()))
            ):
                bad.append(f"{where} (the core imports a third-party package)")
        elif src == PACKAGE and ours and not (dst in CORE or within(dst, POLICIES)):
            bad.append(f"{where} (`import aiogovernor` would pull in an integration or a store)")
    return bad


def import_circles(imports: Iterable[Import]) -> list[list[str]]:
    """Strongly connected groups of modules among the imports that run (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.typing_only or (imp.lazy and (imp.source, imp.target) in ALLOWED_UPWARD):
            continue
        if within(imp.target, PACKAGE) and imp.target != imp.source:
            graph.setdefault(imp.source, set()).add(imp.target)
            graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return circles


def test_the_core_modules_listed_exist() -> None:
    names = {imp.source for imp in package_imports()}
    present = {m for m in CORE if m in names}
    assert {"aiogovernor._governor", "aiogovernor._feedback", "aiogovernor._time_gates"} <= present
    assert "aiogovernor._persistence" in present


def test_no_import_runs_against_the_layers() -> None:
    assert layer_violations(package_imports()) == []


def test_no_import_circle() -> None:
    assert import_circles(package_imports()) == []


def test_the_feedback_loop_knows_no_event_loop() -> None:
    # A thread gate reuses it as-is: no asyncio, anyio or trio, not even lazily.
    targets = {imp.target.split(".")[0] for imp in package_imports() if imp.source == "aiogovernor._feedback"}
    assert not targets & {"asyncio", "anyio", "trio", "sniffio", "threading"}


def test_the_thread_gate_is_held_to_the_cores_rules() -> None:
    names = {imp.source for imp in package_imports()}
    sync_modules = {n for n in names if within(n, "aiogovernor.sync")}
    assert sync_modules and sync_modules <= CORE, sync_modules - CORE


def test_no_http_client_below_its_integration() -> None:
    # requests and aiohttp, like httpx, are imported only by their own integration modules.
    clients = {"requests": "aiogovernor.requests", "aiohttp": "aiogovernor.aiohttp", "httpx": None}
    for imp in package_imports():
        top = imp.target.split(".")[0]
        if top in clients and not imp.typing_only:
            own = clients[top]
            assert imp.source == own or (own is None and not within(imp.source, "aiogovernor.sync")), imp
            assert imp.source not in CORE, imp


def _synthetic(sources: Mapping[str, str]) -> list[Import]:
    names = list(sources)
    return [imp for n, s in sources.items() for imp in imports_of(n, s, False, names)]


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("aiogovernor.state._json", "from aiogovernor._governor import Governor\n"),
        ("aiogovernor.state._json", "if TYPE_CHECKING:\n    from aiogovernor import Governor\n"),
        ("aiogovernor.limits._aimd", "from .._governor import Governor\n"),
        ("aiogovernor._governor", "def f():\n    from .state import JsonFileStore\n"),
        ("aiogovernor._governor", "import aiogovernor.httpx\n"),
        ("aiogovernor._feedback", "from aiogovernor.fleet import FleetCeiling\n"),
        ("aiogovernor._persistence", "import redis\n"),
        ("aiogovernor.sync._gate", "import requests\n"),
        ("aiogovernor.sync._map", "from aiogovernor.httpx import GovernedTransport\n"),
        ("aiogovernor", "from .state import JsonFileStore\n"),
    ],
)
def test_the_checker_sees_an_arrow_against_the_layers(module: str, source: str) -> None:
    known = [module, "aiogovernor._governor", "aiogovernor.state", "aiogovernor.httpx", "aiogovernor.fleet"]
    imports = imports_of(module, source, module == PACKAGE, known)
    assert layer_violations(imports), source


def test_the_checker_sees_a_circle() -> None:
    imports = _synthetic(
        {
            "aiogovernor._governor": "from ._feedback import Feedback\n",
            "aiogovernor._feedback": "def f():\n    from ._persistence import x\n",
            "aiogovernor._persistence": "from ._governor import Governor\n",
        }
    )
    assert import_circles(imports) == [
        ["aiogovernor._feedback", "aiogovernor._governor", "aiogovernor._persistence"]
    ]
    typing_only = _synthetic(
        {
            "aiogovernor._governor": "from ._persistence import x\n",
            "aiogovernor._persistence": "if TYPE_CHECKING:\n    from ._governor import Governor\n",
        }
    )
    assert import_circles(typing_only) == []
