"""Issue #17, CPU under a real attack: a trickle of lines shares transactions.

bench/attack measures the CPU; these hold what the saving must not cost. Real SQLite
stores, real files; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC
from pathlib import Path

from sshmonitord import config
from sshmonitord.detect.engine import Engine, History
from sshmonitord.events import FilePosition, Line
from sshmonitord.pipeline import STORE_DELAY, Pipeline
from sshmonitord.store import Store

FAIL = "Nov 24 12:00:{s:02d} web1 sshd[{pid}]: Failed password for root from {ip} port 4000 ssh2"


def _line(i: int) -> Line:
    text = FAIL.format(s=i % 60, pid=100 + i, ip=f"203.0.113.{i % 200 + 1}")
    return Line(text=text, source="file", position=FilePosition("/x", 1, 2, "1024:ab", 100 * i))


def _stored(s: Store) -> tuple[int, int]:
    events = s.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    off = s.conn.execute("SELECT MAX(offset) FROM file_positions").fetchone()[0] or 0
    return int(events), int(off)


async def _until(pred: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def test_a_trickle_shares_one_transaction_within_the_delay(tmp_path: Path) -> None:
    async def go() -> None:
        s = Store(tmp_path)
        await asyncio.to_thread(s.open)
        p = Pipeline(s)
        await p.start()
        t0 = time.monotonic()
        for i in range(1, 6):  # five one-line batches, each handled before the next comes
            await p.emit([_line(i)])
            assert await _until(lambda i=i: p.lines == i, 2)
            await asyncio.sleep(0.02)
        # Handled (acted on) at once, stored together once the delay is up.
        assert p.lines == 5 and p.unstored_lines == 5
        assert _stored(s) == (0, 0)
        assert await _until(lambda: not p.unstored, STORE_DELAY + 2)
        assert time.monotonic() - t0 < STORE_DELAY + 1.0
        assert _stored(s) == (5, 500)
        assert p.store_write.count == 1  # one transaction for the five
        # The next line starts a new window; nothing held is left behind.
        await p.emit([_line(6)])
        assert await _until(lambda: p.lines == 6 and not p.unstored, STORE_DELAY + 2)
        assert _stored(s) == (6, 600) and p.store_write.count == 2
        await p.stop()
        s.close()

    asyncio.run(go())


def test_held_lines_are_stored_by_stop(tmp_path: Path) -> None:
    """The daemon's shutdown drains the pipeline: what is held is stored, not left to a
    re-read at the next start."""

    async def go() -> None:
        s = Store(tmp_path)
        await asyncio.to_thread(s.open)
        p = Pipeline(s)
        p.store_delay = 60.0  # far beyond stop()'s own bound: only stop() can store them
        await p.start()
        for i in range(1, 4):
            await p.emit([_line(i)])
        assert await _until(lambda: p.lines == 3, 2)
        assert _stored(s) == (0, 0) and p.unstored_lines == 3
        t0 = time.monotonic()
        await p.stop()
        assert time.monotonic() - t0 < 2.0
        assert _stored(s) == (3, 300) and not p.unstored
        s.close()

    asyncio.run(go())


def test_without_delay_every_batch_is_stored_when_handled(tmp_path: Path) -> None:
    async def go() -> None:
        s = Store(tmp_path)
        await asyncio.to_thread(s.open)
        p = Pipeline(s)
        p.store_delay = 0.0
        await p.start()
        for i in range(1, 4):
            await p.emit([_line(i)])
            assert await _until(lambda i=i: p.lines == i and not p.unstored, 2)
            assert _stored(s) == (i, 100 * i)
        await p.stop()
        s.close()

    asyncio.run(go())


def test_a_batch_with_findings_is_stored_at_once_with_what_is_held(tmp_path: Path) -> None:
    """Its findings (and bans) are in the store by the time its alerts go out."""

    async def go() -> None:
        s = Store(tmp_path)
        await asyncio.to_thread(s.open)
        eng = Engine(config.DetectionConfig(), History(since=0.0), zone=UTC)
        p = Pipeline(s, engine=eng)
        p.store_delay = 60.0
        await p.start()
        for i in range(1, 5):  # four failures from one address: held
            text = FAIL.format(s=i, pid=100 + i, ip="203.0.113.7")
            await p.emit([Line(text, "file", FilePosition("/x", 1, 2, "1024:ab", 100 * i))])
        assert await _until(lambda: p.lines == 4, 2)
        assert _stored(s) == (0, 0) and p.findings == 0
        text = FAIL.format(s=5, pid=105, ip="203.0.113.7")
        await p.emit([Line(text, "file", FilePosition("/x", 1, 2, "1024:ab", 500))])
        assert await _until(lambda: p.lines == 5 and not p.unstored, 2)
        assert p.findings >= 1
        assert _stored(s) == (5, 500)
        assert s.conn.execute("SELECT COUNT(*) FROM findings").fetchone()[0] == p.findings
        await p.stop()
        s.close()

    asyncio.run(go())
