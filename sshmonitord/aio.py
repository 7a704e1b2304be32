"""asyncio helpers every long-running loop of the daemon shares."""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; True if it was set.

    Not ``asyncio.wait_for(event.wait(), timeout)``: before Python 3.12 that swallows a
    cancellation arriving just as the event is set (CPython gh-86296), and a loop around it
    then runs on after ``task.cancel()``, so whoever awaits the task (a stage's ``stop()``)
    waits for ever. ``asyncio.timeout`` counts its own cancellation apart from anyone
    else's (``Task.uncancel``), so it never swallows one; and unlike ``asyncio.wait`` on a
    task wrapping ``event.wait()`` it creates no task per wait — the tailer's stat() timer
    runs this several times a second, with or without lines to read.
    """
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
