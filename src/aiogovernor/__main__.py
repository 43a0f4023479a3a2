"""The ``aiogovernor`` command line."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``aiogovernor`` command."""
    parser = argparse.ArgumentParser(prog="aiogovernor", description="An asyncio concurrency governor.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="watch a governor find the knee of a simulated upstream (virtual time)",
        description=(
            "Run the default policy against a simulated upstream whose latency rises past "
            "--capacity requests at once, offered work by --workers callers, in virtual time (a "
            "minute of simulated traffic takes about a second). It prints each change of the limit "
            "as the governor finds the knee (and follows it with --shift-to), then the goodput, "
            "the overload rate and the limit it settled on. Nothing is written unless --plot names a file."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--capacity", type=_positive_int, default=16, help="upstream workers (the knee)")
    demo.add_argument("--service-time-s", type=_positive_float, default=0.05, help="latency below the knee")
    demo.add_argument("--duration-s", type=_positive_float, default=60.0, help="simulated seconds")
    demo.add_argument("--workers", type=_positive_int, default=200, help="callers offering work")
    demo.add_argument(
        "--shift-to", type=_positive_int, default=None, help="capacity for the middle third of the run"
    )
    demo.add_argument(
        "--plot", metavar="PATH", default=None, help="draw the limit over time to this PNG (the plot extra)"
    )
    # Kept so that scripts written when a plot was drawn by default still run.
    demo.add_argument("--no-plot", action="store_true", help=argparse.SUPPRESS)
    from ._state_cli import add_plot_parser, add_state_parser  # the stores load when the CLI runs

    add_state_parser(commands)
    add_plot_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # `aiogovernor state export | head`: the reader left. Point stdout at /dev/null so the
        # interpreter's final flush does not raise again, and exit quietly, as `cat` does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a writer killed by the signal


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import PlotError, run_demo  # the demo's simulation loads only for the demo

        try:
            run_demo(
                capacity=args.capacity,
                service_time_s=args.service_time_s,
                duration_s=args.duration_s,
                workers=args.workers,
                shift_to=args.shift_to,
                plot_path=None if args.no_plot else args.plot,
            )
        except PlotError as exc:
            print(f"aiogovernor: {exc}", file=sys.stderr)
            return 1
        if args.plot is None:
            print("(add --plot demo.png to draw the limit over time)")
        return 0
    if args.command == "state":
        from ._state_cli import run_state  # as above: only the command that runs

        return run_state(args, parser)
    if args.command == "plot":
        from ._state_cli import run_plot

        return run_plot(args, parser)
    raise AssertionError(f"unhandled command {args.command!r}")  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
