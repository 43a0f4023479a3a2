"""Building frozen, slotted dataclasses on a hot path, at a fraction of their constructor's cost.

A frozen dataclass's generated ``__init__`` sets each field through
``object.__setattr__`` (its own ``__setattr__`` refuses): a `Window`'s 21 fields
take some 5 µs that way, the largest single step of closing a window. A *blank*
is a plain slotted class with exactly the dataclass's slots: its fields are
stored directly (~20 ns each), then the object is turned into the dataclass by
assigning ``__class__``, which CPython allows between classes of one layout.
The result is an ordinary instance of the dataclass, frozen, equal to and
indistinguishable from one its constructor built.

The caller must set every field (a field left unset raises AttributeError when
read); tests compare what a hot path builds with the constructor's output.
"""

from __future__ import annotations

from typing import Any

__all__ = ["blank_of"]


def blank_of(cls: type[Any]) -> type[Any]:
    """A class with ``cls``'s slots, whose instances may be filled in and then become ``cls``'s.

    Usage: ``obj = object.__new__(blank); obj.field = ...; obj.__class__ = cls``.
    """
    slots = cls.__dict__.get("__slots__")
    if not isinstance(slots, tuple) or "__dict__" in slots or cls.__bases__ != (object,):
        raise TypeError(f"{cls.__qualname__} is not a slotted class made straight from object")
    return type(f"_{cls.__name__}Blank", (), {"__slots__": slots, "__module__": cls.__module__})
