"""A backlog's next batches are parsed and detected while the store thread commits the last
ones (issue #17, the daemon's path), and the store writes many rows per INSERT so that a
busy event loop does not stall it row by row.

What must not change: every line stored once, in stream order, with the positions after it;
transactions one at a time and in order; a failing store loses nothing; a kill -9 while a
transaction is in flight loses nothing and stores nothing twice. Real SQLite stores; the
foreign lock and the killed daemon path are other processes.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from test_store_speed import HOLD_LOCK, _finish, _lines, _settle, _small_batches, _stored

from sshmonitord import pipeline as pipeline_mod
from sshmonitord.events import Login
from sshmonitord.pipeline import Pipeline
from sshmonitord.store import INSERT_EVENT, Store, event_row
from sshmonitord.store import history as history_store
from sshmonitord.store import rows as rows_mod
from sshmonitord.store.rows import insert_rows, multi_statement

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- many rows an INSERT


def _rows(n: int) -> list[tuple[Any, ...]]:
    from sshmonitord.parse import Parser

    parser = Parser()
    out = []
    for line in _lines(n):
        ev = parser.parse_line(line)
        assert ev is not None
        out.append(event_row(ev))
    return out


def _table(s: Store, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in s.conn.execute(sql)]


@pytest.mark.parametrize(
    ("per", "n"),
    [(3, 0), (3, 1), (3, 2), (3, 3), (3, 4), (3, 6), (3, 7), (3, 10), (16, 37), (16, 21)],
)
def test_insert_rows_writes_what_executemany_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, per: int, n: int
) -> None:
    """At every chunk edge (``per`` rows a statement at most, then quarters of it): the
    same rows, values and ids."""
    monkeypatch.setattr(rows_mod, "MIN_MULTI_ROWS", 2)
    rows = _rows(n)
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    a.open()
    b.open()
    try:
        # Other rows first, so the ids continue from somewhere.
        for s in (a, b):
            with s.transaction():
                s.conn.executemany(INSERT_EVENT, _rows(5))
        b.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 14 * per + 2)
        with a.transaction():
            a.conn.executemany(INSERT_EVENT, rows)
        with b.transaction():
            insert_rows(b.conn, INSERT_EVENT, rows)
        q = "SELECT * FROM events ORDER BY id"
        assert _table(b, q) == _table(a, q)
        assert len(_table(b, q)) == 5 + n
    finally:
        a.close()
        b.close()


def test_a_bad_row_in_a_later_chunk_fails_the_whole_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rows_mod, "MIN_MULTI_ROWS", 2)
    rows = _rows(7)
    bad = list(rows[5])
    bad[3] = 2**70  # no SQLite INTEGER holds it
    rows[5] = tuple(bad)
    s = Store(tmp_path)
    s.open()
    try:
        s.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 14 * 2)
        with pytest.raises(OverflowError), s.transaction():
            insert_rows(s.conn, INSERT_EVENT, rows)
        assert _table(s, "SELECT id FROM events") == []  # the chunks before it rolled back
        # What the pipeline's salvage does next: row by row, only the bad one skipped.
        with s.transaction():
            errors = s.add_events(rows, skip_bad=True)
        assert len(errors) == 1 and len(_table(s, "SELECT id FROM events")) == 6
    finally:
        s.close()


def test_upserts_in_one_statement_apply_in_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The login history's upserts: a key repeated inside one statement and across
    statements ends as one statement a row would leave it (first_seen of the first row,
    last_seen the latest)."""
    logins = [
        Login("alice", "192.0.2.0/24", "SHA256:k1", 100.0),
        Login("alice", "192.0.2.0/24", None, 300.0),
        Login("alice", "192.0.2.0/24", "SHA256:k1", 200.0),
        Login("bob", "198.51.100.0/24", "SHA256:k2", 50.0),
        Login("alice", "192.0.2.0/24", "SHA256:k1", 250.0),
        Login("bob", "198.51.100.0/24", "SHA256:k2", 40.0),
        Login("carol", None, "SHA256:k3", 7.0),
    ]
    monkeypatch.setattr(rows_mod, "MIN_MULTI_ROWS", 2)
    one_by_one = Store(tmp_path / "a")
    chunked = Store(tmp_path / "b")
    one_by_one.open()
    chunked.open()
    try:
        with one_by_one.transaction():
            for login in logins:
                history_store.save(one_by_one.conn, [login])
        chunked.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 4 * 2)  # 2 rows a statement
        with chunked.transaction():
            history_store.save(chunked.conn, logins)
        for q in (
            "SELECT * FROM login_sources ORDER BY user, prefix",
            "SELECT * FROM login_keys ORDER BY user, key_fp",
        ):
            assert _table(chunked, q) == _table(one_by_one, q)
        assert _table(chunked, "SELECT first_seen, last_seen FROM login_sources")[0] == (
            100.0,
            300.0,
        )
    finally:
        one_by_one.close()
        chunked.close()


