"""The uncontended gate in CPU time: ``async with gov:`` against asyncio.Semaphore, one process.

`overhead.py` measures wall time, which a busy machine's scheduling stretches; this counts the
thread's CPU time only, so that two trees (say, before and after a change to the gate) can be
compared on a shared machine. Interleaved rounds, one ratio per round; prints the median,
worst and best ratio to asyncio.Semaphore.

    .venv/bin/python benchmarks/overhead_cpu.py [--ops 100000] [--rounds 15] [--contended]
        [--baseline OTHER_TREE/src] [--context-vars N]

``--contended`` adds a hand-off ratio: 200 tasks through a limit of 10, each entering
20 times and yielding once to the loop inside.

``--decision-rate`` runs one governor's uncontended gate flat out for a second of wall time
instead, and prints how many blocks went through, how many decisions it made and its CPU time
per block (a busy governor decides once per window: past ``max_samples`` a window is thinned,
not closed).

``--context-vars N`` sets N other context variables first (an application's tracing or logging
context, say): the gate writes a context variable per block, and what a write costs grows with
what the context holds.

``--baseline`` compares two trees in one run: this tree's ``src`` and another's (a checkout
of the commit before a change, say) each run in a process of their own, and the two
processes take turns, one round each, the first of each pair alternating; each ratio is
still taken inside one process (governor against semaphore, same round). A tree whose
``_governor.py`` was compiled with mypyc is measured the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from typing import Any

import _turns

from aiogovernor import Fixed, Governor, _governor


async def per_op(gate: AbstractAsyncContextManager[Any], ops: int) -> float:
    start = time.thread_time()
    for _ in range(ops):
        async with gate:
            pass
    return (time.thread_time() - start) / ops


async def contended(gate: AbstractAsyncContextManager[Any], tasks: int = 200, entries: int = 20) -> float:
    async def worker() -> None:
        for _ in range(entries):
            async with gate:
                await asyncio.sleep(0)

    start = time.thread_time()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return (time.thread_time() - start) / (tasks * entries)


async def one_round(ops: int, with_contended: bool) -> tuple[float, float | None]:
    """One round's ratios to asyncio.Semaphore: uncontended, and the hand-off (or None)."""
    semaphore = await per_op(asyncio.Semaphore(10), ops)
    governor = await per_op(Governor("bench", Fixed(10), store=None), ops)
    if not with_contended:
        return governor / semaphore, None
    handoff_semaphore = await contended(asyncio.Semaphore(10))
    handoff_governor = await contended(Governor("bench", Fixed(10), store=None))
    return governor / semaphore, handoff_governor / handoff_semaphore


def label() -> str:
    compiled = " (compiled _governor)" if _governor.__file__.endswith((".so", ".pyd")) else ""
    return f"Governor(Fixed){compiled}"


def report(name: str, ratios: list[float], handoff: list[float], rounds: int, ops: int) -> None:
    print(
        f"{name} / asyncio.Semaphore, uncontended, CPU time: median "
        f"{statistics.median(ratios):.2f}x, worst {max(ratios):.2f}x, best {min(ratios):.2f}x "
        f"({rounds} rounds of {ops} ops)"
    )
    if handoff:
        print(
            f"{name} / asyncio.Semaphore, contended hand-off, CPU time: median "
            f"{statistics.median(handoff):.2f}x, worst {max(handoff):.2f}x, best {min(handoff):.2f}x"
        )


def fill_context(n: int) -> None:
    """Set ``n`` context variables in the current context (the task's, for every round)."""
    for i in range(n):
        ContextVar(f"other_{i}").set(i)


async def serve(args: argparse.Namespace) -> None:
    """Answer rounds in turns (see `_turns`), all in one event loop."""
    fill_context(args.context_vars)

    async def one() -> dict[str, float | None]:
        ratio, handoff = await one_round(args.ops, args.contended)
        return {"ratio": ratio, "handoff": handoff}

    await _turns.serve_async(one, hello={"label": label()})


def compare(args: argparse.Namespace) -> None:
    """This tree and ``--baseline`` in two processes that take turns, one round each."""
    options = ["--ops", str(args.ops), "--context-vars", str(args.context_vars)]
    if args.contended:
        options.append("--contended")
    turns = _turns.take_turns(__file__, options, args.baseline, args.rounds)
    trees = {tree.name: tree.src for tree in turns}
    labels = {tree.name: tree.hello["label"] for tree in turns}
    results = {
        tree.name: (
            [r["ratio"] for r in tree.rounds],
            [r["handoff"] for r in tree.rounds if r["handoff"] is not None],
        )
        for tree in turns
    }
    for name, src in trees.items():
        print(f"{name} ({src}):")
        report(labels[name], *results[name], args.rounds, args.ops)


async def decision_rate(seconds: float = 1.0) -> None:
    """Blocks, decisions and CPU per block of one governor run flat out for ``seconds``."""
    gov = Governor("bench", Fixed(10), store=None)
    blocks = 0
    start, cpu = time.monotonic(), time.thread_time()
    while time.monotonic() - start < seconds:
        for _ in range(1000):
            async with gov:
                pass
        blocks += 1000
    cpu = time.thread_time() - cpu
    stats = gov.stats()
    window = stats.last_window
    print(
        f"{label()}: {blocks} blocks in {seconds:g} s, {stats.decision_count} decisions, "
        f"{cpu / blocks * 1e9:.0f} ns of CPU per block, last window of {window.ok if window else 0} calls"
    )


async def main(args: argparse.Namespace) -> None:
    fill_context(args.context_vars)
    ratios = []
    handoff = []
    for _ in range(args.rounds):
        ratio, h = await one_round(args.ops, args.contended)
        ratios.append(ratio)
        if h is not None:
            handoff.append(h)
    report(label(), ratios, handoff, args.rounds, args.ops)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--contended", action="store_true")
    parser.add_argument("--context-vars", type=int, default=0, help="other context variables set first")
    parser.add_argument("--baseline", help="another tree's src folder, measured in turns with this one")
    parser.add_argument("--decision-rate", action="store_true", help="blocks and decisions in a second")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.decision_rate:
        asyncio.run(decision_rate())
    elif arguments.serve:
        asyncio.run(serve(arguments))
    elif arguments.baseline:
        compare(arguments)
    else:
        asyncio.run(main(arguments))
