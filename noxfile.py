"""Development sessions: ``nox -s tests lint mypy docs bench``."""

from __future__ import annotations

import pathlib

import nox

nox.options.sessions = ["tests", "lint", "mypy", "docs"]
nox.options.default_venv_backend = "venv"
# Every Python that requires-python admits; an interpreter this machine lacks is skipped with
# a message (nox would fail on it under CI=true otherwise). CI runs the README's command on the
# machine's own Python: see the README for which versions that covered.
nox.options.error_on_missing_interpreters = False
PYTHONS = ["3.11", "3.12", "3.13", "3.14"]


def _install(session: nox.Session, *groups: str) -> None:
    session.install("--upgrade", "pip>=25.1")
    args = ["-e", ".[all]"]
    for group in groups:
        args += ["--group", group]
    session.install(*args)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite (asyncio and trio, virtual time, real local servers)."""
    _install(session, "test")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def mypy(session: nox.Session) -> None:
    """mypy --strict over src and tests."""
    _install(session, "test", "lint")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site; warnings are errors."""
    _install(session, "docs")
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmark under benchmarks/; each prints its ratios."""
    _install(session, "test", "bench")
    for script in sorted(pathlib.Path("benchmarks").glob("[!_]*.py")):  # _name.py: helpers
        session.run("python", str(script), *session.posargs)


@nox.session
def wheel(session: nox.Session) -> None:
    """Build the sdist and the wheel; install each into a fresh venv and run the quickstart."""
    session.install("build>=1.2")
    session.run("bash", "scripts/check_wheel.sh", env={"PYTHON": "python"}, external=True)
