"""Which governors are alive: a weak set the metrics exporters read at collection time.

Registering is one `weakref.WeakSet.add` per governor created (no cost per
permit), and a governor leaves the set when it is garbage-collected: the
registry never keeps one alive. Exporters that need to hook every governor
as it is created (the latency histogram) subscribe to new registrations.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._events import WindowListener
    from ._governor import GovernorStats

__all__ = ["Governor", "live_governors", "register", "subscribe", "unsubscribe"]


class Governor(Protocol):
    """What the registry's readers use of a gate: the async `aiogovernor.Governor` or the thread gate."""

    @property
    def name(self) -> str: ...

    @property
    def environment(self) -> str: ...

    def stats(self) -> GovernorStats: ...

    def add_window_listener(self, listener: WindowListener) -> None: ...

    def remove_window_listener(self, listener: WindowListener) -> None: ...


logger = logging.getLogger("aiogovernor")

_live: weakref.WeakSet[Governor] = weakref.WeakSet()
_subscribers: list[Callable[[Governor], None]] = []


def register(governor: Governor) -> None:
    """Called by every governor (async or thread gate) as it is created."""
    _live.add(governor)
    if _subscribers:
        for subscriber in tuple(_subscribers):
            try:
                subscriber(governor)
            except Exception:  # an exporter's bug must not stop a governor being made
                logger.exception("governor registry subscriber %r failed", subscriber)


def live_governors() -> tuple[Governor, ...]:
    """Every governor not yet garbage-collected, in no particular order.

    Safe to call from another thread (a metrics exporter's): a governor
    created during the copy makes it start again.
    """
    while True:
        try:
            return tuple(_live)
        except RuntimeError:  # the set changed size under the copy (another thread)
            continue


def subscribe(subscriber: Callable[[Governor], None]) -> None:
    """Call ``subscriber(governor)`` for every governor created from now on."""
    _subscribers.append(subscriber)


def unsubscribe(subscriber: Callable[[Governor], None]) -> None:
    """Stop calling ``subscriber``; one never subscribed is ignored."""
    if subscriber in _subscribers:
        _subscribers.remove(subscriber)
