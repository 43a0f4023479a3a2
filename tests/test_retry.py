"""The retry policy, the retry budget and Retry-After parsing: no event loop needed."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from aiogovernor import Outcome, Retry, RetryBudget, parse_retry_after

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def test_full_jitter_draws_below_an_exponential_ceiling() -> None:
    retry = Retry(attempts=10, base_delay_s=0.5, max_delay_s=3.0, multiplier=2.0)
    rng = random.Random(7)
    ceilings = {1: 0.5, 2: 1.0, 3: 2.0, 4: 3.0, 9: 3.0}
    for attempt, ceiling in ceilings.items():
        draws = [retry.backoff_s(attempt, rng=rng) for _ in range(500)]
        assert min(draws) >= 0.0 and max(draws) <= ceiling
        # Full jitter spreads over the whole range, not just near the ceiling.
        assert min(draws) < 0.1 * ceiling and max(draws) > 0.9 * ceiling


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    retry = Retry()
    a = [retry.backoff_s(n, rng=random.Random(3)) for n in range(1, 6)]
    b = [retry.backoff_s(n, rng=random.Random(3)) for n in range(1, 6)]
    assert a == b


def test_huge_attempt_numbers_do_not_overflow() -> None:
    retry = Retry(attempts=10**6, base_delay_s=1.0, max_delay_s=5.0, multiplier=10.0)
    assert 0.0 <= retry.backoff_s(10**5, rng=random.Random(0)) <= 5.0


def test_retry_after_wins_over_backoff_and_is_capped() -> None:
    retry = Retry(max_retry_after_s=30.0, retry_after_jitter=0.0)
    rng = random.Random(0)
    assert retry.delay_s(1, rng=rng, retry_after_s=7.0) == 7.0
    assert retry.delay_s(1, rng=rng, retry_after_s=3600.0) == 30.0
    assert retry.delay_s(1, rng=rng, retry_after_s=0.0) == 0.0
    assert 0.0 <= retry.delay_s(1, rng=rng, retry_after_s=None) <= retry.base_delay_s


def test_retry_after_is_jittered_upward_only() -> None:
    retry = Retry(max_retry_after_s=30.0, retry_after_jitter=0.2)
    rng = random.Random(0)
    delays = [retry.delay_s(1, rng=rng, retry_after_s=10.0) for _ in range(200)]
    assert all(10.0 <= d <= 12.0 for d in delays)
    assert len(set(delays)) > 100  # spread, not one instant for every caller
    assert 30.0 <= retry.delay_s(1, rng=rng, retry_after_s=3600.0) <= 36.0  # capped, then jittered
    with pytest.raises(ValueError, match="retry_after_jitter"):
        Retry(retry_after_jitter=1.5)


def test_zero_base_delay_never_overflows() -> None:
    assert Retry(base_delay_s=0.0).backoff_s(10**6, rng=random.Random(0)) == 0.0


def test_should_retry_counts_attempts_and_outcomes() -> None:
    retry = Retry(attempts=3)
    assert retry.should_retry(1, Outcome.OVERLOAD)
    assert retry.should_retry(2, Outcome.OVERLOAD)
    assert not retry.should_retry(3, Outcome.OVERLOAD)
    assert not retry.should_retry(1, Outcome.ERROR)
    assert not retry.should_retry(1, Outcome.OK)
    both = Retry(retry_on=frozenset({Outcome.OVERLOAD, Outcome.ERROR}))
    assert both.should_retry(1, Outcome.ERROR)
    assert isinstance(both.retry_on, frozenset)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"attempts": 0}, "attempts"),
        ({"attempts": 2.5}, "attempts"),
        ({"base_delay_s": -1.0}, "base_delay_s"),
        ({"max_delay_s": float("inf")}, "max_delay_s"),
        ({"base_delay_s": 2.0, "max_delay_s": 1.0}, "max_delay_s"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"budget_ratio": -0.1}, "budget_ratio"),
        ({"budget_reserve": -1}, "budget_reserve"),
        ({"max_retry_after_s": -5.0}, "max_retry_after_s"),
    ],
)
def test_bad_retry_config_is_refused_by_name(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Retry(**kwargs)  # type: ignore[arg-type]


def test_retry_on_must_hold_outcomes() -> None:
    with pytest.raises(TypeError, match="retry_on"):
        Retry(retry_on="overload")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry_on"):
        Retry(retry_on={429})  # type: ignore[arg-type]


def test_retry_is_frozen() -> None:
    retry = Retry()
    with pytest.raises(AttributeError):
        retry.attempts = 5  # type: ignore[misc]


def test_budget_allows_a_fraction_of_requests_after_the_reserve() -> None:
    budget = RetryBudget(ratio=0.2, reserve=2)
    assert budget.try_spend() and budget.try_spend()
    assert not budget.try_spend()
    allowed = 0
    for _ in range(100):
        budget.record_request()
        allowed += budget.try_spend()
    assert allowed == 20
    assert (budget.requests, budget.retries, budget.refused) == (100, 22, 81)


def test_budget_saves_up_no_more_than_its_reserve() -> None:
    budget = RetryBudget(ratio=1.0, reserve=3)
    for _ in range(50):
        budget.record_request()
    assert budget.balance == 3.0
    assert [budget.try_spend() for _ in range(4)] == [True, True, True, False]


def test_budget_with_no_reserve_still_pays_out_its_ratio() -> None:
    budget = RetryBudget(ratio=0.5, reserve=0)
    assert not budget.try_spend()
    budget.record_request()
    budget.record_request()
    assert budget.try_spend()


def test_retry_makes_budgets_or_none() -> None:
    budget = Retry(budget_ratio=0.1, budget_reserve=4).new_budget()
    assert budget is not None and (budget.ratio, budget.reserve) == (0.1, 4)
    assert Retry(budget_ratio=None).new_budget() is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("  5 ", 5.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (b"30", 30.0),
        ("Wed, 01 May 2024 12:00:30 GMT", 30.0),
        ("Wednesday, 01-May-24 12:01:00 GMT", 60.0),  # RFC 850, obsolete but allowed
        ("Wed May  1 12:00:10 2024", 10.0),  # asctime
        ("Wed, 01 May 2024 11:59:00 GMT", None),  # in the past: back off instead
        ("Wed, 01 May 2024 12:00:00 GMT", None),  # now: nothing to wait for
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1e9", None),
        ("inf", None),
        ("nan", None),
        ("12 seconds", None),
        ("Wed, 99 Foo 2024 99:99:99 GMT", None),
        # RFC 9110's DIGIT is ASCII: other scripts' digits are garbage, not numbers.
        ("\u0661\u0662\u0660", None),  # Arabic-Indic 120
        ("\uff11\uff12\uff10", None),  # fullwidth 120
        ("Wed, \u0660\u0661 May 2024 12:00:30 GMT", None),
        ("+120", None),
    ],
)
def test_parse_retry_after(value: str | bytes | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_parse_retry_after_takes_naive_now_as_utc_and_defaults_to_the_wall_clock() -> None:
    assert parse_retry_after("Wed, 01 May 2024 12:00:30 GMT", now=NOW.replace(tzinfo=None)) == 30.0
    future = datetime.now(UTC) + timedelta(hours=1)
    seconds = parse_retry_after(future.strftime("%a, %d %b %Y %H:%M:%S GMT"))
    assert seconds is not None and 3500 < seconds <= 3600


def test_backoff_ceiling_is_the_growth_and_cap_that_backoff_draws_under() -> None:
    retry = Retry(base_delay_s=0.1, max_delay_s=1.0, multiplier=2.0)
    assert [retry.backoff_ceiling_s(n) for n in (1, 2, 3, 4, 5, 10**9)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    )
    rng = random.Random(3)
    for n in range(1, 8):
        assert 0.0 <= retry.backoff_s(n, rng=rng) <= retry.backoff_ceiling_s(n)
    with pytest.raises(ValueError, match="attempt"):
        retry.backoff_ceiling_s(0)
