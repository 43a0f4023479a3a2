"""A permit's marks, shared by both gates: the async `Governor` and the thread `aiogovernor.sync.Governor`.

A permit is the right to run one unit of work now. What the work says about
itself (`ok`, `overload` with an optional Retry-After, `error`, `ignore`) and
how it is given back (`release`) mean the same thing on either gate, so they
live here once; each gate's `Permit` adds only its ``governor`` property.
"""

from __future__ import annotations

from typing import Any, Protocol

from ._samples import Outcome
from ._validate import check_float

__all__ = ["PermitGate", "PermitMarks"]


class PermitGate(Protocol):
    """What a permit needs of the gate that granted it."""

    @property
    def name(self) -> str: ...

    def pause(self, seconds: float) -> None: ...

    def _release(self, permit: Any, outcome: Outcome) -> None: ...


class PermitMarks:
    """The right to run one unit of work now, and what the work says about itself.

    Set the outcome when the work's own result says more than "no exception"
    (an HTTP 429 read from a response, say); otherwise it is classified from
    the exception that ended the block, or ``ok``.
    """

    __slots__ = ("_gate", "_generation", "_outcome", "_released", "_size", "_start")

    def __init__(self, gate: PermitGate, start: float, generation: int) -> None:
        self._gate = gate
        self._start = start
        self._generation = generation
        self._outcome: Outcome | None = None
        self._released = False
        self._size = 1.0

    @property
    def started_at(self) -> float:
        """Clock time at which the permit was granted."""
        return self._start

    @property
    def outcome(self) -> Outcome | None:
        """The outcome set so far, if any."""
        return self._outcome

    @property
    def size(self) -> float:
        """How much work this call carries (items in a batch, bytes of an upload); 1 by default.

        Set it before the permit is released: the sample carries it, and the default
        policy judges its latency against calls of about the same size, so a larger
        batch is not mistaken for queueing.
        """
        return self._size

    @size.setter
    def size(self, value: float) -> None:
        self._size = check_float("size", value, low=0.0, low_open=True)

    @property
    def released(self) -> bool:
        """Whether the permit has been given back."""
        return self._released

    def ok(self) -> None:
        """Mark the work as successful, whatever exception ends the block."""
        self._outcome = Outcome.OK

    def overload(self, retry_after_s: float | None = None) -> None:
        """Mark the work as refused for overload; optionally pause the governor.

        Args:
            retry_after_s: How long the upstream asked to wait (Retry-After);
                the governor admits nothing new until then (capped).
        """
        self._outcome = Outcome.OVERLOAD
        if retry_after_s is not None:
            self._gate.pause(retry_after_s)

    def error(self) -> None:
        """Mark the work as failed for a reason unrelated to load."""
        self._outcome = Outcome.ERROR

    def ignore(self) -> None:
        """Keep this unit of work out of the measurements."""
        self._outcome = Outcome.IGNORED

    def release(self, outcome: Outcome | None = None) -> None:
        """Give the permit back and record the sample.

        Args:
            outcome: Overrides the outcome set so far; ``ok`` if none was set.

        Raises:
            RuntimeError: If the permit was already released.
        """
        if self._released:
            raise RuntimeError("this permit was already released")
        if outcome is not None:
            outcome = Outcome(outcome)  # a bad value raises here, while the permit is still held
        self._gate._release(self, outcome or self._outcome or Outcome.OK)

    def __repr__(self) -> str:
        state = "released" if self._released else "held"
        return f"<Permit {self._gate.name!r} {state} outcome={self._outcome and self._outcome.value}>"
