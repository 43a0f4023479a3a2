"""Simulation in virtual time: an event loop whose clock jumps, and simulated upstreams.

Tune a governor's settings against a model of your upstream in seconds,
and test closed-loop behaviour deterministically::

    from aiogovernor.sim import KneeUpstream, run_virtual

    async def main() -> None:
        upstream = KneeUpstream(capacity=8, service_time_s=0.05)
        ...

    run_virtual(main())
"""

from __future__ import annotations

from ._loop import VirtualTimeEventLoop as VirtualTimeEventLoop
from ._loop import run_virtual as run_virtual
from ._upstreams import KneeUpstream as KneeUpstream

__all__ = ["KneeUpstream", "VirtualTimeEventLoop", "run_virtual"]
