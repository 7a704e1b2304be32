"""asyncio helpers every long-running loop of the daemon shares."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; True if it was set.

    Not ``asyncio.wait_for(event.wait(), timeout)``: before Python 3.12 that swallows a
    cancellation arriving just as the event is set (CPython gh-86296), and a loop around it
    then runs on after ``task.cancel()``, so whoever awaits the task (a stage's ``stop()``)
    waits for ever. ``asyncio.timeout`` counts its own cancellation apart from anyone
    else's (``Task.uncancel``), so it never swallows one; and unlike ``asyncio.wait`` on a
    task wrapping ``event.wait()`` it creates no task per wait. (The tailer, which waits
    once a second on an idle daemon, uses a timer setting its own event instead: no
    cancellation at all, see ``Tailer._wait``.)
    """
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def bounded(aw: Coroutine[Any, Any, T], timeout: float, name: str | None = None) -> T:
    """``await aw`` in a task of its own, for at most ``timeout`` seconds (then TimeoutError,
    and the task is cancelled).

    Not ``asyncio.wait_for``: before Python 3.12 it returns the result when a cancellation
    of the caller arrives just as ``aw`` finishes (CPython gh-86296); the alert queue's
    delivery loop then went on after ``stop()`` cancelled it, and ``stop()`` waited for it
    for ever. The task of its own keeps what wait_for's inner task kept: a library that
    cancels the task it runs in (anyio < 4, see notify/channels.py) cancels that task, not
    the caller."""
    task = asyncio.ensure_future(aw)
    if name is not None:
        task.set_name(name)
    try:
        async with asyncio.timeout(timeout):
            return await task
    finally:
        if not task.done():
            task.cancel()
