"""An interruptible sleep for loops that run until a stop event: the load profiles, the stream clients.

`asyncio.timeout`, not `asyncio.wait_for`: on Python 3.11 `wait_for` returns the inner result when the
event is set in the same loop step as the waiting task is cancelled, swallowing the cancellation
(CPython gh-86296, fixed in 3.12), so a task told to stop could go on.
"""

from __future__ import annotations

import asyncio


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; return True as soon as `stop` is set (at once if it already is), else False."""
    if stop.is_set():
        return True
    if seconds <= 0:
        return False
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        return False
    return True
