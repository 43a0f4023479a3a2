"""A Hypothesis state machine over the gate: random acquires, releases, cancellations, timeouts, resizes.

Invariants: a grant never takes inflight past the limit (only a shrink can leave
it above, while draining); min <= limit <= max; inflight equals the permits
held; grants follow arrival order; nothing leaks once every task is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from aiogovernor import AIMD, Governor, Outcome, Permit, WindowConfig
from aiogovernor.sim import VirtualTimeEventLoop


class GateMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = VirtualTimeEventLoop()
        self.gov = Governor(
            "machine",
            AIMD(initial_limit=3, min_limit=1, max_limit=6),
            window=WindowConfig(min_samples=2, min_duration_s=0.0, latency_multiple=0.0),
        )
        self.next_id = 0
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.held: dict[int, Permit] = {}
        self.granted_order: list[int] = []
        self.violations: list[str] = []

    def in_loop(self, action: Callable[[], None]) -> None:
        async def run() -> None:
            action()

        self.loop.run_until_complete(run())

    def settle(self) -> None:
        for _ in range(5):
            self.loop.run_until_complete(asyncio.sleep(0))

    async def _acquire(self, ident: int, timeout_s: float | None) -> None:
        permit = await self.gov.acquire(timeout_s=timeout_s)
        if self.gov.inflight > self.gov.limit:
            self.violations.append(f"grant to {ident} took inflight {self.gov.inflight} > {self.gov.limit}")
        self.granted_order.append(ident)
        self.held[ident] = permit

    @rule(timeout_s=st.none() | st.sampled_from([0.5, 2.0]))
    def arrive(self, timeout_s: float | None) -> None:
        ident = self.next_id
        self.next_id += 1
        self.tasks[ident] = self.loop.create_task(self._acquire(ident, timeout_s))
        self.settle()

    @precondition(lambda self: self.held)
    @rule(data=st.data(), outcome=st.sampled_from(list(Outcome)))
    def release(self, data: st.DataObject, outcome: Outcome) -> None:
        ident = data.draw(st.sampled_from(sorted(self.held)))
        permit = self.held.pop(ident)
        self.in_loop(lambda: permit.release(outcome))
        self.settle()

    @precondition(lambda self: any(not t.done() for t in self.tasks.values()))
    @rule(data=st.data())
    def cancel_a_waiter(self, data: st.DataObject) -> None:
        pending = sorted(i for i, t in self.tasks.items() if not t.done())
        self.tasks[data.draw(st.sampled_from(pending))].cancel()
        self.settle()

    @rule(limit=st.integers(min_value=1, max_value=6))
    def resize(self, limit: int) -> None:
        self.in_loop(lambda: self.gov.reset_limit(limit))
        self.settle()

    @rule(seconds=st.sampled_from([0.25, 1.0, 3.0]))
    def time_passes(self, seconds: float) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))
        self.settle()

    @rule(seconds=st.sampled_from([0.5, 2.0]))
    def pause(self, seconds: float) -> None:
        self.in_loop(lambda: self.gov.pause(seconds))
        self.settle()

    @invariant()
    def no_violations(self) -> None:
        assert not self.violations, self.violations

    @invariant()
    def bounds(self) -> None:
        policy = self.gov.policy
        assert policy.min_limit <= self.gov.limit <= policy.max_limit

    @invariant()
    def inflight_is_what_is_held(self) -> None:
        assert self.gov.inflight == len(self.held)

    @invariant()
    def no_block_is_open(self) -> None:
        # Every permit here is hand-held (acquire): the blocks the gate counts are none.
        assert self.gov._blocks_open() == 0

    @invariant()
    def fifo(self) -> None:
        assert self.granted_order == sorted(self.granted_order)

    @invariant()
    def waiting_is_what_is_pending(self) -> None:
        pending = sum(not t.done() for t in self.tasks.values())
        assert self.gov.waiting == pending

    def teardown(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        self.settle()
        for permit in self.held.values():
            self.in_loop(permit.release)
        assert self.gov.inflight == 0
        assert self.gov.waiting == 0
        self.loop.close()


TestGate = GateMachine.TestCase
TestGate.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


class TwoLoopGateMachine(GateMachine):
    """The same machine, but the governor outlives its event loop: a module-level governor used
    by one ``asyncio.run`` after another. Each new loop's clock starts again at zero, behind the
    old one, with a pause or a rate ceiling's schedule possibly still pending from the old one:
    none of it may hang, leak or break an invariant on the new loop."""

    def __init__(self) -> None:
        super().__init__()
        self.gov = Governor(
            "machine",
            AIMD(initial_limit=3, min_limit=1, max_limit=6),
            window=WindowConfig(min_samples=2, min_duration_s=0.0, latency_multiple=0.0),
            max_per_second=50.0,
        )

    @rule()
    def next_loop(self) -> None:
        # What asyncio.run does at its end: every task still running is cancelled (a holder's
        # finally releases its permit), then the loop closes.
        for task in self.tasks.values():
            task.cancel()
        self.settle()
        for permit in self.held.values():
            self.in_loop(permit.release)
        self.held.clear()
        self.tasks.clear()
        self.loop.close()
        self.loop = VirtualTimeEventLoop()
        # A waiter on the new loop must be served: the old loop's timers and pause are gone.
        ident = self.next_id
        self.next_id += 1
        self.tasks[ident] = self.loop.create_task(self._acquire(ident, None))
        self.loop.run_until_complete(asyncio.sleep(self.gov.policy.max_limit))  # ample, in virtual time
        assert self.tasks[ident].done(), "a waiter on a new loop was never woken"


TestGateAcrossLoops = TwoLoopGateMachine.TestCase
TestGateAcrossLoops.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
