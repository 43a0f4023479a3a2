"""The clock every part of aiogovernor reads.

A clock is any zero-argument callable returning seconds as a float. The
default reads the running event loop's time, never ``time.monotonic()``
directly, so that fake-time loops (looptime, `aiogovernor.sim`) move the
governor's time along with everything else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeAlias

__all__ = ["Clock", "loop_time"]

Clock: TypeAlias = Callable[[], float]
"""A zero-argument callable returning the current time in seconds."""


def loop_time() -> float:
    """The running event loop's time: asyncio's ``loop.time()``, else anyio's (trio).

    Raises:
        RuntimeError: When no event loop is running.
    """
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        import anyio  # trio, through anyio

        return anyio.current_time()
