"""``aiogovernor state ...`` (inspect, export and reset learned state) and ``aiogovernor plot``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from .limits import gate_limit
from .state import (
    JsonFileStore,
    LearnedState,
    StateStore,
    StateStoreError,
    check_environment,
    check_governor_name,
)

__all__ = [
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_STORE_ERROR",
    "add_plot_parser",
    "add_state_parser",
    "run_plot",
    "run_state",
]

EXIT_OK = 0
EXIT_NOT_FOUND = 1
# 2 is argparse's: bad usage or a bad name.
EXIT_STORE_ERROR = 3
EXIT_REFUSED = 4


def add_state_parser(commands: Any) -> None:
    """Add the ``state`` command and its subcommands to ``commands`` (argparse sub-parsers)."""
    state = commands.add_parser(
        "state",
        help="inspect, export and reset learned state",
        description=(
            "Inspect, export and reset what governors learned. Exit codes: 0 done; 1 no such state; "
            "2 bad usage or name; 3 the store cannot be read or written; 4 reset refused (no --yes)."
        ),
    )
    _store_options(state, default=None)
    actions = state.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser, *, name: bool, env_default: bool) -> None:
        _store_options(p, default=argparse.SUPPRESS)
        if name:
            p.add_argument("name", nargs="?", help="a governor's name (default: every governor)")
        p.add_argument(
            "--env",
            help="the environment (default: $AIOGOVERNOR_ENV or 'default')"
            if env_default
            else "only this environment (default: every environment)",
        )
        p.add_argument("--json", action="store_true", help="print JSON for scripts")

    common(actions.add_parser("list", help="every governor's learned limit"), name=False, env_default=False)
    common(actions.add_parser("show", help="one governor's learned state"), name=True, env_default=True)
    reset = actions.add_parser("reset", help="forget learned state (asks unless --yes)")
    common(reset, name=True, env_default=True)
    reset.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    history = actions.add_parser(
        "history",
        help="one governor's last decisions, as saved with its state",
        description=(
            "Print the decisions kept with a governor's learned state, oldest first: when (local "
            "time), the limit before and after, why (up, down, overload, hold, reset), and its "
            "window's p50 latency, successes, overloads and peak in flight."
        ),
    )
    _store_options(history, default=argparse.SUPPRESS)
    history.add_argument("name", help="the governor's name")
    history.add_argument("--env", help="the environment (default: $AIOGOVERNOR_ENV or 'default')")
    history.add_argument("--json", action="store_true", help="print JSON for scripts")
    export = actions.add_parser("export", help="dump learned state as JSON")
    _store_options(export, default=argparse.SUPPRESS)
    export.add_argument("--env", help="only this environment (default: every environment)")


def _store_options(parser: argparse.ArgumentParser, *, default: Any) -> None:
    # The store options are accepted before the action (``state --dir X list``) and after
    # it (``state list --dir X``, where people type them). An action's own copy defaults to
    # SUPPRESS so that, when absent, it leaves the value given before the action in place.
    parser.add_argument(
        "--dir", default=default, help="state directory (default: $AIOGOVERNOR_STATE_DIR or the user's)"
    )
    parser.add_argument(
        "--redis", metavar="URL", default=default, help="read a Redis store instead of the JSON files"
    )


def _store(args: argparse.Namespace) -> StateStore:
    if args.redis:
        from .state import RedisStore  # the redis extra, needed only with --redis

        return RedisStore(args.redis)
    return JsonFileStore(args.dir)


def _age(updated_at: float, now: float) -> str:
    age = max(0.0, now - updated_at)
    for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60)):
        if age >= seconds:
            return f"{age / seconds:.0f}{unit} ago"
    return f"{age:.0f}s ago"


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=out)


def _where(store: StateStore) -> str:
    """Which store was read, for messages: a directory, or the (redacted) Redis store."""
    if isinstance(store, JsonFileStore):
        return f"directory {str(store.directory)!r}"
    return repr(store)


def _rows(entries: list[tuple[str, str, LearnedState]]) -> list[list[str]]:
    now = time.time()
    rows = [["ENVIRONMENT", "GOVERNOR", "LIMIT", "POLICY", "SAMPLES", "LATENCY FLOOR", "UPDATED"]]
    for env, name, s in entries:
        floor = "-" if s.latency_floor_s is None else f"{s.latency_floor_s * 1000:.1f} ms"
        rows.append(
            # The integer the gate admits, not the policy's float (11.69 would read as 11.69 permits).
            [
                env,
                name,
                str(gate_limit(s.limit)),
                s.policy,
                str(s.sample_count),
                floor,
                _age(s.updated_at, now),
            ]
        )
    return rows


def _as_json(entries: list[tuple[str, str, LearnedState]]) -> dict[str, dict[str, Any]]:
    doc: dict[str, dict[str, Any]] = {}
    for env, name, state in entries:
        doc.setdefault(env, {})[name] = state.to_json()
    return doc


async def _entries(
    store: StateStore, env: str | None, name: str | None
) -> list[tuple[str, str, LearnedState]]:
    envs = [env] if env is not None else await store.environments()
    entries = []
    for e in envs:
        for n, state in sorted((await store.list(e)).items()):
            if name is None or n == name:
                entries.append((e, n, state))
    return entries


async def _run(
    args: argparse.Namespace, store: StateStore, out: TextIO, err: TextIO, confirm: Callable[[str], bool]
) -> int:
    action = args.action
    named_dir = args.dir is not None or os.environ.get("AIOGOVERNOR_STATE_DIR")
    if isinstance(store, JsonFileStore) and named_dir and not store.directory.is_dir():
        # A typo in --dir must not read as "nothing learned yet".
        print(f"aiogovernor: no state directory {str(store.directory)!r}", file=err)
        return EXIT_NOT_FOUND
    env = args.env
    if env is None and action in ("show", "reset", "history"):
        env = os.environ.get("AIOGOVERNOR_ENV") or "default"
    name = getattr(args, "name", None)
    if action == "history":
        return await _history(store, env, args.name, args.json, out, err)
    entries = await _entries(store, env, name)
    targets = [(e, n) for e, n, _ in entries]
    if action == "reset" and isinstance(store, JsonFileStore):
        # A record too damaged to load is skipped by `list` (with a warning), but reset
        # must still be able to remove it.
        envs = [env] if env is not None else await store.environments()
        for e in envs:
            targets += [(e, n) for n in await store.names(e) if name in (None, n) and (e, n) not in targets]
    if action == "export":
        json.dump({"environments": _as_json(entries)}, out, indent=2, sort_keys=True)
        print(file=out)
        return EXIT_OK
    if not targets and (name is not None or action != "list"):
        what = f"{name!r} in environment {env!r}" if name else f"environment {env!r}"
        print(f"aiogovernor: no learned state for {what} in {_where(store)}", file=err)
        return EXIT_NOT_FOUND
    if action in ("list", "show"):
        if args.json:
            json.dump(_as_json(entries), out, indent=2, sort_keys=True)
            print(file=out)
        elif entries:
            _table(_rows(entries), out)
        else:
            print(f"no learned state in {_where(store)}", file=out)
        return EXIT_OK
    # reset
    what = ", ".join(f"{n}[{e}]" for e, n in targets)
    if not args.yes and not confirm(f"forget the learned state of {what}? [y/N] "):
        print("aiogovernor: reset refused (pass --yes to confirm)", file=err)
        return EXIT_REFUSED
    removed = [(e, n) for e, n in targets if await store.delete(e, n)]
    if args.json:
        json.dump({"reset": [{"environment": e, "name": n} for e, n in removed]}, out, indent=2)
        print(file=out)
    else:
        for e, n in removed:
            print(f"reset {n}[{e}]", file=out)
    return EXIT_OK


def _not_found(store: StateStore, env: str, name: str, err: TextIO) -> int:
    print(f"aiogovernor: no learned state for {name!r} in environment {env!r} in {_where(store)}", file=err)
    return EXIT_NOT_FOUND


def _no_history(env: str, name: str) -> str:
    return (
        f"no decisions kept for {name}[{env}] (saved before decisions were kept, "
        "or by a governor with state_history_size=0)"
    )


async def _history(store: StateStore, env: str, name: str, as_json: bool, out: TextIO, err: TextIO) -> int:
    state = await store.load(env, name)
    if state is None:
        return _not_found(store, env, name, err)
    if as_json:
        fields = (
            "at",
            "old_limit",
            "new_limit",
            "reason",
            "latency_p50_s",
            "ok",
            "overload",
            "peak_inflight",
        )
        doc = {
            "environment": env,
            "name": name,
            "history": [dict(zip(fields, d.to_json(), strict=True)) for d in state.history],
        }
        json.dump(doc, out, indent=2)
        print(file=out)
        return EXIT_OK
    if not state.history:
        print(_no_history(env, name), file=out)
        return EXIT_OK
    rows = [["TIME", "LIMIT", "REASON", "P50", "OK", "OVERLOAD", "PEAK INFLIGHT"]]
    for d in state.history:
        p50 = "-" if d.latency_p50_s is None else f"{d.latency_p50_s * 1000:.1f} ms"
        rows.append(
            [
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.at)) + f".{int(d.at % 1 * 1000):03d}",
                f"{d.old_limit} -> {d.new_limit}",
                d.reason,
                p50,
                str(d.ok),
                str(d.overload),
                str(d.peak_inflight),
            ]
        )
    _table(rows, out)
    return EXIT_OK


def _ask(prompt: str) -> bool:
    if not sys.stdin.isatty():
        return False
    try:
        return input(prompt).strip().lower() in ("y", "yes")
    except EOFError:
        return False


def add_plot_parser(commands: Any) -> None:
    """Add the ``plot`` command to ``commands`` (argparse sub-parsers)."""
    plot = commands.add_parser(
        "plot",
        help="draw a governor's saved history to a PNG (the plot extra)",
        description=(
            "Draw the decisions kept with a governor's learned state: the limit after each, and "
            "each window's peak in flight, p50 latency and overloads, over time (the demo's picture; "
            "Governor.plot draws it from a live governor). Needs matplotlib: pip install "
            "'aiogovernor[plot]'. Exit codes: 0 drawn; 1 no such state, or no decisions kept, or "
            "the file cannot be written; 2 bad usage or name; 3 the store cannot be read."
        ),
    )
    plot.add_argument("name", help="the governor's name")
    plot.add_argument("-o", "--output", metavar="PATH", required=True, help="the PNG file to write")
    plot.add_argument("--env", help="the environment (default: $AIOGOVERNOR_ENV or 'default')")
    _store_options(plot, default=None)


def run_plot(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run ``aiogovernor plot NAME -o PATH``; return the exit code."""
    out, err = out or sys.stdout, err or sys.stderr
    env = args.env or os.environ.get("AIOGOVERNOR_ENV") or "default"
    try:
        check_environment(env)
        check_governor_name(args.name)
        store = _store(args)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    except ImportError as exc:  # --redis without the redis extra
        print(f"aiogovernor: {exc}", file=err)
        return EXIT_STORE_ERROR

    async def load() -> LearnedState | None:
        try:
            return await store.load(env, args.name)
        finally:
            await store.aclose()

    named_dir = args.dir is not None or os.environ.get("AIOGOVERNOR_STATE_DIR")
    if isinstance(store, JsonFileStore) and named_dir and not store.directory.is_dir():
        print(f"aiogovernor: no state directory {str(store.directory)!r}", file=err)
        return EXIT_NOT_FOUND
    try:
        state = asyncio.run(load())
    except StateStoreError as exc:
        print(f"aiogovernor: {exc}", file=err)
        return EXIT_STORE_ERROR
    if state is None:
        return _not_found(store, env, args.name, err)
    if not state.history:
        print(f"aiogovernor: {_no_history(env, args.name)}: nothing to draw", file=err)
        return EXIT_NOT_FOUND
    from ._plot import PlotError, Trace, draw  # matplotlib is imported when drawing

    trace = Trace()
    trace.add_kept(state.history)
    first = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.history[0].at))
    try:
        draw(
            trace,
            args.output,
            title=f"{args.name} [{env}]: {state.policy}, last {len(state.history)} decisions",
            xlabel=f"seconds since {first}",
        )
    except (ImportError, PlotError) as exc:
        print(f"aiogovernor: {exc}", file=err)
        return EXIT_NOT_FOUND
    print(f"Plot of {len(state.history)} decisions written to {args.output}", file=out)
    return EXIT_OK


def run_state(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    confirm: Callable[[str], bool] = _ask,
) -> int:
    """Run ``aiogovernor state ...``; return the exit code."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        if args.env is not None:
            check_environment(args.env)
        if getattr(args, "name", None) is not None:
            check_governor_name(args.name)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    try:
        store = _store(args)
    except ValueError as exc:  # a malformed --redis URL; redis' message does not repeat it
        parser.error(f"--redis: {exc}")
    except ImportError as exc:  # --redis without the redis extra
        print(f"aiogovernor: {exc}", file=err)
        return EXIT_STORE_ERROR

    async def main() -> int:
        try:
            return await _run(args, store, out, err, confirm)
        finally:
            await store.aclose()

    try:
        return asyncio.run(main())
    except StateStoreError as exc:
        print(f"aiogovernor: {exc}", file=err)
        return EXIT_STORE_ERROR
