"""Chunk sizing: the `Chunker` contract, and `AdaptiveChunker`, which steers toward a target call duration.

Everything that sends items in chunks (`governed_batches`, the uploader) takes
the same thing: an ``int`` (a fixed size) or any `Chunker`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

from ._clock import Clock, loop_time
from ._validate import check_float, check_int

__all__ = ["AdaptiveChunker", "Chunker", "FixedChunker", "as_chunker"]


@runtime_checkable
class Chunker(Protocol):
    """Sets how many items one call carries, from how long calls took.

    `AdaptiveChunker` fits; any object with these two members does.
    """

    @property
    def size(self) -> int:
        """Items the next call should carry."""
        ...

    def record(self, size: int, duration_s: float) -> int:
        """Take one call's size and duration; return the next size."""
        ...


class FixedChunker:
    """The `Chunker` an ``int`` stands for: always the same size, whatever calls take."""

    __slots__ = ("_size",)

    def __init__(self, size: int) -> None:
        self._size = check_int("size", size, low=1)

    @property
    def size(self) -> int:
        """The fixed size."""
        return self._size

    def record(self, size: int, duration_s: float) -> int:
        """Ignore the call; return the fixed size."""
        return self._size

    def __repr__(self) -> str:
        return f"FixedChunker({self._size})"


def as_chunker(chunker: object, name: str = "chunker") -> Chunker:
    """An ``int`` or a `Chunker` as a `Chunker`; anything else is refused, naming the parameter ``name``.

    Raises:
        TypeError: If ``chunker`` is neither an int nor a `Chunker`.
        ValueError: If it is an int below 1.
    """
    if isinstance(chunker, int) and not isinstance(chunker, bool):
        check_int(name, chunker, low=1)
        return FixedChunker(chunker)
    if isinstance(chunker, Chunker):
        return chunker
    raise TypeError(f"{name} must be an int or a Chunker (size and record), got {chunker!r}")


# A measured duration of 0 (a clock that did not move, virtual time) would
# make the ratio infinite; any duration this short just means "far too small".
_MIN_DURATION_S = 1e-9


