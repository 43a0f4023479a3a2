"""Where the uncontended gate's time goes: the fast path with one step taken out at a time.

Each variant is the real ``Governor.__aenter__``/``__aexit__`` (their source, read at run
time) with one step removed by a textual edit that must match, so the variants follow the
gate as it changes and this script fails when an edit no longer applies. The variants are
not correct gates (that is the point); they only show what each step costs. CPU time,
interleaved rounds; prints each variant's median per entry, its ratio to asyncio.Semaphore
and the median of its per-round saving against the full gate.

    .venv/bin/python benchmarks/overhead_parts.py [--ops 5000] [--rounds 100]

Each round makes new governors. A round lasts less than a window's duration (0.1 s), so no
window closes in it: past ``max_samples`` (1 000) the window is thinned, and the gate keeps
(and measures) one latency in k, k doubling as the window grows; with more ``--ops`` a round
reaches larger k, as a busy governor does within each of its windows.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import statistics
import textwrap
from typing import Any

from overhead_cpu import per_op

from aiogovernor import Fixed, Governor, _governor

# variant -> (method, old text, new text) edits
EDITS: dict[str, list[tuple[str, str, str]]] = {
    "no context variable (permit kept on the governor)": [
        ("__aenter__", "permit._token = _set_permit(permit)", "permit._token = None; self._held = permit"),
        ("__aexit__", "permit = _get_permit()", "permit = self._held"),
        ("__aexit__", "_reset_permit(permit._token)  # type: ignore[arg-type]", "pass"),
    ],
    "no clock reads (start and end times constant)": [
        ("__aenter__", "permit._start = self._time()", "permit._start = 0.0"),
        ("__aexit__", "now = self._time()", "now = 0.0"),
    ],
    "permit reused (no allocation)": [
        ("__aenter__", "permit: Permit = Permit()", "permit = self._spare"),
        ("__aenter__", "permit._gate = self", "pass"),
    ],
    "no latency kept (none appended, so the window is never thinned)": [
        ("__aexit__", "lat.append(now - permit._start)", "pass"),
    ],
    "no window checks (every latency kept, never thinned)": [
        ("__aexit__", "if now >= self._close_at or len(lat) >= self._check_len:", "if False:"),
    ],
}
# The four dearest steps out at once: what is left is the gate's bookkeeping and its two awaits.
EDITS["none of the four above (context variable, clock reads, window checks, allocation)"] = [
    edit
    for name in (
        "no context variable (permit kept on the governor)",
        "no clock reads (start and end times constant)",
        "no window checks (every latency kept, never thinned)",
        "permit reused (no allocation)",
    )
    for edit in EDITS[name]
]


def variant(name: str) -> type[Governor]:
    methods: dict[str, Any] = {}
    for method in ("__aenter__", "__aexit__"):
        source = inspect.getsource(getattr(Governor, method))
        for target, old, new in EDITS[name]:
            if target == method:
                if old not in source:
                    raise SystemExit(f"{name}: {old!r} is no longer in Governor.{method}; update EDITS")
                source = source.replace(old, new)
        source = textwrap.dedent(source)
        namespace = dict(vars(_governor))
        exec(compile(source, f"<{name}: {method}>", "exec"), namespace)
        methods[method] = namespace[method]
    return type(f"Governor_{len(name)}", (Governor,), methods)


def make(cls: type[Governor] | None) -> Any:
    if cls is None:
        return asyncio.Semaphore(10)
    gov = cls("bench", Fixed(10), store=None)
    spare = _governor._grant_permit(gov, 0.0)
    gov._spare = spare  # type: ignore[attr-defined]
    return gov


async def main(args: argparse.Namespace) -> None:
    kinds: dict[str, type[Governor] | None] = {
        "asyncio.Semaphore": None,
        "Governor(Fixed), the full gate": Governor,
    }
    kinds.update({name: variant(name) for name in EDITS})
    times: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(args.rounds):
        for name, cls in kinds.items():
            times[name].append(await per_op(make(cls), args.ops))
    semaphore = statistics.median(times["asyncio.Semaphore"])
    full = times["Governor(Fixed), the full gate"]
    for name, values in times.items():
        saving = statistics.median(f - v for f, v in zip(full, values, strict=True))
        median = statistics.median(values)
        print(
            f"{name:52s} {median * 1e9:6.0f} ns  {median / semaphore:.2f}x semaphore"
            + ("" if values is full or name == "asyncio.Semaphore" else f"  saves {saving * 1e9:4.0f} ns")
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=100)
    asyncio.run(main(parser.parse_args()))
