"""The Prometheus collector, scraped over HTTP from prometheus_client's own server; the Grafana dashboard."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")

import httpx
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from aiogovernor import AIMD, Governor, GovernorStats, Outcome
from aiogovernor.metrics.prometheus import GovernorCollector
from aiogovernor.sim import run_virtual
from aiogovernor.testing import ManualClock

DASHBOARD = Path(__file__).parent.parent / "docs" / "grafana" / "aiogovernor.json"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    collector = GovernorCollector(latency_buckets_s=[0.002, 0.005, 0.1])
    registry.register(collector)
    yield registry
    registry.unregister(collector)
    collector.close()


@pytest.fixture
def scrape(registry: CollectorRegistry) -> Iterator[str]:
    """The /metrics address of prometheus_client's HTTP server on a loopback port."""
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    yield f"http://127.0.0.1:{server.server_port}/metrics"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def parse(text: str, environment: str) -> Samples:
    """(sample name, labels) -> value, for one environment."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("environment") == environment:
                labels = {k: v for k, v in sample.labels.items() if k != "environment"}
                out[sample.name, frozenset(labels.items())] = sample.value
    return out


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


def test_a_scrape_reads_every_live_governors_stats(scrape: str) -> None:
    clock = ManualClock()
    gov = Governor("api", AIMD(initial_limit=4), environment="prom", clock=clock, store=None)
    also = Governor("db", AIMD(initial_limit=3), environment="prom", clock=clock, store=None)
    latencies: list[float] = []
    gov.add_window_listener(lambda w, lat: latencies.extend(lat))
    for i in range(60):
        permit = gov.try_acquire()
        assert permit is not None
        clock.advance(0.001 * (1 + i % 7))
        permit.release(Outcome.OVERLOAD if i == 40 else Outcome.ERROR if i % 9 == 0 else Outcome.OK)
    held = gov.try_acquire()
    gov.pause(3.0)
    clock.advance(0.5)

    response = httpx.get(scrape, timeout=10)
    assert response.status_code == 200
    s: GovernorStats = gov.stats()  # the clock is still: the same moment as the scrape
    samples = parse(response.text, "prom")

    g = {"governor": "api"}
    assert get(samples, "aiogovernor_limit", **g) == s.limit
    assert get(samples, "aiogovernor_inflight", **g) == s.inflight == 1
    assert get(samples, "aiogovernor_waiting", **g) == s.waiting
    assert get(samples, "aiogovernor_paused_seconds", **g) == pytest.approx(s.paused_for_s) == 2.5
    for outcome, n in s.counts.items():
        assert get(samples, "aiogovernor_outcomes_total", outcome=outcome, **g) == n
    for direction, n in s.decisions_by_direction.items():
        assert get(samples, "aiogovernor_decisions_total", direction=direction, **g) == n
    assert s.decisions_by_direction["down"] == 1
    # The histogram holds every successful latency of every closed window.
    assert latencies
    for bound in ("0.002", "0.005", "0.1"):
        expected = sum(x <= float(bound) for x in latencies)
        assert get(samples, "aiogovernor_latency_seconds_bucket", le=bound, **g) == expected
    assert get(samples, "aiogovernor_latency_seconds_bucket", le="+Inf", **g) == len(latencies)
    assert get(samples, "aiogovernor_latency_seconds_count", **g) == len(latencies)
    assert get(samples, "aiogovernor_latency_seconds_sum", **g) == pytest.approx(sum(latencies))
    assert get(samples, "aiogovernor_limit", governor="db") == also.limit
    assert held is not None
    held.release()


def test_governors_sharing_a_name_and_environment_give_one_series(registry: CollectorRegistry) -> None:
    clock = ManualClock()
    first = Governor("twin", AIMD(initial_limit=4), environment="prom-twins", clock=clock, store=None)
    second = Governor("twin", AIMD(initial_limit=6), environment="prom-twins", clock=clock, store=None)
    held = [first.try_acquire() for _ in range(2)] + [second.try_acquire()]
    samples = parse(generate_latest(registry).decode(), "prom-twins")
    assert get(samples, "aiogovernor_limit", governor="twin") == 10
    assert get(samples, "aiogovernor_inflight", governor="twin") == 3
    assert len([key for key in samples if key[0] == "aiogovernor_limit"]) == 1
    for p in held:
        assert p is not None
        p.release()


def test_a_governor_whose_clock_cannot_be_read_here_is_left_out_not_fatal(scrape: str) -> None:
    async def paused_then_over() -> Governor:
        gov = Governor("paused", environment="prom-ended", store=None)
        async with gov:
            pass
        gov.pause(60)
        return gov

    ended = run_virtual(paused_then_over())  # the loop it was paused on is gone
    with pytest.raises(RuntimeError):
        ended.stats()
    alive = Governor("alive", environment="prom-ended", clock=ManualClock(), store=None)
    response = httpx.get(scrape, timeout=10)
    assert response.status_code == 200
    samples = parse(response.text, "prom-ended")
    assert get(samples, "aiogovernor_limit", governor="alive") == alive.limit
    assert not [key for key in samples if ("governor", "paused") in key[1]]


def exported_names(registry: CollectorRegistry) -> set[str]:
    gov = Governor("dashboard", environment="prom-dashboard", store=None)  # one series of each, at least
    names = {sample.name for family in registry.collect() for sample in family.samples}
    del gov
    return names


def test_the_grafana_dashboard_only_queries_exported_metrics(registry: CollectorRegistry) -> None:
    names = exported_names(registry)
    assert {"aiogovernor_limit", "aiogovernor_outcomes_total", "aiogovernor_latency_seconds_bucket"} <= names
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert panels
    queried: set[str] = set()
    for panel in panels:
        assert panel["title"] and panel["description"], panel
        exprs = [target["expr"] for target in panel["targets"]]
        assert exprs, panel["title"]
        for expr in exprs:
            used = set(re.findall(r"\baiogovernor_[a-z_]+", expr))
            assert used, (panel["title"], expr)
            assert used <= names, (panel["title"], used - names)
            queried |= used
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert set(re.findall(r"\baiogovernor_[a-z_]+", variable["definition"])) <= names
    # Every family the collector exports has a panel.
    assert {n.removesuffix("_total") for n in queried} >= {
        "aiogovernor_limit",
        "aiogovernor_inflight",
        "aiogovernor_waiting",
        "aiogovernor_paused_seconds",
        "aiogovernor_outcomes",
        "aiogovernor_decisions",
    }
    assert "aiogovernor_latency_seconds_bucket" in queried