def test_statements_come_in_a_few_sizes(tmp_path: Path) -> None:
    """Whatever the batch sizes, the statements compiled are few (each size once)."""
    s = Store(tmp_path)
    s.open()
    sizes: set[int] = set()
    try:
        plain = s.conn

        class Counting:
            def execute(self, sql: str, params: Any = ()) -> Any:
                sizes.add(sql.count("(?"))
                return plain.execute(sql, params)

            def executemany(self, sql: str, rows: Any) -> Any:
                sizes.add(1)
                return plain.executemany(sql, rows)

            def getlimit(self, what: int) -> int:
                return plain.getlimit(what)

        rows = _rows(3000)
        with s.transaction():
            for n in range(2, 3000, 97):
                insert_rows(Counting(), INSERT_EVENT, rows[:n])  # type: ignore[arg-type]
        assert sizes <= {512, 128, 32, 1}, sizes
        assert {512, 128, 32} <= sizes  # the test saw every size
    finally:
        s.close()


def test_the_statement_keeps_the_clause_after_the_values() -> None:
    sql = "INSERT INTO t(a, b) VALUES (?, ?) ON CONFLICT(a) DO UPDATE SET b = max(b, excluded.b)"
    assert multi_statement(sql, 3) == (
        "INSERT INTO t(a, b) VALUES (?, ?),(?, ?),(?, ?) "
        "ON CONFLICT(a) DO UPDATE SET b = max(b, excluded.b)"
    )


# ---------------------------------------------------------------------- overlapped commits


class Gate:
    """Holds the store thread at the start of each transaction until let through, and
    records the order of the transactions' starts and ends."""

    def __init__(self, p: Pipeline) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()
        self.log: list[tuple[str, int]] = []
        self.calls = 0
        plain = p._commit_group

        def gated(conn: Any, group: list[Any]) -> None:
            self.calls += 1
            self.entered.set()
            self.go.wait(10)
            last = max(pos.offset for b in group for pos in b.files.values())
            self.log.append(("begin", last))
            try:
                plain(conn, group)
            finally:
                self.log.append(("end", last))

        p._commit_group = gated  # type: ignore[method-assign]


