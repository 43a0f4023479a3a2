"""The real world's noise, modelled in virtual time: server models, client-side lag, the lag probe,
sized samples, and how the default policy reads them (scripted windows, no event loop)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from aiogovernor import OverloadError
from aiogovernor._lag import LoopLagProbe
from aiogovernor._samples import Outcome, Sample, Window, WindowAggregator, WindowConfig, size_band
from aiogovernor.limits import LatencyAIMD, LatencyBaseline
from aiogovernor.sim import (
    Client,
    ConnectionWall,
    Scenario,
    ServerUpstream,
    TokenBucketUpstream,
    VirtualTimeEventLoop,
    run_scenario,
    run_virtual,
)
from aiogovernor.testing import window


async def _latencies(upstream: ServerUpstream | ConnectionWall | TokenBucketUpstream, n: int) -> list[object]:
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def one() -> object:
        try:
            await upstream()
        except OverloadError:
            return "refused"
        return round(loop.time() - start, 6)

    return list(await asyncio.gather(*(one() for _ in range(n))))


def test_a_worker_pool_queues_fifo_past_its_workers() -> None:
    server = ServerUpstream(workers=2, service_time_s=1.0, jitter=0.0, backlog=2)
    assert run_virtual(_latencies(server, 5)) == [1.0, 1.0, 2.0, 2.0, "refused"]


def test_cpu_work_is_shared_between_the_cores() -> None:
    server = ServerUpstream(workers=8, service_time_s=0.0, cpu_s=1.0, cores=2, jitter=0.0)
    assert run_virtual(_latencies(server, 4)) == [2.0, 2.0, 2.0, 2.0]
    assert server.capacity == 2
    # 60 ms of I/O and 3 ms of CPU on one core: the CPU saturates at 21 busy workers.
    assert ServerUpstream(workers=32, service_time_s=0.06, cpu_s=0.003, cores=1).capacity == 21


def test_a_stall_slows_every_request_in_flight_at_once() -> None:
    server = ServerUpstream(
        workers=4, service_time_s=0.01, jitter=0.0, stall_every_s=0.001, stall_s=(0.05, 0.05), seed=3
    )
    latencies = run_virtual(_latencies(server, 4))
    assert server.stalls >= 1
    assert len(set(latencies)) == 1, latencies  # all four finish together, after the stall
    assert isinstance(latencies[0], float) and latencies[0] > 0.05


def test_a_proxy_refuses_past_its_connections() -> None:
    wall = ConnectionWall(ServerUpstream(workers=64, service_time_s=0.05, jitter=0.0), max_connections=3)
    assert run_virtual(_latencies(wall, 4)) == [0.05, 0.05, 0.05, "refused"]
    assert wall.capacity == 3 and wall.refused == 1


def test_a_token_bucket_delays_then_refuses() -> None:
    bucket = TokenBucketUpstream(
        ServerUpstream(workers=64, service_time_s=0.01, jitter=0.0), rate_per_s=10, burst=2
    )
    assert run_virtual(_latencies(bucket, 4)) == [0.01, 0.11, 0.21, "refused"]


def test_a_busy_client_lags_and_the_probe_sees_it() -> None:
    readings: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeEventLoop)
        probe = LoopLagProbe(
            loop, lambda lag, _: readings.append(lag), lambda: len(readings) < 3, period_s=0.01
        )
        probe.ensure_running()
        await asyncio.sleep(0.005)
        loop.advance(0.03)  # the loop is busy for 30 ms: the tick due at 10 ms runs at 35 ms
        await asyncio.sleep(0.1)
        assert not probe.running

    run_virtual(main())
    assert readings[0] == pytest.approx(0.025)
    assert readings[1:] == [0.0, 0.0]


def test_the_window_reports_the_loop_lag() -> None:
    agg = WindowAggregator(WindowConfig(min_samples=1, min_duration_s=0.0))
    for _ in range(9):
        agg.record_lag(0.0, 0.01)
    agg.record_lag(0.05, 0.01)  # one 50 ms pause among 100 ms of ticks
    agg.add(Sample(0.0, 0.02, 1, Outcome.OK), now=0.2, limit=1)
    w = agg.close(0.2, 1, peak_inflight=1)
    assert w.loop_lag_s == 0.0  # the median lateness of the ticks: no steady backlog
    # A pause delays what arrives during it by what is left of it: 0.05² / 2 over 0.15 s.
    assert w.loop_pause_s == pytest.approx(0.05**2 / 2 / 0.15)
    assert w.loop_pause_longest_s == pytest.approx(0.05)  # the one pause, beyond the steady lag


def test_the_longest_pause_is_taken_beyond_the_steady_lag() -> None:
    agg = WindowAggregator(WindowConfig(min_samples=1, min_duration_s=0.0))
    for lag in (0.002, 0.002, 0.003, 0.002, 0.032):
        agg.record_lag(lag, 0.01)
    agg.add(Sample(0.0, 0.02, 1, Outcome.OK), now=0.1, limit=1)
    w = agg.close(0.1, 1, peak_inflight=1)
    assert w.loop_lag_s == 0.002
    assert w.loop_pause_longest_s == pytest.approx(0.030)
    agg.add(Sample(0.1, 0.02, 1, Outcome.OK), now=0.2, limit=1)
    assert agg.close(0.2, 1, peak_inflight=1).loop_pause_longest_s == 0.0  # no reading: not measured


def test_client_cost_and_pauses_slow_the_client_in_virtual_time() -> None:
    def scenario(**noise: object) -> Scenario:
        return Scenario(
            name="client",
            upstream=lambda: ServerUpstream(workers=64, service_time_s=0.02, jitter=0.0),
            duration_s=2.0,
            clients=(Client(callers=4),),
            **noise,  # type: ignore[arg-type]
        )

    quiet = run_scenario(scenario(), 4)
    busy = run_scenario(scenario(client_cost_s=0.01), 4)
    paused = run_scenario(scenario(client_pause_every_s=0.2, client_pause_s=(0.05, 0.05)), 4)
    assert quiet.latency_p50_s == pytest.approx(0.02)
    # Four callers, each response costing 10 ms of the one loop: the loop is the bottleneck.
    assert busy.goodput == pytest.approx(100, rel=0.05)
    assert paused.goodput < 0.9 * quiet.goodput
    with pytest.raises(ValueError, match="client_cost_s"):
        scenario(client_cost_s=-1.0)


def test_sized_samples_are_grouped_in_bands() -> None:
    assert [size_band(s) for s in (0.5, 1, 2, 3, 4, 7, 8, 1000)] == [0, 0, 1, 1, 2, 2, 3, 9]
    agg = WindowAggregator(WindowConfig(min_samples=1, min_duration_s=0.0))
    agg.add(Sample(0.0, 0.020, 1, Outcome.OK), now=1.0, limit=8)
    for size, latency in ((100, 0.120), (100, 0.122), (120, 0.140), (3, 0.023)):
        agg.add(Sample(0.0, latency, 1, Outcome.OK, size=size), now=1.0, limit=8)
    w = agg.close(1.0, 8, peak_inflight=8)
    assert [(b.band, b.count, b.size_mean) for b in w.bands] == [(0, 1, 1.0), (1, 1, 3.0), (6, 3, 320 / 3)]
    assert w.bands[-1].latency_p50_s == 0.122
    assert w.size_mean == pytest.approx((1 + 100 + 100 + 120 + 3) / 5)


def _sized(latency_s: float, size: float, n: int = 12, limit: int = 16) -> object:
    agg = WindowAggregator(WindowConfig(min_samples=1, min_duration_s=0.0))
    for i in range(n):
        agg.add(Sample(0.0, latency_s * (1 + 0.001 * i), limit, Outcome.OK, size=size), now=1.0, limit=limit)
    return agg.close(1.0, limit, peak_inflight=limit)


def test_a_larger_batch_is_not_queueing() -> None:
    baseline = LatencyBaseline()
    small, large, queued = _sized(0.021, 1.0), _sized(0.220, 200.0), _sized(0.440, 200.0)
    for w in (small, large):
        baseline.observe(w)  # type: ignore[arg-type]
    assert baseline.ratio(_sized(0.021, 1.0)) == pytest.approx(1.0, abs=0.02)  # type: ignore[arg-type]
    assert baseline.ratio(large) == pytest.approx(1.0, abs=0.02)  # type: ignore[arg-type]
    assert baseline.ratio(queued) == pytest.approx(2.0, rel=0.02)  # type: ignore[arg-type]
    # Between measured sizes the no-load latency is interpolated (exact for a cost affine in
    # the size); past them it is assumed proportional, so an unseen larger batch is not queueing.
    assert baseline.expected_s(100.0) == pytest.approx(0.021 + (0.220 - 0.021) * 99 / 199, rel=0.02)
    assert baseline.ratio(_sized(0.120, 100.0)) == pytest.approx(1.0, abs=0.03)  # type: ignore[arg-type]
    assert baseline.ratio(_sized(5.0, 5000.0)) <= 1.0  # type: ignore[arg-type]


def _clean(p: LatencyAIMD, limit: int, latency_s: float = 0.05) -> None:
    p.update(window(ok=40, latency_s=latency_s, limit=limit))


# These policies stand for one that has run a while: past slow start, growing by one a
# window (slow start has its own tests in test_latency_policies.py).


def test_a_latency_cut_stops_at_the_good_floor_until_queueing_comes_back() -> None:
    baseline = LatencyBaseline()
    baseline.seed(0.05)
    p = LatencyAIMD(initial_limit=16, baseline=baseline, slow_start=False)
    for _ in range(3):
        _clean(p, int(p.limit))  # clean and limit-bound at 16, 17, 18: growing by one
    assert p.good_floor == 18 and p.limit == 19
    adj = p.update(window(ok=40, latency_s=0.15, limit=19))  # one stalled window, 3x the baseline
    assert adj.limit == 18, adj.reason
    assert "good floor" in adj.reason
    _clean(p, 18, latency_s=0.15)  # the window after a cut is not cut again
    adj = p.update(window(ok=40, latency_s=0.15, limit=18))  # queueing is back: the floor was stale
    assert adj.limit == 9 and "forgotten" in adj.reason
    assert p.good_floor is None


def _delivering(**options: int) -> LatencyAIMD:
    """A policy clean and limit-bound at 20, 21, 22 whose windows each delivered 20 calls' worth.

    40 calls answered in 0.1 s at the 50 ms baseline: 20 in flight without a queue. No good
    floor (``good_memory_windows=0``), so that only the delivered floor can stop a cut.
    """
    baseline = LatencyBaseline()
    baseline.seed(0.05)
    p = LatencyAIMD(initial_limit=20, baseline=baseline, slow_start=False, good_memory_windows=0, **options)
    for _ in range(3):
        p.update(window(ok=40, latency_s=0.05, limit=int(p.limit), duration_s=0.1))
    assert p.limit == 23
    return p


def test_a_spike_after_a_clean_window_stops_at_the_concurrency_delivered_lately() -> None:
    p = _delivering()
    # 3x the baseline, 30 answered (15 delivered): Little's law says 23 / 3, half at most: 11.5.
    adj = p.update(window(ok=30, latency_s=0.15, limit=23, duration_s=0.1))
    assert adj.limit == 20, adj.reason
    assert "delivered lately 20.0" in adj.reason
    p.update(window(ok=30, latency_s=0.15, limit=20, duration_s=0.1))  # not cut again right after a cut
    # Queueing lasted (three windows in a row): a queue, not a spike, so Little's law cuts.
    adj = p.update(window(ok=30, latency_s=0.15, limit=20, duration_s=0.1))
    assert adj.limit == 10 and "delivered" not in adj.reason


def test_the_delivered_floor_reads_only_recent_limit_bound_windows_and_can_be_off() -> None:
    # The spike's own window delivered 10 (20 answered in 0.1 s): below Little's law's 11.5.
    p = _delivering(delivered_floor_windows=0)
    assert p.update(window(ok=20, latency_s=0.15, limit=23, duration_s=0.1)).limit == 11.5
    p = _delivering()
    for _ in range(3):  # demand fell: windows not limit-bound, the limit held
        p.update(window(ok=20, latency_s=0.05, limit=23, peak_inflight=10, duration_s=0.1))
    # The windows that delivered 20 are four windows old now.
    assert p.update(window(ok=20, latency_s=0.15, limit=23, peak_inflight=10, duration_s=0.1)).limit == 11.5
    # A gentle rise (under good_floor_ratio) cuts as Little's law says, whatever was delivered.
    p = _delivering()
    assert p.update(window(ok=40, latency_s=0.07, limit=23, duration_s=0.1)).limit == pytest.approx(23 / 1.4)
    with pytest.raises(ValueError, match="delivered_floor_windows"):
        LatencyAIMD(delivered_floor_windows=-1)


def _climbed(queue_allowance: float = 0.75) -> LatencyAIMD:
    """A policy that climbed from 16 to 21 while latency rose gently (goodput still rising)."""
    baseline = LatencyBaseline()
    baseline.seed(0.05)
    p = LatencyAIMD(initial_limit=16, baseline=baseline, slow_start=False, queue_allowance=queue_allowance)
    for ratio in (1.0, 1.02, 1.04, 1.06, 1.08):
        _clean(p, int(p.limit), latency_s=0.05 * ratio)
    # Clean (within half the tolerance) up to 18; delivered 16, 16.7, 17.3, 17.9, 18.5.
    assert p.limit == 21 and p.good_floor == 18
    return p


def test_a_latency_rise_that_goodput_pays_for_is_not_queueing() -> None:
    # 1.12 x the baseline at 21 delivers 21 / 1.12 = 18.75 requests' worth of work, the best
    # lately; its queue (2.25) is within 0.75 x sqrt(21); 21 is within 0.75 x sqrt(18) of 18.
    p = _climbed()
    adj = p.update(window(ok=40, latency_s=0.056, limit=21))
    assert adj.limit == 21 and "paid for by goodput" in adj.reason
    # Without the allowance the same rise is queueing: Little's law cuts.
    p = _climbed(queue_allowance=0.0)
    assert p.update(window(ok=40, latency_s=0.056, limit=21)).limit == pytest.approx(21 / 1.12)


def test_a_latency_rise_that_costs_goodput_or_queues_too_much_is_cut() -> None:
    p = _climbed()
    # 1.3 x: 21 / 1.3 = 16.2 delivered, less than lately: congestion.
    assert p.update(window(ok=40, latency_s=0.065, limit=21)).limit == pytest.approx(21 / 1.3)
    # 1.2 x: 17.5 delivered, less than lately, too.
    p = _climbed()
    assert p.update(window(ok=40, latency_s=0.06, limit=21)).limit == pytest.approx(21 / 1.2)
    # Goodput kept (24 / 1.12 = 21.4) but past the zone above the good floor: cut.
    p = _climbed()
    assert p.update(window(ok=40, latency_s=0.056, limit=24)).limit == pytest.approx(21 / 1.12)


def test_an_overload_ignores_the_good_floor() -> None:
    baseline = LatencyBaseline()
    baseline.seed(0.05)
    p = LatencyAIMD(initial_limit=16, baseline=baseline, slow_start=False)
    _clean(p, 16)
    assert p.update(window(ok=30, overload=3, limit=16)).limit < 16
    assert p.good_floor is None


def test_loop_lag_explains_a_rise_but_not_one_several_times_larger() -> None:
    def lagged(latency_s: float, limit: int, *, loop_lag_s: float = 0.0, loop_pause_s: float = 0.0) -> Window:
        w = window(ok=40, latency_s=latency_s, limit=limit)
        return dataclasses.replace(w, loop_lag_s=loop_lag_s, loop_pause_s=loop_pause_s)

    def policy() -> LatencyAIMD:
        baseline = LatencyBaseline()
        baseline.seed(0.02)
        return LatencyAIMD(initial_limit=16, baseline=baseline, slow_start=False, good_memory_windows=0)

    # p50 30 ms on a 20 ms baseline, the client's loop pausing (GC) for 6 ms on average:
    # 2 x 6 ms explain the 10 ms rise, and growth goes on.
    assert policy().update(lagged(0.030, 16, loop_pause_s=0.006)).limit > 16
    # The same rise from a steadily busy client loop: no cut, and no growth either.
    adj = policy().update(lagged(0.030, 16, loop_lag_s=0.006))
    assert adj.limit == 16 and "busy loop" in adj.reason
    # The same rise with 1 ms of lag is queueing.
    adj = policy().update(lagged(0.030, 16, loop_pause_s=0.001))
    assert adj.limit < 16 and "loop lag" in adj.reason


def _paused(latency_s: float, *, longest_s: float, lag_s: float = 0.0005) -> Window:
    # One pause of ``longest_s`` in a window of 0.13 s, over a steady lag of ``lag_s``: the
    # mean delay it causes a response is longest² / 2 / 0.13 (`Window.loop_pause_s`).
    w = window(ok=40, latency_s=latency_s, limit=16)
    return dataclasses.replace(
        w, loop_lag_s=lag_s, loop_pause_s=longest_s**2 / 2 / 0.13, loop_pause_longest_s=longest_s
    )


@pytest.mark.parametrize("rule", [True, False])
def test_a_rise_one_pause_of_the_client_explains_holds_and_a_larger_one_cuts(rule: bool) -> None:
    def policy() -> LatencyAIMD:
        baseline = LatencyBaseline()
        baseline.seed(0.06)
        if rule:  # the default
            p = LatencyAIMD(initial_limit=16, baseline=baseline, slow_start=False)
        else:
            p = LatencyAIMD(initial_limit=16, baseline=baseline, slow_start=False, pause_allowance=0.0)
        _clean(p, 16, latency_s=0.06)  # limit-bound at its baseline: grows to 17
        assert p.limit == 17
        return p

    # The median 25 ms over a 60 ms baseline in a window where the client's whole loop
    # paused for 30 ms once (its mean delay, 3.5 ms, explains a seventh of the rise): the
    # pause delayed every call sent or answered during it.
    p = policy()
    adj = p.update(_paused(0.085, longest_s=0.030))
    if rule:
        assert adj.limit == 17 and "30 ms pause of the client's loop" in adj.reason  # no cut, no growth
        # The same pause again in the next window is no outlier: the loop is starved every
        # window (a loaded host), and the rise is cut as queueing.
        adj = p.update(_paused(0.085, longest_s=0.030))
        assert adj.limit < 17 and "latency p50" in adj.reason
    else:
        assert adj.limit < 17 and "latency p50" in adj.reason  # the rule off: cut as before it
    # A rise several times the pause is still queueing.
    adj = policy().update(_paused(0.150, longest_s=0.030))
    assert adj.limit < 17 and "latency p50" in adj.reason
    # So is a rise the pause would explain when it is no outlier beyond a steady lag of 10 ms
    # (a busy loop's ticks all run late: only the steady lag's allowance is taken off).
    adj = policy().update(_paused(0.105, longest_s=0.030, lag_s=0.010))
    assert adj.limit < 17 and "latency p50" in adj.reason
    # And overload always cuts, whatever the client's loop did.
    w = dataclasses.replace(_paused(0.085, longest_s=0.030), overload=3, count=43)
    assert policy().update(w).limit < 17


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ServerUpstream(workers=0, service_time_s=0.1), "workers"),
        (lambda: ServerUpstream(workers=1, service_time_s=0.0), "service_time_s"),
        (lambda: ServerUpstream(workers=1, service_time_s=0.1, stall_s=(0.2, 0.1)), "stall_s"),
        (lambda: ConnectionWall(ServerUpstream(workers=1, service_time_s=0.1), max_connections=0), "max_"),
        (
            lambda: TokenBucketUpstream(ServerUpstream(workers=1, service_time_s=0.1), rate_per_s=0, burst=1),
            "rate",
        ),
        (lambda: LatencyAIMD(lag_allowance=-1.0), "lag_allowance"),
        (lambda: LatencyAIMD(queue_allowance=-0.5), "queue_allowance"),
        (lambda: LatencyAIMD(pause_allowance=-0.5), "pause_allowance"),
        (lambda: WindowConfig(lag_probe_period_s=0.0), "lag_probe_period_s"),
    ],
)
def test_bad_settings_are_refused(make: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()  # type: ignore[operator]
