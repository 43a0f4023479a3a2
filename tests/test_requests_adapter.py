"""The requests adapter against the local upstream: one permit per request, held until the body is done."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import requests

from aiogovernor import Fixed, Outcome, Retry, sync
from aiogovernor.requests import GovernedAdapter, classify_requests
from aiogovernor.testing.servers import LocalUpstream, UpstreamConfig


@pytest.fixture(scope="module")
def upstream() -> Iterator[LocalUpstream]:
    with LocalUpstream(UpstreamConfig(capacity=8, service_time_s=0.0, seed=3)) as up:
        yield up


@pytest.fixture
def reset(upstream: LocalUpstream) -> Iterator[LocalUpstream]:
    yield upstream
    upstream.config.max_inflight = None
    upstream.config.failure_rate = 0.0
    upstream.config.service_time_s = 0.0
    upstream.config.retry_after = "1"


def session(gov: sync.Governor, **kwargs: object) -> requests.Session:
    s = requests.Session()
    s.mount("http://", GovernedAdapter(gov, **kwargs))  # type: ignore[arg-type]
    return s


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.OK),
        (302, Outcome.OK),
        (404, Outcome.IGNORED),
        (429, Outcome.OVERLOAD),
        (500, Outcome.ERROR),
        (503, Outcome.OVERLOAD),
    ],
)
def test_status_classification_is_the_shared_one(status: int, outcome: Outcome) -> None:
    r = requests.Response()
    r.status_code = status
    assert classify_requests(r) is outcome
    assert classify_requests(requests.ReadTimeout()) is Outcome.OVERLOAD
    assert classify_requests(ValueError()) is Outcome.ERROR


def test_a_request_takes_and_returns_one_permit(reset: LocalUpstream) -> None:
    gov = sync.Governor("r", Fixed(4), store=None)
    r = session(gov).get(f"{reset.url}/work")
    assert (r.status_code, r.text) == (200, "ok")
    assert gov.inflight == 0
    assert gov.stats().counts["ok"] == 1


def test_a_streamed_response_holds_its_permit_until_read_or_closed(reset: LocalUpstream) -> None:
    gov = sync.Governor("r", Fixed(4), store=None)
    s = session(gov)
    r = s.get(f"{reset.url}/work", stream=True)
    assert gov.inflight == 1
    assert r.text == "ok"
    assert gov.inflight == 0
    r = s.get(f"{reset.url}/work", stream=True)
    r.close()
    assert gov.inflight == 0
    r = s.get(f"{reset.url}/work", stream=True)
    assert gov.inflight == 1
    del r
    gc.collect()
    assert gov.inflight == 0  # dropped unread: given back when collected


def test_429_is_overload_and_its_retry_after_pauses(reset: LocalUpstream) -> None:
    reset.config.max_inflight = 0
    reset.config.retry_after = "30"
    gov = sync.Governor("r", Fixed(4), store=None, max_pause_s=60)
    r = session(gov).get(f"{reset.url}/work")
    assert r.status_code == 429
    assert gov.stats().counts["overload"] == 1
    assert 25 < gov.paused_for_s() <= 30 * 1.1


def test_a_500_is_an_error_not_overload(reset: LocalUpstream) -> None:
    reset.config.failure_rate = 1.0
    gov = sync.Governor("r", Fixed(4), store=None)
    assert session(gov).get(f"{reset.url}/work").status_code == 500
    assert dict(gov.stats().counts) == {"ok": 0, "overload": 0, "error": 1, "ignored": 0}


def test_a_timeout_is_overload_and_the_permit_comes_back(reset: LocalUpstream) -> None:
    reset.config.service_time_s = 1.0
    gov = sync.Governor("r", Fixed(4), store=None)
    with pytest.raises(requests.ReadTimeout):
        session(gov).get(f"{reset.url}/work", timeout=0.05)
    assert gov.inflight == 0
    assert gov.stats().counts["overload"] == 1


def test_retry_sends_again_after_the_retry_after(reset: LocalUpstream) -> None:
    reset.config.max_inflight = 0
    reset.config.retry_after = "0"
    gov = sync.Governor("r", Fixed(4), store=None)
    r = session(gov, retry=Retry(attempts=3, base_delay_s=0.0)).get(f"{reset.url}/work")
    assert r.status_code == 429  # every attempt refused: the last response is returned
    assert gov.stats().counts["overload"] == 3
    assert gov.inflight == 0


def test_many_threads_share_one_session() -> None:
    gov = sync.Governor("r", Fixed(3), store=None)
    s = session(gov)
    with LocalUpstream(UpstreamConfig(capacity=8, service_time_s=0.002)) as own:
        codes = sync.governed_map(
            lambda i: s.get(f"{own.url}/work").status_code,
            range(60),
            governor=sync.Governor("m", Fixed(8), store=None),
        )
        assert codes == [200] * 60
        assert own.state.peak_inflight <= 3  # the adapter's gate, not the map's, bounds the upstream
    assert gov.inflight == 0
    assert gov.stats().counts["ok"] == 60


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match=r"sync\.Governor"):
        GovernedAdapter(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="classify"):
        GovernedAdapter(sync.Governor("r", store=None), classify=1)  # type: ignore[arg-type]