async def _until(cond: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


def test_the_next_batches_are_handled_while_a_group_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _small_batches(monkeypatch)  # 2-line batches, 6 lines a transaction

    default_switch = sys.getswitchinterval()

    async def go() -> tuple[int, list[tuple[str, int]], list[str], int]:
        s = Store(tmp_path)
        await asyncio.to_thread(s.open)
        p = Pipeline(s)
        gate = Gate(p)
        for i in range(0, 18, 2):
            await p.emit(_lines(2, i))  # a backlog
        await p.start()
        await asyncio.to_thread(gate.entered.wait, 10)
        # The first transaction (lines 0-5) is held on the store thread: the next batches
        # are handled (acted on) meanwhile, up to the next group, which waits its turn.
        await _until(lambda: p.lines >= 12)
        await asyncio.sleep(0.2)
        handled_while_held = p.lines
        switch_while_held = sys.getswitchinterval()
        gate.go.set()
        await _settle(p, 18)
        assert sys.getswitchinterval() == default_switch  # given back with the last one
        assert switch_while_held == pipeline_mod.OVERLAP_SWITCH_INTERVAL
        users, off = _stored(s)
        await p.stop()
        await asyncio.to_thread(s.close)
        return handled_while_held, gate.log, users, off

    handled, log, users, off = asyncio.run(go())
    assert handled == 12, handled  # not 6: handling went on; not 18: one group ahead at most
    # One transaction at a time, in stream order.
    assert [x for x, _ in log] == ["begin", "end"] * (len(log) // 2)
    assert [o for x, o in log if x == "end"] == sorted(o for x, o in log if x == "end")
    assert users == [f"u{i}" for i in range(18)] and off == 1800


def test_a_lock_taken_while_a_group_is_in_flight_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process takes the write lock after the transaction went to the store thread
    and before it began: it fails there, the batches handled behind it are held, and once
    the lock is gone every line is stored once, in order."""
    _small_batches(monkeypatch)
    monkeypatch.setattr(pipeline_mod, "STORE_RETRY_MIN", 0.05)

    async def go() -> tuple[int, list[str], int]:
        s = Store(tmp_path)
        await asyncio.to_thread(s.open)
        p = Pipeline(s)
        gate = Gate(p)
        for i in range(0, 18, 2):
            await p.emit(_lines(2, i))
        await p.start()
        await asyncio.to_thread(gate.entered.wait, 10)
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(s.path), "30"], stdout=subprocess.PIPE, text=True
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "locked"
            gate.go.set()
            await _until(lambda: p.lines == 18 and p.commit_failures >= 1)
            assert _stored(s) == ([], 0)
        finally:
            holder.kill()
            holder.wait()
        users, off = await _finish(p, s, 18)
        return p.commit_failures, users, off

    default_switch = sys.getswitchinterval()
    failures, users, off = asyncio.run(go())
    assert sys.getswitchinterval() == default_switch  # given back after the failure too
    assert failures >= 1
    assert users == [f"u{i}" for i in range(18)] and off == 1800


# A daemon path (Tailer -> Pipeline -> Store) over a backlog file, resuming from the stored
# positions as the daemon does. It prints IN-FLIGHT once a transaction is on the store thread
# while later batches have been handled: the moment a kill -9 hurts most.
CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from sshmonitord import pipeline as pm
    from sshmonitord.pipeline import Pipeline
    from sshmonitord.sources.tailer import Tailer
    from sshmonitord.store import Store

    pm.MAX_BATCH_LINES = 200
    pm.GROUP_COMMIT_LINES = 1000
    path, state, total = sys.argv[1], sys.argv[2], int(sys.argv[3])

    async def main():
        s = Store(state)
        await asyncio.to_thread(s.open)
        positions = await s.run(lambda _c: s.load_file_positions())
        done_at = max((q.offset for qs in positions.values() for q in qs), default=0)
        with open(path, "rb") as fh:
            todo = total - fh.read(done_at).count(b"\\n")  # the lines not stored yet
        p = Pipeline(s)
        plain = p._commit_group

        def slow(conn, group):  # a slow disk: the kill lands inside the overlap
            time.sleep(0.05)
            plain(conn, group)

        p._commit_group = slow
        await p.start()
        t = Tailer([path], p.emit, positions, start_at="beginning", poll_interval=0.2,
                   max_line_length=16384, use_inotify=False, each_position=False)
        await t.start()
        said = False
        while True:
            if not said and p._inflight is not None and p.lines > p._inflight_lines:
                print("IN-FLIGHT", p.lines, flush=True)
                said = True
            if p.lines >= todo and not p.unstored and p.queue.empty():
                break
            await asyncio.sleep(0.002)
        await t.stop()
        await p.stop()
        await asyncio.to_thread(s.close)
        print("DONE", flush=True)

    asyncio.run(main())
    """
)


def _readline(child: subprocess.Popen[str], timeout: float) -> str:
    """The child's next line of output, or "" once it ended or ``timeout`` passed (then it
    is killed: a hung child must fail the test, not hang it)."""
    assert child.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(child.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            child.kill()
            return ""
    return child.stdout.readline()


def test_kill_9_while_a_group_is_in_flight_loses_nothing_and_stores_nothing_twice(
    tmp_path: Path,
) -> None:
    total = 6000
    log = tmp_path / "auth.log"
    log.write_text("".join(line.text + "\n" for line in _lines(total)))
    state = tmp_path / "state"
    state.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    kills = 0
    for _ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(log), str(state), str(total)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        first = _readline(child, 60)
        if first.startswith("IN-FLIGHT"):
            child.send_signal(signal.SIGKILL)
            kills += 1
        child.wait(60)
        if first.startswith("DONE"):
            break
    assert kills >= 1  # the kill landed inside the overlap at least once
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(log), str(state), str(total)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert child.stdout.strip().endswith("DONE"), child.stderr[-2000:]
    conn = sqlite3.connect(state / "sshmonitor.db")
    try:
        users = [r[0] for r in conn.execute("SELECT user FROM events ORDER BY id")]
        off = conn.execute("SELECT MAX(offset) FROM file_positions").fetchone()[0]
    finally:
        conn.close()
    assert users == [f"u{i}" for i in range(total)]  # each line once, in order
    assert off == log.stat().st_size
