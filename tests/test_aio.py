"""sshmonitord/aio.py: a loop waiting on an event stops when cancelled, whatever the timing."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from sshmonitord.aio import wait_event


async def _loop(ev: asyncio.Event, waiter) -> None:
    while True:
        ev.clear()
        await waiter(ev)


async def _with_wait_for(ev: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ev.wait(), 60)


async def _with_wait_event(ev: asyncio.Event) -> None:
    await wait_event(ev, 60)


def _cancel_as_it_is_set(waiter) -> bool:
    """True if the task stopped on cancel() given as the event it waits for is set."""

    async def go() -> bool:
        ev = asyncio.Event()
        task = asyncio.create_task(_loop(ev, waiter))
        await asyncio.sleep(0.01)
        ev.set()
        await asyncio.sleep(0)  # the event's waiter is now done, its wakeup not yet run
        task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(task), 1.0)
        except asyncio.CancelledError:
            return True
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 1.0)
            return False
        return task.cancelled()

    return asyncio.run(go())


def test_wait_event_never_swallows_a_cancellation():
    assert all(_cancel_as_it_is_set(_with_wait_event) for _ in range(20))


def test_wait_event_returns_whether_it_was_set():
    async def go() -> tuple[bool, bool]:
        ev = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, ev.set)
        got = await wait_event(ev, 5)
        ev.clear()
        return got, await wait_event(ev, 0.05)

    assert asyncio.run(go()) == (True, False)


@pytest.mark.skipif(
    __import__("sys").version_info >= (3, 12), reason="CPython 3.12 fixed wait_for"
)
def test_the_python_bug_it_avoids_is_real_here():
    """The reason for wait_event: on this Python, wait_for swallows this cancellation."""
    assert not all(_cancel_as_it_is_set(_with_wait_for) for _ in range(20))
