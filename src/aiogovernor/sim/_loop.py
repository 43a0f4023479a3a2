"""An asyncio event loop whose clock jumps instead of sleeping: virtual time."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

__all__ = ["VirtualTimeEventLoop", "run_virtual"]

T = TypeVar("T")


class _VirtualSelector(selectors.BaseSelector):
    """A selector that, instead of blocking for ``timeout``, moves the loop's clock on by it.

    Real file descriptors still work (they are polled without waiting), so
    the loop's self-pipe and call_soon_threadsafe() keep working, but time
    spent waiting for them is not simulated.
    """

    def __init__(self, loop: VirtualTimeEventLoop) -> None:
        self._real = selectors.DefaultSelector()
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready:
            return ready
        if timeout is None:
            # Nothing is scheduled: only another thread can wake us; wait for it for real.
            return self._real.select(None)
        if timeout > 0:
            self._loop.advance(timeout)
        return []

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()


class VirtualTimeEventLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: whenever every task waits on a timer,
    the clock jumps to the next timer instead of sleeping.

    A simulated minute of ``asyncio.sleep`` calls runs in milliseconds, and
    runs identically every time, which makes closed-loop behaviour of a
    governor testable deterministically. Only code that waits on the loop's
    timers is simulated: real network I/O still takes real time.

    Args:
        start: The clock's initial reading, in seconds.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._virtual_now = float(start)
        super().__init__(selector=_VirtualSelector(self))

    def time(self) -> float:
        """The virtual clock."""
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the virtual clock forward (never back)."""
        if seconds > 0:
            self._virtual_now += seconds


def run_virtual(main: Coroutine[Any, Any, T] | Callable[[], Awaitable[T]], *, start: float = 0.0) -> T:
    """Run a coroutine to completion on a fresh `VirtualTimeEventLoop` and return its result.

    Like ``asyncio.run``, but time is virtual: sleeps, timeouts and timers
    complete at once, in order, with the clock moved on accordingly.

    Args:
        main: A coroutine, or a zero-argument callable returning an awaitable.
        start: The clock's initial reading.
    """
    with asyncio.Runner(loop_factory=lambda: VirtualTimeEventLoop(start)) as runner:
        if callable(main):
            factory = main

            async def call() -> T:
                return await factory()

            return runner.run(call())
        return runner.run(main)
