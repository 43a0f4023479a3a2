"""Copies of a configured object at a fraction of its constructor's cost, or of a deepcopy's.

Building the default policy validates some twenty settings, a third of what a governor
costs to make, and a per-host transport makes one policy per origin (a deepcopy of its
template: several times that). A *copier*, made once from a configured instance,
writes that instance's attributes into a new object in straight-line code, generated
once (as `dataclasses` generates ``__init__``): immutable values are shared, empty
lists, dicts and sets are made anew, nested plain objects are copied the same way,
and anything else is deep-copied from a snapshot. Each copy equals
``copy.deepcopy(instance)`` as the instance was when the copier was made, whatever
happens to the instance afterwards.

An object the generated code cannot copy faithfully (a class with its own ``__new__``,
``__setattr__``, ``__reduce__``, ``__deepcopy__`` or state hooks, one mutable object
reached twice) is deep-copied whole on each call instead: always correct, only slower.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["copier"]

_T = TypeVar("_T")

_IMMUTABLE = frozenset({int, float, bool, str, bytes, complex, type(None)})
_EMPTY_MADE: dict[type, str] = {list: "[]", dict: "{}", set: "set()"}
_HOOKS = ("__deepcopy__", "__copy__", "__setstate__")


class _NotPlain(Exception):
    """Raised while planning: the object needs a real deepcopy."""


def _immutable(value: object) -> bool:
    kind = type(value)
    if kind in _IMMUTABLE:
        return True
    if kind is tuple or kind is frozenset:
        return all(_immutable(item) for item in value)  # type: ignore[attr-defined]
    return False


_METHODS = ("__new__", "__setattr__", "__reduce_ex__", "__reduce__", "__getstate__")
_OBJECT_METHODS = tuple(getattr(object, name) for name in _METHODS)


def _plain(kind: type) -> bool:
    """Whether instances of ``kind`` are copied by setting their attributes, as deepcopy would."""
    own = (getattr(kind, name) for name in _METHODS)
    return all(a is b for a, b in zip(own, _OBJECT_METHODS, strict=True)) and not any(
        hasattr(kind, hook) for hook in _HOOKS
    )


def _attributes(obj: object) -> tuple[list[tuple[str, object]], dict[str, object] | None]:
    """The slot attributes set on ``obj`` (by their real names) and its instance dict."""
    slots: list[tuple[str, object]] = []
    for klass in type(obj).__mro__:
        names = klass.__dict__.get("__slots__", ())
        for name in (names,) if isinstance(names, str) else names:
            if name in ("__dict__", "__weakref__"):
                continue
            if name.startswith("__") and not name.endswith("__"):
                name = f"_{klass.__name__.lstrip('_')}{name}"
            try:
                slots.append((name, getattr(obj, name)))
            except AttributeError:  # unset: a deepcopy leaves it unset too
                continue
    return slots, getattr(obj, "__dict__", None)


class _Planner:
    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {"_new": object.__new__}
        self.lines: list[str] = []
        self.seen: set[int] = set()  # mutable objects reached so far: one reached twice is shared
        self.count = 0

    def constant(self, value: object) -> str:
        self.count += 1
        key = f"_c{self.count}"
        self.namespace[key] = value
        return key

    def value(self, value: object) -> str:
        """An expression that makes (or shares) a copy of ``value``."""
        if _immutable(value):
            return self.constant(value)
        if id(value) in self.seen:
            raise _NotPlain
        self.seen.add(id(value))
        kind = type(value)
        if kind in _EMPTY_MADE and not value:
            return _EMPTY_MADE[kind]
        if _plain(kind):
            return self.plain(value)
        raise _NotPlain

    def plain(self, obj: object) -> str:
        """Emit the lines that build a copy of ``obj``; return the local name of the copy."""
        self.count += 1
        local = f"_o{self.count}"
        slots, instance_dict = _attributes(obj)
        self.lines.append(f"    {local} = _new({self.constant(type(obj))})")
        for name, value in slots:
            expr = self.value(value)
            if name.isidentifier():
                self.lines.append(f"    {local}.{name} = {expr}")
            else:  # pragma: no cover - slots are identifiers
                raise _NotPlain
        if instance_dict is not None and instance_dict:
            self.lines.append(f"    {local}_d = {local}.__dict__")
            for name, value in instance_dict.items():
                self.lines.append(f"    {local}_d[{self.constant(name)}] = {self.value(value)}")
        return local


def copier(obj: _T) -> Callable[[], _T]:
    """A function that returns a new copy of ``obj`` as it is now (see the module's docstring)."""
    planner = _Planner()
    try:
        if not _plain(type(obj)):
            raise _NotPlain
        planner.seen.add(id(obj))
        local = planner.plain(obj)
    except _NotPlain:
        snapshot = copy.deepcopy(obj)
        return lambda: copy.deepcopy(snapshot)
    source = "def _copy():\n" + "\n".join(planner.lines) + f"\n    return {local}\n"
    exec(source, planner.namespace)  # the code was made above from attribute names only
    made: Callable[[], _T] = planner.namespace["_copy"]
    return made
