"""Attacks found in review of #11 (each failed on the code at 386665e).

Real SQLite stores, real files; nothing is mocked."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC
from pathlib import Path

from test_alert_queue import Recorder, cfg, finding

from sshmonitord import config
from sshmonitord.daemon import shutdown_order
from sshmonitord.detect.engine import Engine, History
from sshmonitord.events import FilePosition, Line
from sshmonitord.notify.queue import AlertQueue
from sshmonitord.pipeline import Pipeline
from sshmonitord.sources.tailer import FileFollower
from sshmonitord.store import Store

FAIL = "Nov 24 12:00:{s:02d} web1 sshd[{pid}]: Failed password for root from {ip} port 4000 ssh2"


def _line(text: str, off: int) -> Line:
    return Line(text=text, source="file", position=FilePosition("/x", 1, 2, "1024:ab", off))



async def _settled(p: Pipeline, lines: int, timeout: float = 5.0) -> None:
    """Until the pipeline has handled ``lines`` lines and holds nothing unstored."""
    deadline = time.monotonic() + timeout
    while (p.unstored or not p.queue.empty() or p.lines < lines) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)

def test_one_forged_line_must_not_stall_the_store_forever(tmp_path: Path) -> None:
    """File mode: `logger -t sshd 'message repeated 99999999999999999999 times: [ ...]'` makes
    a count SQLite cannot hold; the batch is retried forever and every later one waits."""

    async def go() -> tuple[int, int]:
        s = Store(tmp_path)
        await asyncio.to_thread(s.open)
        p = Pipeline(s, max_unstored_lines=5)
        await p.start()
        bad = (
            "Nov 24 12:00:00 web1 sshd[7]: message repeated 99999999999999999999 times: "
            "[ Failed password for root from 203.0.113.5 port 4000 ssh2]"
        )
        await p.emit([_line(bad, 100)])
        for i in range(1, 10):
            await p.emit([_line(FAIL.format(s=i, pid=9, ip="203.0.113.9"), 100 + i * 100)])
        await _settled(p, lines=10)
        stored = s.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        off = s.conn.execute("SELECT MAX(offset) FROM file_positions").fetchone()[0] or 0
        p._task.cancel()  # type: ignore[union-attr]
        return stored, off

    stored, off = asyncio.run(go())
    assert off == 1000, "positions stuck before the forged line: the monitor is silenced"
    assert stored >= 9


def test_findings_made_while_draining_at_shutdown_reach_the_spool(tmp_path: Path) -> None:
    """daemon._shutdown stops stages in reverse order: alerts before the pipeline drains. A
    finding made in that drain stays in the inbox, while its lines' positions are stored."""

    async def go() -> tuple[int, int]:
        s = Store(tmp_path)
        await asyncio.to_thread(s.open)
        q = AlertQueue(s, cfg(digest_window=config.Duration(3600)), [Recorder()], "web1")
        await q.start()
        eng = Engine(config.DetectionConfig(), History(since=0.0), zone=UTC)
        p = Pipeline(s, engine=eng, on_findings=q.submit)
        off = 0
        for ip in range(1, 4):
            batch = []
            for i in range(8):
                off += 100
                batch.append(_line(FAIL.format(s=i, pid=100 + i, ip=f"203.0.113.{ip}"), off))
            await p.emit(batch)
        await p.start()
        stages = [p, q]  # in the order the daemon starts them (sources would follow)
        for stage in shutdown_order(stages, [p, q]):
            await stage.stop()
        f = s.conn.execute("SELECT COUNT(*) FROM findings").fetchone()[0]
        a = s.conn.execute("SELECT COUNT(*) FROM alert_spool").fetchone()[0]
        return f, a

    findings, spooled = asyncio.run(go())
    assert findings == 3
    assert spooled == findings, "stored findings whose alerts were never spooled: lost"


def test_stop_does_not_spool_the_batch_in_flight_a_second_time(tmp_path: Path) -> None:
    async def go() -> int:
        s = Store(tmp_path)
        await asyncio.to_thread(s.open)
        q = AlertQueue(s, cfg(digest_window=config.Duration(3600)), [Recorder()], "web1")
        await q.start()
        busy = asyncio.ensure_future(s.run(lambda _c: time.sleep(0.3)))  # a long commit
        await asyncio.sleep(0.01)
        await q.submit([finding()])
        await asyncio.sleep(0.01)  # the intake holds it; its write waits for the store
        await q.stop()
        await busy
        return int(s.conn.execute("SELECT COUNT(*) FROM alert_spool").fetchone()[0])

    assert asyncio.run(go()) == 1


def test_a_symlink_named_like_a_generation_is_not_read(tmp_path: Path) -> None:
    logdir, other = tmp_path / "log", tmp_path / "elsewhere"
    logdir.mkdir()
    other.mkdir()
    foreign = other / "foreign.txt"
    foreign.write_text("NOT-A-LOG-OF-OURS\n")
    log = logdir / "auth.log"
    log.write_text("Nov 24 12:00:01 h sshd[2]: Server listening on :: port 22.\n")
    os.symlink(foreign, f"{log}.1")
    gone = FilePosition(str(log), 1, 999_999, "60:" + "0" * 24, 60)  # deleted while stopped
    f = FileFollower(str(log), saved_times={(str(log), 1, 999_999): time.time() - 100})
    f.resume([gone])
    out = [x for _ in range(5) for x in f.poll()]
    f.close()
    assert "NOT-A-LOG-OF-OURS" not in [x.text for x in out if isinstance(x, Line)]


def test_a_value_no_column_takes_does_not_stall_the_batches_behind_it(tmp_path: Path) -> None:
    """Whatever slips past the parser's bounds: a batch whose data can never be written is
    stored as positions (and bans) only, and the batches behind it go on."""
    from sshmonitord.parse import Parser

    class Poisoning(Parser):
        def parse_line(self, line):  # type: ignore[no-untyped-def]
            ev = super().parse_line(line)
            if ev is not None and "203.0.113.66" in line.text:
                ev.pid = 2**70  # no SQLite INTEGER holds it
            return ev

    async def go() -> tuple[int, int, int]:
        s = Store(tmp_path)
        await asyncio.to_thread(s.open)
        p = Pipeline(s, parser=Poisoning(), max_unstored_lines=5)
        await p.start()
        await p.emit([_line(FAIL.format(s=0, pid=7, ip="203.0.113.66"), 100)])
        for i in range(1, 10):
            await p.emit([_line(FAIL.format(s=i, pid=9, ip="203.0.113.9"), 100 + i * 100)])
        await _settled(p, lines=10)
        stored = s.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        off = s.conn.execute("SELECT MAX(offset) FROM file_positions").fetchone()[0] or 0
        p._task.cancel()  # type: ignore[union-attr]
        return stored, off, p.unstorable_rows

    stored, off, unstorable = asyncio.run(go())
    assert off == 1000 and unstorable == 1
    assert stored == 9  # every other line, in the same batch or behind it
