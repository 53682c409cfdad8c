"""The stop-aware sleep every load profile and stream client loops on."""

import asyncio
import time

import pytest

from dwcp.runtime.waits import sleep_unless_stopped


def test_it_sleeps_the_whole_time_unless_stopped_and_wakes_when_stopped():
    async def scenario() -> None:
        stop = asyncio.Event()
        t0 = time.monotonic()
        assert await sleep_unless_stopped(stop, 0.05) is False
        assert time.monotonic() - t0 >= 0.04
        asyncio.get_running_loop().call_later(0.02, stop.set)
        t0 = time.monotonic()
        assert await sleep_unless_stopped(stop, 30.0) is True
        assert time.monotonic() - t0 < 5.0
        assert await sleep_unless_stopped(stop, 30.0) is True  # already set: no wait
        assert await sleep_unless_stopped(asyncio.Event(), 0.0) is False

    asyncio.run(scenario())


def test_a_cancellation_arriving_as_the_event_is_set_is_not_swallowed():
    """asyncio.wait_for on 3.11 returns normally here (CPython gh-86296); the loop it sits in would go on."""

    async def scenario() -> None:
        stop = asyncio.Event()
        waiter = asyncio.create_task(sleep_unless_stopped(stop, 30.0))
        await asyncio.sleep(0.01)  # the waiter is inside stop.wait()
        stop.set()
        waiter.cancel()  # same loop step as the event
        with pytest.raises(asyncio.CancelledError):
            await waiter

    asyncio.run(scenario())
