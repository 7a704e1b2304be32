"""asyncio helpers every long-running loop of the daemon shares."""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; True if it was set.

    Not ``asyncio.wait_for(event.wait(), timeout)``: before Python 3.12 that swallows a
    cancellation arriving just as the event is set (CPython gh-86296), and a loop around it
    then runs on after ``task.cancel()``, so whoever awaits the task (a stage's ``stop()``)
    waits for ever. ``asyncio.wait`` never swallows one.
    """
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        done, _ = await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()
    return bool(done)
