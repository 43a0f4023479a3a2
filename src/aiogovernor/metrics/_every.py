"""Hooking every governor, those alive now and those made later, until closed."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable

from aiogovernor import _registry
from aiogovernor._events import WindowListener
from aiogovernor._registry import Governor  # either gate: the async one or the thread gate

__all__ = ["EveryGovernor"]


class EveryGovernor:
    """Attaches the window listener ``make(governor)`` to every live governor and every new one.

    The listener must not hold the governor itself (the governor holds the
    listener; a reference back would keep both alive until a cyclic
    collection). `close` detaches every listener and stops hooking new ones.
    """

    def __init__(self, make: Callable[[Governor], WindowListener]) -> None:
        self._make = make
        self._attached: weakref.WeakKeyDictionary[Governor, WindowListener] = weakref.WeakKeyDictionary()
        _registry.subscribe(self._attach)
        for governor in _registry.live_governors():
            self._attach(governor)

    def _attach(self, governor: Governor) -> None:
        if governor in self._attached:
            return
        listener = self._make(governor)
        governor.add_window_listener(listener)
        self._attached[governor] = listener

    def close(self) -> None:
        """Detach from every governor; later governors are not hooked."""
        _registry.unsubscribe(self._attach)
        for governor, listener in list(self._attached.items()):
            with contextlib.suppress(ValueError):
                governor.remove_window_listener(listener)
        self._attached.clear()
