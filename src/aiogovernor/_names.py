"""Validation of environment and governor names: nothing may escape the state directory."""

from __future__ import annotations

__all__ = ["MAX_NAME_LENGTH", "check_environment", "check_governor_name"]

MAX_NAME_LENGTH = 128
"""The longest environment or governor name accepted."""


def _common(kind: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{kind} must be a string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{kind} must be a non-empty string")
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"{kind} must be at most {MAX_NAME_LENGTH} characters, got {len(value)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
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
    value = _common("environment", value)
    if "/" in value or "\\" in value:
        raise ValueError(f"environment must not contain path separators, got {value!r}")
    if value.startswith("."):
        raise ValueError(f"environment must not start with '.', got {value!r}")
    if ":" in value:
        # A drive letter on Windows, and the separator of Redis keys.
        raise ValueError(f"environment must not contain ':', got {value!r}")
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
