"""Governor and environment names: validated (nothing may escape the state directory), and
derived for the governors that integrations make when the caller names none."""

from __future__ import annotations

import functools
import inspect
import re
import warnings

__all__ = [
    "MAX_NAME_LENGTH",
    "check_environment",
    "check_governor_name",
    "name_after_callable",
    "warn_if_ambiguous",
]

MAX_NAME_LENGTH = 128
"""The longest environment or governor name accepted."""

_CONTROL = re.compile("[\x00-\x1f\x7f]")  # one regex scan, not a Python loop per character

# Environment names already found safe (a few per process; bounded all the same).
_valid_environments: set[str] = set()
_MAX_KNOWN = 1024


def _common(kind: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{kind} must be a string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{kind} must be a non-empty string")
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"{kind} must be at most {MAX_NAME_LENGTH} characters, got {len(value)}")
    if _CONTROL.search(value) is not None:
        raise ValueError(f"{kind} must not contain NUL or control characters, got {value!r}")
    if value != value.strip():
        raise ValueError(f"{kind} must not start or end with whitespace, got {value!r}")
    return value


def check_environment(value: object) -> str:
    """Return ``value`` if it is a safe environment name, else raise.

    An environment names a file in the state directory, so it must not be
    able to point anywhere else: no path separators, no leading dot (which
    also rules out ``.`` and ``..``), no NUL or control characters, at most
    `MAX_NAME_LENGTH` characters. A host name (``api.example.com``) is fine.

    Raises:
        TypeError: If ``value`` is not a string.
        ValueError: If it is empty, too long or could escape the directory.
    """
    if type(value) is str and value in _valid_environments:  # a governor each: the same few names
        return value
    value = _common("environment", value)
    if "/" in value or "\\" in value:
        raise ValueError(f"environment must not contain path separators, got {value!r}")
    if value.startswith("."):
        raise ValueError(f"environment must not start with '.', got {value!r}")
    if ":" in value:
        # A drive letter on Windows, and the separator of Redis keys.
        raise ValueError(f"environment must not contain ':', got {value!r}")
    if len(_valid_environments) < _MAX_KNOWN:
        _valid_environments.add(value)
    return value


def check_governor_name(value: object) -> str:
    """Return ``value`` if it is an acceptable governor name, else raise.

    A governor name is a key inside an environment's record (a JSON key, the
    tail of a Redis key), never a path, so URLs and slashes are allowed; NUL,
    control characters and absurd lengths are not.

    Raises:
        TypeError: If ``value`` is not a string.
        ValueError: If it is empty, too long or holds control characters.
    """
    return _common("name", value)


def name_after_callable(fn: object, *, prefix: str) -> tuple[str, str | None]:
    """A governor name for work done by ``fn``, and why it may be shared (None if it need not be).

    The learned limit is kept per name, so the name must tell upstreams apart:
    a `functools.partial` and a decorated function are named after the
    function they wrap (not ``partial`` or the decorator's inner function), a
    bound method after its class and function. The reason returned says when
    unrelated work can still end up under one name: lambdas all share
    ``<lambda>``, and partials of one function with different arguments share
    its name (their arguments are never put into a name: they may hold secrets).
    """
    why: str | None = None
    target = fn
    while isinstance(target, functools.partial):
        why = "partials of one function share its name whatever their arguments"
        target = target.func
    target = inspect.unwrap(target) if callable(target) else target
    qualname = getattr(target, "__qualname__", None)
    if not isinstance(qualname, str):  # a callable object: named after its class
        qualname = type(target).__qualname__
        why = why or "every instance of a callable class shares the class's name"
    if qualname.endswith("<lambda>"):
        why = "every lambda shares the name '<lambda>'"
    name = f"{prefix}{qualname}"
    if len(name) > MAX_NAME_LENGTH:  # deep <locals> nesting: keep the distinctive tail
        name = prefix + qualname[-(MAX_NAME_LENGTH - len(prefix)) :]
    return name, why


_warned: set[str] = set()


def warn_if_ambiguous(name: str, why: str | None, *, persisted: bool, stacklevel: int) -> None:
    """Warn once per name when a governor named by default keeps state under a shared name."""
    if why is None or not persisted or name in _warned:
        return
    _warned.add(name)
    warnings.warn(
        f"the governor made for this call is named {name!r} and keeps its learned limit under "
        f"that name, but {why}: unrelated upstreams would share one limit. Pass "
        f"governor=Governor('a-name') to keep them apart.",
        UserWarning,
        stacklevel=stacklevel + 1,
    )
