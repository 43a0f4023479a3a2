"""The map's pool: results stored in place, and workers cancelled as a task group cancels its tasks.

Results go into a list made at the input's length when it is known; a list
that grows or shrinks while it is mapped still gets one result per item pulled.
On asyncio the pool runs its workers as the loop's own tasks (no task group
wrapper around each); these pin down that cancellation still behaves as
anyio's task group did: shields inside the mapped function are honoured, a
function that swallows a cancellation is cancelled again, a native
cancellation of the caller leaks no permit, and anything that is not an
``Exception`` escaping the function comes out in a group.
"""

from __future__ import annotations

import asyncio

import anyio
import pytest

from aiogovernor import Fixed, Governor, governed_map

pytestmark = pytest.mark.anyio


async def test_a_shield_inside_the_function_is_honoured_when_the_map_is_cancelled() -> None:
    gov = Governor("t", Fixed(4), store=None)
    finished: list[int] = []

    async def fn(x: int) -> int:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(1.0)
        finished.append(x)
        await anyio.sleep(1.0)
        return x

    with anyio.move_on_after(0.5) as scope:
        await governed_map(fn, range(100), governor=gov)
    assert scope.cancelled_caught
    assert sorted(finished) == [0, 1, 2, 3]  # each shielded second ran to its end
    assert anyio.current_time() == pytest.approx(1.0)  # and nothing after it did
    assert gov.inflight == 0


async def test_a_function_that_swallows_a_cancellation_is_cancelled_again() -> None:
    gov = Governor("t", Fixed(2), store=None)
    swallowed = 0

    async def fn(x: int) -> int:
        nonlocal swallowed
        try:
            await anyio.sleep(1.0)
        except anyio.get_cancelled_exc_class():
            swallowed += 1
            await anyio.sleep(100.0)  # cancelled again: the map does not wait this out
        return x

    with anyio.move_on_after(0.5):
        await governed_map(fn, range(100), governor=gov)
    assert swallowed == 2
    assert anyio.current_time() < 1.0
    assert gov.inflight == 0


@pytest.mark.usefixtures("asyncio_only")
async def test_a_native_cancellation_of_the_caller_leaks_no_permit() -> None:
    gov = Governor("t", Fixed(4), store=None)

    async def fn(x: int) -> int:
        await asyncio.sleep(1.0)
        return x

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(governed_map(fn, range(100), governor=gov), 2.5)
    assert gov.inflight == 0


class _Stop(BaseException):
    pass


async def test_a_base_exception_from_the_function_stops_the_map_in_a_group() -> None:
    gov = Governor("t", Fixed(4), store=None)

    async def fn(x: int) -> int:
        await anyio.sleep(1.0)
        if x == 5:
            raise _Stop
        return x

    with pytest.raises(BaseExceptionGroup) as caught:
        await governed_map(fn, range(100), governor=gov)
    assert caught.group_contains(_Stop)
    assert gov.inflight == 0


async def test_a_list_that_grows_or_shrinks_while_mapped_gets_one_result_per_item_pulled() -> None:
    items = list(range(10))

    async def grow(x: int) -> int:
        await anyio.sleep(0.1)
        if x < 5:
            items.append(100 + x)
        return x

    got = await governed_map(grow, items, governor=Governor("t", Fixed(3), store=None))
    assert got == items and sorted(got) == [*range(10), *range(100, 105)]

    items = list(range(10))

    async def shrink(x: int) -> int:
        await anyio.sleep(0.1)
        if x == 2:
            del items[6:]
        return x

    got = await governed_map(shrink, items, governor=Governor("t", Fixed(3), store=None))
    assert got == items == list(range(6))


def test_a_kept_permit_is_sampled_unit_by_unit_with_its_size_and_goes_back_when_someone_waits() -> None:
    # The renewal a map's worker makes after each call: the common case records the sample in
    # line; a unit that said its size and a caller queued for a permit take the other paths.
    from aiogovernor import WindowConfig
    from aiogovernor.sim import run_virtual

    window = WindowConfig(max_samples=10**6, min_duration_s=10**6)  # no window closes here
    gov = Governor("kept", Fixed(1), store=None, window=window)
    served: list[float] = []

    async def outsider() -> None:
        await anyio.sleep(3.5)  # started before the permit was taken: its context holds none
        async with gov:
            served.append(anyio.current_time())

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(outsider)
            async with gov as permit:
                await anyio.sleep(1.0)
                assert gov._renew(permit)  # kept: one ok sample of 1 s
                permit.size = 4
                await anyio.sleep(2.0)
                assert gov._renew(permit)  # kept: its size recorded, the next unit's is 1 again
                assert permit.size == 1 and gov.inflight == 1
                await anyio.sleep(1.0)
                assert gov.waiting == 1
                assert not gov._renew(permit)  # given back, to the caller queued
                assert gov.inflight == 1  # the outsider's
        assert served == [4.0]
        assert gov._ok_latencies == [1.0, 2.0, 1.0, 0.0]
        assert gov._feedback._agg._sized == [(2.0, 4.0)]
        assert gov.inflight == 0

    run_virtual(main())
