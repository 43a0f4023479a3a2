"""Metrics for governors: OpenTelemetry and Prometheus exporters, and what they share.

The exporters live in their own modules, each behind its extra:

- `aiogovernor.metrics.otel` (``pip install 'aiogovernor[otel]'``): instruments
  on an OpenTelemetry meter.
- `aiogovernor.metrics.prometheus` (``pip install 'aiogovernor[prometheus]'``):
  a collector for ``prometheus_client``.

Both report every live governor (`live_governors`), read its
`aiogovernor.Governor.stats` when metrics are collected rather than on the
permit path, and fold latencies into histograms once per closed window.
"""

from __future__ import annotations

from aiogovernor._registry import live_governors as live_governors

from ._histogram import DEFAULT_LATENCY_BUCKETS_S as DEFAULT_LATENCY_BUCKETS_S
from ._histogram import LatencyHistograms as LatencyHistograms

__all__ = ["DEFAULT_LATENCY_BUCKETS_S", "LatencyHistograms", "live_governors"]
