"""OpenTelemetry metrics for every live governor (the ``otel`` extra: ``opentelemetry-api``).

```python
from aiogovernor.metrics.otel import GovernorInstruments

instruments = GovernorInstruments()   # the global MeterProvider, or pass one
```

Gauges and counters are observable: they read each live governor's
`aiogovernor.Governor.stats` when the SDK collects, and cost nothing while
work runs. The latency histogram is fed once per closed window (see
`GovernorInstruments`).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence

try:
    from opentelemetry import metrics as otel_metrics
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "aiogovernor.metrics.otel needs OpenTelemetry's API: pip install 'aiogovernor[otel]'"
    ) from exc

from aiogovernor._events import WindowListener
from aiogovernor._registry import Governor  # either gate: the async one or the thread gate
from aiogovernor._samples import Window
from aiogovernor._validate import check_int

from ._every import EveryGovernor
from ._histogram import DEFAULT_LATENCY_BUCKETS_S, check_buckets
from ._reading import DIRECTIONS, OUTCOMES, Reading, read_live

__all__ = ["GovernorInstruments"]

_Observation = otel_metrics.Observation
_Attributes = dict[str, str]


def _attributes(reading: Reading) -> _Attributes:
    return {"governor": reading.governor, "environment": reading.environment}


class GovernorInstruments:
    """OpenTelemetry instruments reporting every live governor.

    - ``aiogovernor.limit`` (gauge, ``{permit}``): permits the gate admits at once.
    - ``aiogovernor.inflight`` (gauge, ``{permit}``): permits held now.
    - ``aiogovernor.waiting`` (gauge, ``{caller}``): callers queued for a permit.
    - ``aiogovernor.paused`` (gauge, ``s``): how much longer new permits are
      paused (0 when not paused).
    - ``aiogovernor.outcomes`` (counter, ``{unit}``, attribute ``outcome``):
      finished units of work by outcome (ok, overload, error, ignored).
    - ``aiogovernor.decisions`` (counter, ``{decision}``, attribute
      ``direction``): decisions that raised (up), lowered (down) or held the limit.
    - ``aiogovernor.latency`` (histogram, ``s``): latencies of successful work
      (see below).

    Every measurement carries the attributes ``governor`` (its name) and
    ``environment``. Gauges and counters are read from `Governor.stats`
    when the SDK collects: the values are those of `stats` at that moment.

    The latency histogram: OpenTelemetry's API records one value per call
    (some microseconds each in the Python SDK), which per unit of work would
    cost more than the gate itself. So each closed window contributes at most
    ``latency_values_per_window`` values, its evenly spaced order statistics
    (all of them when the window is smaller), and they are recorded when the
    SDK next collects, not on the event loop. The histogram shows the shape
    of each window's latencies; its count is the number of values recorded,
    not of calls (``aiogovernor.outcomes`` counts calls). Values waiting for a
    collection are bounded by ``max_pending_windows`` (the oldest are dropped).

    Args:
        meter_provider: Where the instruments live; None means the global one.
        latency_values_per_window: At most this many values per window.
        latency_buckets_s: Bucket bounds suggested to the SDK for the histogram.
        max_pending_windows: Windows kept for the next collection, at most.
    """

    def __init__(
        self,
        meter_provider: otel_metrics.MeterProvider | None = None,
        *,
        latency_values_per_window: int = 16,
        latency_buckets_s: Iterable[float] = DEFAULT_LATENCY_BUCKETS_S,
        max_pending_windows: int = 256,
    ) -> None:
        self._per_window = check_int("latency_values_per_window", latency_values_per_window, low=1)
        bounds = check_buckets(latency_buckets_s)
        check_int("max_pending_windows", max_pending_windows, low=1)
        provider = meter_provider if meter_provider is not None else otel_metrics.get_meter_provider()
        meter = provider.get_meter("aiogovernor")
        # Filled on the event loop (one append per window), drained by the collecting thread.
        self._pending: collections.deque[tuple[_Attributes, list[float]]] = collections.deque(
            maxlen=max_pending_windows
        )
        self._drain_lock = threading.Lock()
        self._latency = meter.create_histogram(
            "aiogovernor.latency",
            unit="s",
            description="Latency of successful units of work (up to N order statistics per window)",
            explicit_bucket_boundaries_advisory=list(bounds),
        )
        gauges: list[tuple[str, str, str, Callable[[Reading], float]]] = [
            ("aiogovernor.limit", "{permit}", "Permits the gate admits at once", lambda r: r.limit),
            ("aiogovernor.inflight", "{permit}", "Permits held now", lambda r: r.inflight),
            ("aiogovernor.waiting", "{caller}", "Callers queued for a permit", lambda r: r.waiting),
            ("aiogovernor.paused", "s", "How much longer new permits are paused", lambda r: r.paused_s),
        ]
        for name, unit, description, value in gauges:
            meter.create_observable_gauge(
                name, callbacks=[self._gauge_callback(value)], unit=unit, description=description
            )
        meter.create_observable_counter(
            "aiogovernor.outcomes",
            callbacks=[self._counter_callback("outcome", OUTCOMES, lambda r: r.outcomes)],
            unit="{unit}",
            description="Finished units of work by outcome",
        )
        meter.create_observable_counter(
            "aiogovernor.decisions",
            callbacks=[self._counter_callback("direction", DIRECTIONS, lambda r: r.decisions)],
            unit="{decision}",
            description="Decisions by direction of the limit",
        )
        self._hook = EveryGovernor(self._make_listener)

    # -- collection (the SDK's thread) -----------------------------------------

    def _gauge_callback(
        self, value: Callable[[Reading], float]
    ) -> Callable[[otel_metrics.CallbackOptions], Iterable[otel_metrics.Observation]]:
        def callback(options: otel_metrics.CallbackOptions) -> Iterable[otel_metrics.Observation]:
            self._drain()
            return [_Observation(value(r), _attributes(r)) for r in read_live()]

        return callback

    def _counter_callback(
        self, key: str, kinds: Sequence[str], counts: Callable[[Reading], Mapping[str, int]]
    ) -> Callable[[otel_metrics.CallbackOptions], Iterable[otel_metrics.Observation]]:
        def callback(options: otel_metrics.CallbackOptions) -> Iterable[otel_metrics.Observation]:
            self._drain()
            return [
                _Observation(counts(r)[kind], {**_attributes(r), key: kind})
                for r in read_live()
                for kind in kinds
            ]

        return callback

    def _drain(self) -> None:
        """Record the latencies windows left since the last collection.

        Called from every observable callback, which the SDK runs before it
        reads its synchronous instruments: whichever runs first records them
        into this same collection.
        """
        if not self._pending:
            return
        with self._drain_lock:  # several readers may collect at once
            pending, record = self._pending, self._latency.record
            while pending:
                try:
                    attributes, values = pending.popleft()
                except IndexError:  # pragma: no cover - emptied by a racing drain
                    return
                for value in values:
                    record(value, attributes)

    # -- windows (the event loop) -------------------------------------------------

    def _make_listener(self, governor: Governor) -> WindowListener:
        attributes = {"governor": governor.name, "environment": governor.environment}
        per_window, pending = self._per_window, self._pending

        def on_window(window: Window, ok_latencies_s: Sequence[float], /) -> None:
            n = len(ok_latencies_s)
            if n <= per_window:
                values = list(ok_latencies_s)
            else:
                # Evenly spaced order statistics: the middle of each of `per_window` equal ranks.
                values = [ok_latencies_s[(2 * i + 1) * n // (2 * per_window)] for i in range(per_window)]
            if values:
                pending.append((attributes, values))

        return on_window

    def close(self) -> None:
        """Stop feeding the latency histogram (observable instruments stay with their provider)."""
        self._hook.close()
