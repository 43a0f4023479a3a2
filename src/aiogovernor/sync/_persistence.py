"""Learned state for the thread gate: the same `GovernorPersistence`, driven from threads.

The stores are async (the protocol is one for both gates). A thread gate
runs them on one background event loop, in a daemon thread made on first
use and shared by every thread gate of the process; a thread that loads or
flushes blocks until the store answers. The debounced save, the latency
floor, the restore rules: all `GovernorPersistence`'s own, unchanged; every
piece of its state is touched on that loop only (a decision made in a
worker thread hops there first).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from aiogovernor._persistence import GovernorPersistence

if TYPE_CHECKING:
    from aiogovernor._chunking import Chunker
    from aiogovernor._events import Decision

__all__ = ["ThreadPersistence", "run_on_store_loop"]

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _store_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            threading.Thread(target=serve, name="aiogovernor-store", daemon=True).start()
            ready.wait()
            _loop = loop
        return _loop


def run_on_store_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the store loop and block this thread until it is done."""
    loop = _store_loop()
    if _on_loop(loop):
        coro.close()
        raise RuntimeError("run_on_store_loop called from the store loop itself")
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class ThreadPersistence(GovernorPersistence):
    """`GovernorPersistence` for a thread gate: `load_blocking`, `flush_blocking`, saves on the store loop."""

    __slots__ = ()

    def load_blocking(self) -> None:
        """Load and apply the learned state once (the caller must not hold the gate's lock)."""
        run_on_store_loop(self.load())

    def flush_blocking(self) -> None:
        """Save what is left now; never raises for a store failure."""
        run_on_store_loop(self.flush())

    def attach_chunker(self, chunker: Chunker | None) -> None:
        """`GovernorPersistence.attach_chunker`, run on the store loop (it may schedule a save)."""
        loop = _store_loop()
        if _on_loop(loop):
            super().attach_chunker(chunker)
            return
        attach = super().attach_chunker

        async def on_loop() -> None:
            attach(chunker)

        run_on_store_loop(on_loop())

    def _on_decision(self, decision: Decision) -> None:
        if self._restoring:
            return  # a restore runs on the store loop, inside `load`: nothing to save
        loop = _store_loop()
        if _on_loop(loop):
            super()._on_decision(decision)
        else:
            loop.call_soon_threadsafe(super()._on_decision, decision)
