"""Two trees measured in turns: the harness of the benchmarks that take ``--baseline OTHER_TREE/src``.

A change is judged against the code before it (a checkout of the commit before, say) in one
run on one machine. Each tree's measurement runs in a process of its own (the benchmark's own
script, started with ``--serve`` and that tree's ``src`` first on ``PYTHONPATH``), and the two
processes take turns, one round each, the first of each pair alternating, so that a machine
that grows busier or quieter part-way through weighs on both trees alike. Each ratio is still
taken inside one process (the contender against its reference, same round): only the rounds
are interleaved across the trees.

A serving process prints one JSON line when it is ready (``hello``: what it says of its tree),
then answers each line read from its stdin with one round's figures as a JSON line, and stops
when its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--baseline`` (another tree's src folder) and the hidden ``--serve`` of a serving process."""
    parser.add_argument("--baseline", help="another tree's src folder, measured in turns with this one")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)


def serve(one_round: Callable[[], Any], hello: Any = True) -> None:
    """In a serving process: say ``hello``, then run ``one_round`` once per line read from stdin."""
    print(json.dumps(hello), flush=True)
    while sys.stdin.readline():
        print(json.dumps(one_round()), flush=True)


async def serve_async(one_round: Callable[[], Awaitable[Any]], hello: Any = True) -> None:
    """`serve` for rounds that run in the serving process's one event loop (stdin read off it)."""
    loop = asyncio.get_running_loop()
    print(json.dumps(hello), flush=True)
    while await loop.run_in_executor(None, sys.stdin.readline):
        print(json.dumps(await one_round()), flush=True)


@dataclass
class Tree:
    """One tree's side of a comparison: where its code is, its hello, and its rounds' figures in order."""

    name: str
    src: Path
    hello: Any = None
    rounds: list[Any] = field(default_factory=list)


def take_turns(script: str, options: Sequence[str], baseline: str, rounds: int) -> list[Tree]:
    """Run ``rounds`` rounds of ``script --serve *options`` for this tree and ``baseline``, in turns.

    Args:
        script: The benchmark's own file (its ``__file__``), under ``benchmarks/`` of this tree.
        options: Its command-line options that shape a round (the same for both trees).
        baseline: The other tree's ``src`` folder.
        rounds: Rounds per tree.

    Returns:
        This tree, then the baseline.
    """
    here = Path(script).resolve().parent.parent / "src"
    trees = [Tree("this tree", here), Tree("baseline", Path(baseline).resolve())]
    command = [sys.executable, script, "--serve", *options]
    procs = [
        subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(tree.src)},
        )
        for tree in trees
    ]
    try:
        for tree, proc in zip(trees, procs, strict=True):
            tree.hello = json.loads(_talk(proc))
        pairs = list(zip(trees, procs, strict=True))
        for i in range(rounds):
            for tree, proc in pairs if i % 2 == 0 else pairs[::-1]:
                tree.rounds.append(json.loads(_talk(proc, "round\n")))
    finally:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=60)
    return trees


def _talk(proc: subprocess.Popen[str], line: str = "") -> str:
    """Send ``line`` (if any) to a serving process and read its answer."""
    assert proc.stdin is not None and proc.stdout is not None
    if line:
        proc.stdin.write(line)
        proc.stdin.flush()
    answer = proc.stdout.readline()
    if not answer:
        raise RuntimeError(f"the serving process stopped (exit status {proc.wait()})")
    return answer
