"""Environment variables read on the paths that run once per governor.

`os.environ.get` finds a name that is not set by raising and catching a KeyError
inside the mapping: about 1 µs on a quiet machine (3 µs on a loaded one), and
building a governor with the defaults reads five or six names that are usually
unset (its environment, the profile, whether state is off, where it is kept).
"""

from __future__ import annotations

import os

__all__ = ["getenv"]

# name -> (the mapping's encodekey, the name it encodes to): the few names read here, encoded
# once (encoding costs as much as the look-up).
_encoded: dict[str, tuple[object, object]] = {}


def getenv(name: str) -> str | None:
    """``os.environ.get(name)``, without the exception a name that is not set costs."""
    environ = os.environ  # looked up each time: a test may replace the mapping
    try:
        # CPython's os._Environ: the encoded names and values, what `__getitem__` reads.
        data = environ._data  # type: ignore[attr-defined]
        encodekey = environ.encodekey
    except AttributeError:  # another mapping in its place
        return environ.get(name)
    known = _encoded.get(name)
    if known is None or known[0] is not encodekey:
        known = _encoded[name] = (encodekey, encodekey(name))
    raw = data.get(known[1])
    return None if raw is None else environ.decodevalue(raw)
