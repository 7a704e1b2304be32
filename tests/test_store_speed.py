"""The daemon path's store work made cheaper (issue #17): event rows, the login history,
several handled batches in one transaction while a backlog is queued, the writer's cache and
checkpoint settings. Each holds what is stored to what it was before, faults included.

Real SQLite stores; the foreign lock is a second process.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from sshmonitord import pipeline as pipeline_mod
from sshmonitord.events import Event, FilePosition, Kind, Line, Login
from sshmonitord.pipeline import Pipeline
from sshmonitord.store import Store, connect, detail_text, event_row
from sshmonitord.store import history as history_store

FAIL = "Nov 24 12:00:{s:02d} web1 sshd[{pid}]: Failed password for {user} from {ip} port 4000 ssh2"

# Holds the write lock of a database until killed (or for argv[2] seconds).
HOLD_LOCK = """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
c.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _old_event_row(ev: Event) -> tuple[Any, ...]:
    """event_row as it was written before (json.dumps per row, str() of the kind)."""
    return (
        ev.ts.timestamp(),
        ev.host,
        ev.program,
        ev.pid,
        str(ev.kind),
        ev.user,
        None if ev.ip is None else str(ev.ip),
        ev.port,
        ev.method,
        ev.key_fp,
        ev.count,
        ev.session,
        json.dumps(ev.detail, ensure_ascii=False, default=str) if ev.detail else None,
        ev.raw,
    )


def test_event_row_is_what_it_was() -> None:
    ts = datetime(2026, 11, 24, 12, 0, 1, 123456, tzinfo=UTC)
    events = [
        Event(ts, "web1", "sshd", 7, Kind.AUTH_FAILURE, "root", ip_address("203.0.113.5"), 22),
        Event(
            ts,
            "wéb",
            "sshd",
            None,
            Kind.INVALID_USER,
            "ünïcode\u202e",
            ip_address("2001:db8::1"),
            detail={"invalid_user": True, "what": "naïve \"quoted\"\n", "n": 3, "f": -0.0},
            raw="raw \x00 line",
        ),
        # A value json cannot encode is written with str(), as before.
        Event(ts, "h", "sudo", 1, Kind.SUDO, "alice", detail={"at": ts, "x": None}),
        Event(ts, "h", "sshd", 2, Kind.AUTH_SUCCESS, "bob", key_fp="SHA256:abc", count=3,
              session="s1", detail={}),
    ]  # fmt: skip
    assert [event_row(e) for e in events] == [_old_event_row(e) for e in events]


DETAILS_OF_EVERY_SHAPE: list[dict[Any, Any]] = [
    {},
    {"preauth": True},
    {"invalid_user": True, "preauth": True, "what": "closed"},
    {"code": 11, "preauth": True, "reason": "Bye Bye"},
    # Attacker text: quotes, backslashes, controls, a line break, RTL override, non-BMP.
    {"reason": 'x" , "ip": "6.6.6.6\\\n\x00\x1b[31m\u202e\U0001f600 naïve'},
    {"code": True}, {"code": 1}, {"code": False}, {"code": 0}, {"n": 1.0},
    {"f": 0.0}, {"f": -0.0}, {"f": float("nan")}, {"f": float("inf")}, {"f": -float("inf")},
    {"f": 1e300}, {"f": 0.1}, {"big": 2**70}, {"neg": -5}, {"none": None},
    {1: "x"}, {True: "x"}, {None: "x"}, {1.5: "x"},  # json writes the keys as text
    {"a": 1, "b": 2}, {"b": 2, "a": 1},  # written in their own order
    {"keys": ["a", "b"], "nested": {"t": (1, 2), "d": {"x": [None, True]}}},
    # A value json cannot encode is written with str(), as before.
    {"at": datetime(2026, 11, 24, 12, 0, 1, tzinfo=UTC)},
    {"at": datetime(2026, 11, 24, 13, 0, 1, tzinfo=timezone(timedelta(hours=1)))},
    {"ip": ip_address("2001:db8::1"), "set": frozenset()},
]  # fmt: skip


