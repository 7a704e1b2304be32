"""The pipeline's queue is bounded in lines as well as in batches (issue #17): a backlog's
hand-overs carry thousands of lines each, and 64 of them held ~440k Lines in memory.

What must hold: a source waits in emit() once the bound is reached, and goes on once the
consumer takes a batch; a batch bigger than the whole bound still gets in (no deadlock); a
source stopped while it waits leaves no count behind; every line is stored once, in order.
Real SQLite stores.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from test_store_speed import _finish, _lines, _settle

from sshmonitord.pipeline import Pipeline
from sshmonitord.store import Store


def test_a_source_waits_at_the_line_bound_and_goes_on_when_the_consumer_takes(
    tmp_path: Path,
) -> None:
    async def go() -> tuple[list[bool], int, list[str], int]:
        s = Store(tmp_path)
        await asyncio.to_thread(s.open)
        p = Pipeline(s, max_queued_lines=10)
        # Not started: nothing takes from the queue yet.
        emits = [asyncio.create_task(p.emit(_lines(4, i))) for i in range(0, 20, 4)]
        await asyncio.sleep(0.1)
        done_before = [t.done() for t in emits]
        queued = p.queued_lines
        await p.start()
        await asyncio.wait_for(asyncio.gather(*emits), 10)
        users, off = await _finish(p, s, 20)
        return done_before, queued, users, off

    done_before, queued, users, off = asyncio.run(go())
    # 0, 4, 8 lines queued when the first three came: in; at 12 the rest wait.
    assert done_before == [True, True, True, False, False]
    assert queued == 12
    assert users == [f"u{i}" for i in range(20)] and off == 2000


def test_a_batch_bigger_than_the_bound_gets_in(tmp_path: Path) -> None:
    async def go() -> tuple[bool, list[str], int]:
        s = Store(tmp_path)
        await asyncio.to_thread(s.open)
        p = Pipeline(s, max_queued_lines=10)
        big = asyncio.create_task(p.emit(_lines(25)))
        await asyncio.sleep(0.05)
        was_in = big.done()
        await p.start()
        await big
        users, off = await _finish(p, s, 25)
        return was_in, users, off

    was_in, users, off = asyncio.run(go())
    assert was_in
    assert users == [f"u{i}" for i in range(25)] and off == 2500


def test_a_source_stopped_while_it_waits_leaves_no_count(tmp_path: Path) -> None:
    async def go() -> tuple[int, int, list[str]]:
        s = Store(tmp_path)
        await asyncio.to_thread(s.open)
        p = Pipeline(s, max_queued_lines=4)
        await p.emit(_lines(4))
        waiting = asyncio.create_task(p.emit(_lines(4, 4)))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        waiting.cancel()  # the source stops (daemon shutdown, SIGHUP rebuilding sources)
        await asyncio.gather(waiting, return_exceptions=True)
        await p.start()
        await _settle(p, 4)
        after = p.queued_lines
        # Later batches are taken as usual: the bound is free again.
        await asyncio.wait_for(p.emit(_lines(4, 8)), 5)
        await _settle(p, 8)
        users, _ = await _finish(p, s, 8)
        return after, p.queued_lines, users

    after, end, users = asyncio.run(go())
    assert after == 0 and end == 0
    assert users == [f"u{i}" for i in (*range(4), *range(8, 12))]