class AdaptiveChunker:
    """Adapts a chunk (batch) size so that one call takes about ``target_duration_s``.

    Concurrency (how many calls at once) is the governor's knob; the chunk
    size (how many items per call) is this one's. It keeps a moving window of
    the durations of calls made at the current size. Once the window holds
    ``min_samples`` of them and their mean is outside ``target × (1 ±
    tolerance)``, the size moves, by at least one item, within ``[min_size,
    max_size]``; then the window starts again. Durations of calls made at an
    older size are dropped: they describe the size before.

    - **Too short**: the size goes straight for the target, ``size × target /
      mean``, at most doubling per step. A call's cost grows at most in
      proportion to its size (a fixed cost per call plus one per item), so
      this never overshoots; from far below it doubles every ``min_samples``
      calls, a slow start, and it settles on the target rather than at the
      band's lower edge.
    - **Too long**: it steps ``rate`` of the way in log space, by ``(target /
      mean) ** rate``, at least halving per step. A call over the target has
      often waited in the upstream's queue, which is the governor's knob: a
      smaller chunk does not shorten that wait, so the step down is damped.

    The log-space step down is unstuck at small sizes: a linear step
    truncated to an integer can never shrink a size of 2 or 3, and needs a
    call 10× over target to shrink 4.

    A plain object: feed it with `record` (or time a call with `measure`);
    it needs no event loop except to read the default clock in `measure`.

    Args:
        initial_size: The size to start from; defaults to ``min_size``.
        min_size: The smallest size it may choose (>= 1).
        max_size: The largest size it may choose.
        target_duration_s: The call duration to steer toward.
        rate: How far each step down goes toward the target in log space, in
            (0, 1] (a step up goes all the way).
        tolerance: The relative band around the target inside which the size
            holds, in [0, 1).
        min_samples: Calls at the current size needed before a change.
        window_size: How many recent durations the mean is taken over
            (>= ``min_samples``).
        clock: Seconds as a float, read by `measure`; defaults to the
            running event loop's time.

    Raises:
        ValueError: For out-of-range values (naming the parameter), or
            ``min_size > max_size``, or an ``initial_size`` outside the bounds.
    """

    def __init__(
        self,
        *,
        initial_size: int | None = None,
        min_size: int = 1,
        max_size: int = 10_000,
        target_duration_s: float = 0.2,
        rate: float = 0.3,
        tolerance: float = 0.2,
        min_samples: int = 3,
        window_size: int = 10,
        clock: Clock | None = None,
    ) -> None:
        check_int("min_size", min_size, low=1)
        check_int("max_size", max_size, low=1)
        if min_size > max_size:
            raise ValueError(f"min_size ({min_size}) must not exceed max_size ({max_size})")
        if initial_size is None:
            initial_size = min_size
        check_int("initial_size", initial_size, low=1)
        if not min_size <= initial_size <= max_size:
            raise ValueError(f"initial_size must be in [{min_size}, {max_size}], got {initial_size!r}")
        self._target = check_float("target_duration_s", target_duration_s, low=0.0, low_open=True)
        self._rate = check_float("rate", rate, low=0.0, high=1.0, low_open=True)
        self._tolerance = check_float("tolerance", tolerance, low=0.0, high=1.0, high_open=True)
        self._min_samples = check_int("min_samples", min_samples, low=1)
        check_int("window_size", window_size, low=min_samples)
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a zero-argument callable returning seconds, got {clock!r}")
        self._clock: Clock = clock or loop_time
        self._min = min_size
        self._max = max_size
        self._size = initial_size
        self._durations: deque[float] = deque(maxlen=window_size)
        self._changes = 0

    @property
    def size(self) -> int:
        """The chunk size to use for the next call."""
        return self._size

    @property
    def min_size(self) -> int:
        """The smallest size it may choose."""
        return self._min

    @property
    def max_size(self) -> int:
        """The largest size it may choose."""
        return self._max

    @property
    def target_duration_s(self) -> float:
        """The call duration it steers toward."""
        return self._target

    @property
    def changes(self) -> int:
        """How many times the size has changed."""
        return self._changes

    def mean_duration_s(self) -> float | None:
        """The mean duration of the window's calls at the current size; None when empty."""
        return sum(self._durations) / len(self._durations) if self._durations else None

    def reset(self, size: int) -> None:
        """Start again from ``size`` (clamped to the bounds), forgetting the durations seen.

        A governor calls it with the learned size when this chunker is attached
        to it (`aiogovernor.Governor.attach_chunker`).

        Raises:
            ValueError: If ``size`` < 1.
        """
        check_int("size", size, low=1)
        self._size = min(self._max, max(self._min, size))
        self._durations.clear()

    def record(self, size: int, duration_s: float) -> int:
        """Record that a call carrying ``size`` items took ``duration_s``; return the next size.

        A call made at a size other than the current one is ignored (it was
        started before the last change).

        Raises:
            ValueError: If ``size`` < 1 or ``duration_s`` is negative or not finite.
        """
        check_int("size", size, low=1)
        check_float("duration_s", duration_s, low=0.0)
        if size != self._size:
            return self._size
        self._durations.append(duration_s)
        if len(self._durations) < self._min_samples:
            return self._size
        mean = max(sum(self._durations) / len(self._durations), _MIN_DURATION_S)
        if abs(mean - self._target) <= self._tolerance * self._target:
            return self._size
        # Up, straight for the target (see the class docstring): with `rate` there too,
        # growth stopped at the band's lower edge, 20 % short of the target, and took
        # twice the steps to get there. Down, damped: the wait in a queue is not the chunk's.
        rate = 1.0 if mean < self._target else self._rate
        factor = min(2.0, max(0.5, (self._target / mean) ** rate))
        new = round(self._size * factor)
        # At least one item per step, the way the mean points.
        new = max(new, self._size + 1) if mean < self._target else min(new, self._size - 1)
        new = min(self._max, max(self._min, new))
        if new != self._size:
            self._size = new
            self._changes += 1
            self._durations.clear()
        return self._size

    @contextmanager
    def measure(self, size: int) -> Iterator[None]:
        """Time the block with the clock and `record` it as a call carrying ``size`` items.

        A block that raises `TimeoutError` is recorded too (the chunk took at
        least that long, and must shrink); one that raises anything else is
        not: a failed call says nothing reliable about how long a chunk takes.
        """
        start = self._clock()
        try:
            yield
        except TimeoutError:
            self.record(size, max(0.0, self._clock() - start))
            raise
        self.record(size, max(0.0, self._clock() - start))

    def __repr__(self) -> str:
        return (
            f"AdaptiveChunker(size={self._size}, bounds=[{self._min}, {self._max}], "
            f"target_duration_s={self._target})"
        )
