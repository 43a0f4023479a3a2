"""The one attempt loop: permit, call, classify, Retry-After, release, backoff (in virtual time)."""

from __future__ import annotations

import random
from typing import Any

import anyio
import pytest

from aiogovernor import Fixed, Governor, Outcome, OverloadError, Retry, RetryBudget
from aiogovernor._attempt import Attempts, Gate, retry_after_of
from aiogovernor._governor import Permit
from aiogovernor._permit import PermitMarks

pytestmark = pytest.mark.anyio


class Script:
    """A call that plays a script: an exception is raised, anything else returned."""

    def __init__(self, *steps: object) -> None:
        self.steps = list(steps)
        self.times: list[float] = []
        self.attempts: list[int] = []
        self.inflight: list[int] = []

    async def __call__(self, permit: Permit, attempt: int) -> Any:
        self.times.append(anyio.current_time())
        self.attempts.append(attempt)
        self.inflight.append(permit.governor.inflight)
        step = self.steps.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step


class Valued(Attempts[str]):
    """Values name their outcome: "busy:<seconds>" is an overload with a Retry-After."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kept: list[tuple[str, Outcome]] = []
        self.closed: list[tuple[str, bool]] = []

    def classify(self, governor: Gate, result: str | BaseException) -> Outcome:
        if isinstance(result, str):
            return Outcome.OVERLOAD if result.startswith("busy") else Outcome.OK
        return super().classify(governor, result)

    def retry_after_s(self, result: str | BaseException) -> float | None:
        if isinstance(result, str) and ":" in result:
            return float(result.split(":")[1])
        return super().retry_after_s(result)

    def keep(self, value: str, permit: PermitMarks, outcome: Outcome) -> None:
        self.kept.append((value, outcome))
        super().keep(value, permit, outcome)

    async def close(self, value: str, *, drain: bool) -> None:
        self.closed.append((value, drain))


async def test_each_attempt_takes_its_own_permit_and_backs_off_holding_none() -> None:
    gov = Governor("t", Fixed(1))
    retry = Retry(attempts=3, base_delay_s=1.0, max_delay_s=1.0, multiplier=1.0)
    call = Script(OverloadError(), OverloadError(), "done")
    loop: Attempts[str] = Attempts(retry=retry, rng=random.Random(7))
    assert await loop.run(gov, call) == "done"
    assert call.attempts == [1, 2, 3] and call.inflight == [1, 1, 1]
    rng = random.Random(7)
    expected = [retry.backoff_s(n, rng=rng) for n in (1, 2)]
    assert [b - a for a, b in zip(call.times, call.times[1:], strict=False)] == pytest.approx(expected)
    assert gov.inflight == 0
    assert gov.stats().counts == {"ok": 1, "overload": 2, "error": 0, "ignored": 0}


async def test_a_retry_after_pauses_the_governor_for_exactly_the_wait() -> None:
    gov = Governor("t", Fixed(4))
    retry = Retry(attempts=2, max_retry_after_s=5.0, retry_after_jitter=0.1)
    loop = Valued(retry=retry, rng=random.Random(1))
    call = Script("busy:30", "fine")
    started = anyio.current_time()
    assert await loop.run(gov, call) == "fine"
    waited = call.times[1] - call.times[0]
    assert 5.0 <= waited <= 5.5  # capped by the policy, then jittered upward
    # One draw: the pause ended when the retry went (it did not wait for a second one).
    assert gov.paused_for_s() == 0.0 and call.times[1] - started == pytest.approx(waited)
    assert loop.closed == [("busy:30", True)]  # drained with the permit held, before the retry
    assert loop.kept == [("fine", Outcome.OK)]


async def test_without_a_retry_policy_a_retry_after_still_pauses_capped_and_jittered() -> None:
    gov = Governor("t", Fixed(4))
    loop = Valued(rng=random.Random(2))
    assert await loop.run(gov, Script("busy:3600")) == "busy:3600"
    assert 60.0 <= gov.paused_for_s() <= 66.0  # Retry's default cap and jitter
    assert loop.kept == [("busy:3600", Outcome.OVERLOAD)]
    assert gov.inflight == 0


async def test_once_makes_one_attempt_and_still_counts_the_request() -> None:
    gov = Governor("t", Fixed(4))
    budget = RetryBudget(ratio=0.5, reserve=1)
    loop = Valued(retry=Retry(attempts=5), budget=budget)
    assert await loop.run(gov, Script("busy"), once=True) == "busy"
    assert budget.requests == 1 and budget.retries == 0
    await loop.run(gov, Script("busy", "ok"), counted=True)
    assert budget.requests == 1 and budget.retries == 1


async def test_the_budget_is_charged_last() -> None:
    gov = Governor("t", Fixed(4))
    budget = RetryBudget(ratio=0.0, reserve=1)
    loop: Attempts[str] = Attempts(retry=Retry(attempts=3), budget=budget)
    with pytest.raises(ValueError, match="plain"):
        await loop.run(gov, Script(ValueError("plain")))  # an error the policy does not retry
    assert (budget.retries, budget.refused) == (0, 0)
    with pytest.raises(OverloadError):
        await loop.run(gov, Script(OverloadError(), OverloadError(), "never"))
    assert (budget.retries, budget.refused) == (1, 1)
    assert gov.inflight == 0


async def test_a_permit_given_is_used_for_the_first_attempt() -> None:
    gov = Governor("t", Fixed(1))
    permit = await gov.acquire()
    loop: Attempts[str] = Attempts()
    assert await loop.run(gov, Script("x"), permit=permit) == "x"
    assert permit.released and gov.inflight == 0


async def test_cancellation_releases_the_permit_and_is_never_retried() -> None:
    gov = Governor("t", Fixed(1))
    loop: Attempts[None] = Attempts(retry=Retry(attempts=5, retry_on=frozenset(Outcome)))

    async def hang(permit: Permit, attempt: int) -> None:
        await anyio.sleep_forever()

    with anyio.move_on_after(1.0):
        await loop.run(gov, hang)
    assert gov.inflight == 0 and gov.stats().counts["ignored"] == 1


async def test_a_failing_hook_never_leaks_the_permit() -> None:
    class Broken(Attempts[str]):
        def classify(self, governor: Gate, result: str | BaseException) -> Outcome:
            raise RuntimeError("broken hook")

    gov = Governor("t", Fixed(1))
    with pytest.raises(RuntimeError, match="broken hook"):
        await Broken().run(gov, Script("x"))
    with pytest.raises(RuntimeError, match="broken hook"):
        await Broken().run(gov, Script(ValueError("work")))
    assert gov.inflight == 0


async def test_sample_softens_what_the_governor_records_not_the_pause_or_the_retry() -> None:
    class Debounced(Valued):
        def sample(self, governor: Governor, result: str | BaseException, outcome: Outcome) -> Outcome:
            # Only the first overload counts: the later ones are the same congestion event.
            if outcome is Outcome.OVERLOAD and governor.stats().counts["overload"]:
                return Outcome.IGNORED
            return outcome

    gov = Governor("t", Fixed(4))
    retry = Retry(attempts=3, max_retry_after_s=1.0, retry_after_jitter=0.0)
    call = Script("busy:1", "busy:1", "fine")
    assert await Debounced(retry=retry).run(gov, call) == "fine"
    assert call.times[2] - call.times[0] == pytest.approx(2.0)  # both overloads paused and were retried
    assert gov.stats().counts == {"ok": 1, "overload": 1, "error": 0, "ignored": 1}


async def test_permit_outcome_records_what_the_call_set_on_its_permit() -> None:
    async def marks(permit: Permit, attempt: int) -> str:
        if attempt == 1:
            permit.error()  # the call's own verdict on a failure it raises
            raise OverloadError()
        permit.overload()  # a 429 on the way, though the work succeeded
        return "done"

    class Own(Attempts[str]):
        permit_outcome = True

    retry = Retry(attempts=2, base_delay_s=0.0, max_delay_s=0.0)
    gov = Governor("t", Fixed(1))
    assert await Own(retry=retry).run(gov, marks) == "done"  # the classified overload still retried
    assert gov.stats().counts == {"ok": 0, "overload": 1, "error": 1, "ignored": 0}
    # By default the classified (sampled) outcome is recorded, whatever the call set.
    gov = Governor("t", Fixed(1))
    assert await Attempts[str](retry=retry).run(gov, marks) == "done"
    assert gov.stats().counts == {"ok": 1, "overload": 1, "error": 0, "ignored": 0}


async def test_choose_picks_each_attempts_governor_before_its_permit() -> None:
    first, second = Governor("a", Fixed(1)), Governor("b", Fixed(1))

    class Failover(Attempts[str]):
        async def choose(self, governor: Governor, attempt: int) -> Governor:
            return first if attempt == 1 else second

    call = Script(OverloadError(), "done")
    retry = Retry(attempts=2, base_delay_s=0.0, max_delay_s=0.0)
    assert await Failover(retry=retry).run(first, call) == "done"
    assert first.stats().counts["overload"] == 1 and second.stats().counts["ok"] == 1


async def test_acquire_can_bound_the_wait_for_a_permit() -> None:
    class Deadline(Attempts[str]):
        async def acquire(self, governor: Governor) -> Permit:
            return await governor.acquire(timeout_s=0.5)

    gov = Governor("t", Fixed(1))
    held = await gov.acquire()
    with pytest.raises(TimeoutError):
        await Deadline().run(gov, Script("never"))
    held.release()
    assert await Deadline().run(gov, Script("x")) == "x"
    assert gov.inflight == 0


def test_retry_after_of_reads_usable_numbers_only() -> None:
    assert retry_after_of(OverloadError(retry_after_s=2)) == 2.0
    assert retry_after_of(OverloadError()) is None
    for bad in (True, -1, float("nan"), float("inf"), "5"):
        exc = RuntimeError()
        exc.retry_after_s = bad  # type: ignore[attr-defined]
        assert retry_after_of(exc) is None
