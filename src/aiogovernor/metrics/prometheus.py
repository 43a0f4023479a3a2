"""A Prometheus collector for every live governor (the ``prometheus`` extra: ``prometheus_client``).

```python
from prometheus_client import REGISTRY, start_http_server
from aiogovernor.metrics.prometheus import GovernorCollector

REGISTRY.register(GovernorCollector())
start_http_server(9464)
```

The collector reads each live governor's `aiogovernor.Governor.stats` when
Prometheus scrapes: nothing runs on the permit path. The latency histogram
is folded in once per closed window.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "aiogovernor.metrics.prometheus needs prometheus_client: pip install 'aiogovernor[prometheus]'"
    ) from exc

from aiogovernor._registry import Governor  # either gate: the async one or the thread gate

from ._histogram import DEFAULT_LATENCY_BUCKETS_S, LatencyHistograms
from ._reading import DIRECTIONS, OUTCOMES, read_live

__all__ = ["GovernorCollector"]

_LABELS = ["governor", "environment"]


class _Families(NamedTuple):
    """The metric families of one scrape."""

    limit: GaugeMetricFamily
    inflight: GaugeMetricFamily
    waiting: GaugeMetricFamily
    paused: GaugeMetricFamily
    outcomes: CounterMetricFamily
    decisions: CounterMetricFamily
    latency: HistogramMetricFamily


def _families() -> _Families:
    """Fresh, empty families (samples are added per scrape)."""
    return _Families(
        limit=GaugeMetricFamily("aiogovernor_limit", "Permits the gate admits at once", labels=_LABELS),
        inflight=GaugeMetricFamily("aiogovernor_inflight", "Permits held now", labels=_LABELS),
        waiting=GaugeMetricFamily("aiogovernor_waiting", "Callers queued for a permit", labels=_LABELS),
        paused=GaugeMetricFamily(
            "aiogovernor_paused_seconds",
            "How much longer new permits are paused (0 when not paused)",
            labels=_LABELS,
            unit="seconds",
        ),
        outcomes=CounterMetricFamily(
            "aiogovernor_outcomes", "Finished units of work by outcome", labels=[*_LABELS, "outcome"]
        ),
        decisions=CounterMetricFamily(
            "aiogovernor_decisions",
            "Decisions by direction of the limit (up, down, hold)",
            labels=[*_LABELS, "direction"],
        ),
        latency=HistogramMetricFamily(
            "aiogovernor_latency_seconds",
            "Latency of successful units of work",
            labels=_LABELS,
            unit="seconds",
        ),
    )


class GovernorCollector(Collector):
    """Exports every live governor's figures at scrape time.

    - ``aiogovernor_limit`` (gauge): permits the gate admits at once.
    - ``aiogovernor_inflight`` (gauge): permits held now.
    - ``aiogovernor_waiting`` (gauge): callers queued for a permit.
    - ``aiogovernor_paused_seconds`` (gauge): how much longer new permits
      are paused (0 when not paused).
    - ``aiogovernor_outcomes_total`` (counter, label ``outcome``): finished
      units of work by outcome (ok, overload, error, ignored).
    - ``aiogovernor_decisions_total`` (counter, label ``direction``):
      decisions that raised (up), lowered (down) or held the limit.
    - ``aiogovernor_latency_seconds`` (histogram): latencies of successful work.

    Every series is labelled ``governor`` and ``environment``. Gauges and
    counters are `Governor.stats` at the scrape. The histogram counts every
    successful unit of work whose window closed after the collector was made
    (each window is folded in at once, a few bisections of its sorted
    latencies); register the collector before the work starts.

    Args:
        latency_buckets_s: The histogram's upper bounds in seconds.
    """

    def __init__(self, *, latency_buckets_s: Iterable[float] = DEFAULT_LATENCY_BUCKETS_S) -> None:
        self._histograms = LatencyHistograms(latency_buckets_s)

    def describe(self) -> Iterable[Metric]:
        """The metric families, without samples (the registry checks names with them)."""
        return list(_families())

    def collect(self) -> Iterable[Metric]:
        """Read every live governor now."""
        f = _families()
        for r in read_live():
            labels = [r.governor, r.environment]
            f.limit.add_metric(labels, r.limit)
            f.inflight.add_metric(labels, r.inflight)
            f.waiting.add_metric(labels, r.waiting)
            f.paused.add_metric(labels, r.paused_s)
            for outcome in OUTCOMES:
                f.outcomes.add_metric([*labels, outcome], r.outcomes[outcome])
            for direction in DIRECTIONS:
                f.decisions.add_metric([*labels, direction], r.decisions[direction])
            self._add_histogram(f.latency, labels, r.members)
        return list(f)

    def _add_histogram(
        self, family: HistogramMetricFamily, labels: list[str], members: Iterable[Governor]
    ) -> None:
        bounds = self._histograms.buckets_s
        counts = [0] * len(bounds)
        total, count = 0.0, 0
        for governor in members:
            state = self._histograms.get(governor)
            if state is None:
                continue
            for i, c in enumerate(state[0]):
                counts[i] += c
            total += state[1]
            count += state[2]
        buckets = [(repr(b), c) for b, c in zip(bounds, counts, strict=True)]
        buckets.append(("+Inf", count))
        family.add_metric(labels, buckets, total)

    def close(self) -> None:
        """Stop folding windows into the histogram (unregister the collector from its registry too)."""
        self._histograms.close()
