"""``@gov.guard``: a permit per call of a function, its exceptions classified (both gates).

The async gate guards coroutine functions, the thread gate plain functions;
the wrong pairing is a TypeError at decoration time, never a coroutine left
un-awaited under a permit that measured nothing.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, ParamSpec, TypeVar

__all__ = ["guard_async", "guard_blocking"]

P = ParamSpec("P")
R = TypeVar("R")


def _is_async(fn: object) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004


def guard_async(
    gate: AbstractAsyncContextManager[Any], fn: Callable[P, Awaitable[R]]
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Wrap a coroutine function so that each call runs under ``async with gate:``."""
    if not callable(fn):
        raise TypeError(f"guard needs a callable, got {fn!r}")
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        raise TypeError(
            f"guard cannot hold a permit across a generator's yields ({fn!r}); guard the calls it makes"
        )
    if not _is_async(fn):
        raise TypeError(
            f"the async Governor guards coroutine functions (async def); {fn!r} is synchronous: "
            "guard it with aiogovernor.sync.Governor, which gives permits to threads"
        )

    @functools.wraps(fn)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        async with gate:
            return await fn(*args, **kwargs)

    return guarded


def guard_blocking(gate: AbstractContextManager[Any], fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap a plain function so that each call runs under ``with gate:``."""
    if not callable(fn):
        raise TypeError(f"guard needs a callable, got {fn!r}")
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        raise TypeError(
            f"guard cannot hold a permit across a generator's yields ({fn!r}); guard the calls it makes"
        )
    if _is_async(fn):
        raise TypeError(
            f"aiogovernor.sync.Governor guards plain functions; {fn!r} is a coroutine function: "
            "guard it with aiogovernor.Governor, the async gate"
        )

    @functools.wraps(fn)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        with gate:
            return fn(*args, **kwargs)

    return guarded
