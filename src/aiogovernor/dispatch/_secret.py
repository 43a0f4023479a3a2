"""`Secret`: the API key, kept out of every repr, log line and traceback local."""

from __future__ import annotations

__all__ = ["Secret"]


class Secret:
    """Holds the API key so that no repr, log line or traceback local shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__