@pytest.mark.parametrize("c_encoder", [True, False], ids=["c-encoder", "pure-python"])
def test_detail_text_is_what_json_dumps_writes(
    c_encoder: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """detail_text calls json's C encoder directly (issue #17): every detail must come out
    exactly as ``json.dumps(d, ensure_ascii=False, default=str)`` writes it, each of two
    values equal to Python (True and 1, 0.0 and -0.0, one instant in two zones) its own way,
    in any order; and so without the C accelerator."""
    from sshmonitord import store

    if not c_encoder:
        monkeypatch.setattr(store, "_c_encode_detail", None)
    else:
        assert store._c_encode_detail is not None  # CPython has it: the fast path is tested
    for d in DETAILS_OF_EVERY_SHAPE + DETAILS_OF_EVERY_SHAPE[::-1]:
        assert detail_text(d) == json.dumps(d, ensure_ascii=False, default=str), d


def test_detail_text_refuses_what_json_dumps_refuses() -> None:
    """Without the C encoder's circular-reference check, a detail that nests itself still
    raises what json.dumps raises (and the next detail is written normally)."""
    loop: dict[str, Any] = {"a": 1}
    loop["self"] = loop
    with pytest.raises(ValueError, match="Circular reference"):
        json.dumps(loop, ensure_ascii=False, default=str)
    with pytest.raises(ValueError, match="Circular reference"):
        detail_text(loop)
    deep: list[Any] = []
    cur = deep
    for _ in range(100):  # nested, not circular: written in full
        cur.append([])
        cur = cur[0]
    assert detail_text({"deep": deep}) == json.dumps({"deep": deep})
    assert detail_text({"preauth": True}) == '{"preauth": true}'


def test_history_save_keeps_first_seen_and_moves_last_seen(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.open()
    try:
        logins = [
            Login("alice", "192.0.2.0/24", "SHA256:k1", 100.0),
            Login("alice", "192.0.2.0/24", None, 300.0),
            Login("alice", "192.0.2.0/24", "SHA256:k1", 200.0),  # older: last_seen stays
            Login("bob", None, "SHA256:k2", 50.0),
        ]
        with s.transaction():
            history_store.save(s.conn, logins)
        with s.transaction():
            history_store.save(s.conn, [Login("alice", "192.0.2.0/24", "SHA256:k1", 10.0)])
        src = s.conn.execute("SELECT user, prefix, first_seen, last_seen FROM login_sources")
        keys = s.conn.execute(
            "SELECT user, key_fp, first_seen, last_seen FROM login_keys ORDER BY user"
        )
        assert [tuple(r) for r in src] == [("alice", "192.0.2.0/24", 100.0, 300.0)]
        assert [tuple(r) for r in keys] == [
            ("alice", "SHA256:k1", 100.0, 200.0),
            ("bob", "SHA256:k2", 50.0, 50.0),
        ]
        with s.transaction():
            history_store.save(s.conn, [])  # nothing to write: no statement fails
    finally:
        s.close()


def test_the_writer_keeps_a_cache_and_checkpoints_less_often(tmp_path: Path) -> None:
    conn = connect(tmp_path / "x.db")
    try:  # the big cache is a backlog's only (test_a_backlog_borrows_the_big_page_cache...)
        assert conn.execute("PRAGMA cache_size").fetchone()[0] == -2 * 1024
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] >= 4000
    finally:
        conn.close()
    ro = connect(tmp_path / "x.db", readonly=True)
    try:  # operator commands keep SQLite's defaults
        assert ro.execute("PRAGMA cache_size").fetchone()[0] == -2000
    finally:
        ro.close()


# ---------------------------------------------------------------------- group commits


def _line(text: str, off: int) -> Line:
    return Line(text=text, source="file", position=FilePosition("/x", 1, 2, "1024:ab", off))


def _lines(n: int, start: int = 0, bad: int | None = None) -> list[Line]:
    out = []
    for i in range(start, start + n):
        ip = "203.0.113.66" if i == bad else f"198.51.100.{i % 250 + 1}"
        out.append(_line(FAIL.format(s=i % 60, pid=100 + i, user=f"u{i}", ip=ip), (i + 1) * 100))
    return out


class Commits:
    """Counts the store's transactions."""

    def __init__(self, store: Store) -> None:
        self.n = 0
        plain = store.transaction

        def counted() -> Any:
            self.n += 1
            return plain()

        store.transaction = counted  # type: ignore[method-assign]


async def _settle(p: Pipeline, lines: int, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while p.unstored or not p.queue.empty() or p.lines < lines:
            await asyncio.sleep(0.02)


def _small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    # Batches of 2 lines, up to 6 lines a transaction: a backlog of a few lines shows it.
    monkeypatch.setattr(pipeline_mod, "MAX_BATCH_LINES", 2)
    monkeypatch.setattr(pipeline_mod, "GROUP_COMMIT_LINES", 6)


def _stored(s: Store) -> tuple[list[str], int]:
    users = [r[0] for r in s.conn.execute("SELECT user FROM events ORDER BY id")]
    off = s.conn.execute("SELECT MAX(offset) FROM file_positions").fetchone()[0] or 0
    return users, off


async def _finish(p: Pipeline, s: Store, lines: int) -> tuple[list[str], int]:
    """Once ``lines`` are handled and stored: what is stored; then stop and close."""
    await _settle(p, lines)
    stored = _stored(s)
    await p.stop()
    await asyncio.to_thread(s.close)
    return stored


def test_a_queued_backlog_is_stored_in_fewer_transactions_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _small_batches(monkeypatch)

    async def go() -> tuple[list[str], int, int, int]:
        s = Store(tmp_path)
        await asyncio.to_thread(s.open)
        commits = Commits(s)
        p = Pipeline(s)
        for i in range(0, 12, 2):
            await p.emit(_lines(2, i))  # queued before the consumer starts: a backlog
        await p.start()
        await _settle(p, 12)
        users, off = _stored(s)
        n = commits.n
        await p.stop()
        await asyncio.to_thread(s.close)
        return users, off, n, p.batches

    users, off, commits, batches = asyncio.run(go())
    assert users == [f"u{i}" for i in range(12)]  # every event once, in stream order
    assert off == 1200
    assert batches == 6 and commits == 2, (batches, commits)


def test_with_nothing_queued_each_batch_is_stored_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live stream: each batch stored before the next is taken, no transaction left in
    flight (test_store_overlap.py has the backlog's overlap)."""
    _small_batches(monkeypatch)

    async def go() -> list[tuple[int, int, bool]]:
        s = Store(tmp_path)
        await asyncio.to_thread(s.open)
        p = Pipeline(s)
        await p.start()
        seen = []
        for i in range(0, 6, 2):
            await p.emit(_lines(2, i))
            await _settle(p, i + 2)
            seen.append((len(_stored(s)[0]), _stored(s)[1], p._inflight is None))
        await p.stop()
        await asyncio.to_thread(s.close)
        return seen

    assert asyncio.run(go()) == [(2, 200, True), (4, 400, True), (6, 600, True)]


def test_a_value_no_column_takes_inside_a_group_costs_only_its_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group's transaction fails on data: its batches are stored one by one, and the
    bad one row by row (as a lone batch always was)."""
    _small_batches(monkeypatch)
    from sshmonitord.parse import Parser

    class Poisoning(Parser):
        def parse_line(self, line):  # type: ignore[no-untyped-def]
            ev = super().parse_line(line)
            if ev is not None and "203.0.113.66" in line.text:
                ev.pid = 2**70  # no SQLite INTEGER holds it
            return ev

    async def go() -> tuple[list[str], int, int, int]:
        s = Store(tmp_path)
        await asyncio.to_thread(s.open)
        p = Pipeline(s, parser=Poisoning())
        for i in range(0, 12, 2):
            await p.emit(_lines(2, i, bad=5))
        await p.start()
        await _settle(p, 12)
        users, off = _stored(s)
        await p.stop()
        await asyncio.to_thread(s.close)
        return users, off, p.unstorable_rows, p.unstorable_batches

    users, off, rows, batches = asyncio.run(go())
    assert users == [f"u{i}" for i in range(12) if i != 5]
    assert off == 1200 and rows == 1 and batches == 0


def test_a_foreign_lock_holds_the_group_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the write lock while a backlog is handled: every batch is acted
    on and held; once the lock is gone each line is stored exactly once, in order."""
    _small_batches(monkeypatch)
    monkeypatch.setattr(pipeline_mod, "STORE_RETRY_MIN", 0.05)

    async def go() -> tuple[int, list[str], int, int]:
        s = Store(tmp_path)
        await asyncio.to_thread(s.open)
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(s.path), "30"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "locked"
            p = Pipeline(s)
            for i in range(0, 12, 2):
                await p.emit(_lines(2, i))
            await p.start()
            async with asyncio.timeout(10):
                while p.lines < 12 or p.commit_failures == 0:
                    await asyncio.sleep(0.02)
            held = p.unstored_lines
            assert _stored(s) == ([], 0)
        finally:
            holder.kill()
            holder.wait()
        users, off = await _finish(p, s, 12)
        return held, users, off, p.commit_failures

    held, users, off, failures = asyncio.run(go())
    assert held == 12 and failures >= 1
    assert users == [f"u{i}" for i in range(12)] and off == 1200


def test_the_loop_runs_other_tasks_between_batches_held_for_a_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Holding a batch for the next transaction awaits nothing: without a yield the loop
    would handle a whole group's batches back to back, deaf to the control socket, the
    watchdog and the sources."""
    _small_batches(monkeypatch)

    async def go() -> list[str]:
        s = Store(tmp_path)
        await asyncio.to_thread(s.open)
        p = Pipeline(s)
        order: list[str] = []
        plain = p._process

        def process(items: Any) -> Any:
            order.append("batch")
            return plain(items)

        p._process = process  # type: ignore[method-assign]
        for i in range(0, 12, 2):
            await p.emit(_lines(2, i))
        stop = asyncio.Event()

        async def other() -> None:
            while not stop.is_set():
                order.append("other")
                await asyncio.sleep(0)

        task = asyncio.create_task(other())
        await p.start()
        await _settle(p, 12)
        stop.set()
        await task
        await p.stop()
        await asyncio.to_thread(s.close)
        return order

    order = asyncio.run(go())
    handled = [i for i, x in enumerate(order) if x == "batch"]
    assert len(handled) == 6
    assert all(b - a > 1 for a, b in itertools.pairwise(handled)), order


# ---------------------------------------------------------------------- the backlog's cache


def _sqlite_memory() -> int:
    """Bytes SQLite has allocated in this process (every connection's page cache)."""
    import ctypes
    import ctypes.util

    lib = ctypes.CDLL(ctypes.util.find_library("sqlite3") or "libsqlite3.so.0")
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    return int(lib.sqlite3_memory_used())


def _cache_kib(s: Store) -> int:
    return -int(s.conn.execute("PRAGMA cache_size").fetchone()[0])


def test_a_backlog_borrows_the_big_page_cache_and_gives_it_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 20,000-line backlog is stored with the 32 MB cache; once the store has been quiet
    for CACHE_HOLD the pages are freed (SQLite's own count of its memory drops), and the
    next small batch is stored with the small cache, every line in order."""
    monkeypatch.setattr(pipeline_mod, "CACHE_HOLD", 0.5)

    async def go() -> dict[str, Any]:
        s = Store(tmp_path)
        await asyncio.to_thread(s.open)
        p = Pipeline(s)
        out: dict[str, Any] = {"before": await s.run(lambda _c: _cache_kib(s))}
        for i in range(0, 20_000, 2_000):
            await p.emit(_lines(2_000, i))  # queued before the consumer starts: a backlog
        await p.start()
        await _settle(p, 20_000, timeout=60)
        out["held"] = s.backlog_at is not None
        out["during"] = await s.run(lambda _c: _cache_kib(s))
        out["mem_during"] = await s.run(lambda _c: _sqlite_memory())
        async with asyncio.timeout(10):
            while s.backlog_at is not None:
                await asyncio.sleep(0.05)
        out["after"] = await s.run(lambda _c: _cache_kib(s))
        out["mem_after"] = await s.run(lambda _c: _sqlite_memory())
        await p.emit(_lines(2, 20_000))  # a live line: stored with the small cache
        await _settle(p, 20_002)
        out["live"] = await s.run(lambda _c: _cache_kib(s))
        out["held_live"] = s.backlog_at is not None
        out["users"], out["off"] = _stored(s)
        await p.stop()
        await asyncio.to_thread(s.close)
        return out

    r = asyncio.run(go())
    assert r["before"] == 2 * 1024 and r["held"] and r["during"] == 32 * 1024, r
    assert r["after"] == 2 * 1024 and r["live"] == 2 * 1024 and not r["held_live"], r
    # 20,000 rows with four indexes are ~7 MB of pages: nearly all of it goes back.
    assert r["mem_during"] - r["mem_after"] > 4_000_000, (r["mem_during"], r["mem_after"])
    assert r["users"] == [f"u{i}" for i in range(20_002)] and r["off"] == 2_000_200


def test_a_live_stream_never_takes_the_big_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _small_batches(monkeypatch)

    async def go() -> tuple[list[int], list[bool]]:
        s = Store(tmp_path)
        await asyncio.to_thread(s.open)
        p = Pipeline(s)
        await p.start()
        sizes, held = [], []
        for i in range(0, 10, 2):
            await p.emit(_lines(2, i))
            await _settle(p, i + 2)
            sizes.append(await s.run(lambda _c: _cache_kib(s)))
            held.append(s.backlog_at is not None)
        await p.stop()
        await asyncio.to_thread(s.close)
        return sizes, held

    sizes, held = asyncio.run(go())
    assert sizes == [2 * 1024] * 5 and not any(held)


def test_a_cache_that_cannot_be_released_costs_nothing_but_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """release_cache raising (the database gone bad under it) is logged once; lines keep
    being stored, and the pipeline does not spin retrying it."""
    import sqlite3

    monkeypatch.setattr(pipeline_mod, "CACHE_HOLD", 0.2)
    calls = []

    def broken(_conn: Any = None) -> bool:
        calls.append(1)
        raise sqlite3.OperationalError("disk I/O error")

    async def go() -> tuple[list[str], int]:
        s = Store(tmp_path)
        await asyncio.to_thread(s.open)
        monkeypatch.setattr(s, "release_cache", broken)
        p = Pipeline(s)
        for i in range(0, 4_000, 2_000):
            await p.emit(_lines(2_000, i))
        await p.start()
        await _settle(p, 4_000, timeout=30)
        await asyncio.sleep(1.0)  # five holds' worth: one attempt only
        await p.emit(_lines(2, 4_000))
        await _settle(p, 4_002)
        stored = _stored(s)
        await p.stop()
        await asyncio.to_thread(s.close)
        return stored

    users, off = asyncio.run(go())
    assert len(calls) == 1, calls
    assert users == [f"u{i}" for i in range(4_002)] and off == 400_200
