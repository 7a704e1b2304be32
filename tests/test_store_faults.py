"""The store under faults: damaged files, an unclean shutdown, foreign locks, loose modes.

Real SQLite files, real second processes holding locks; nothing is mocked.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

from sshmonitord import store
from sshmonitord.store import Store


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _fill(s: Store, rows: int = 3000) -> None:
    with s.transaction():
        s.conn.executemany(
            "INSERT INTO events(ts, program, kind, raw) VALUES (?, 'sshd', 'auth_failure', ?)",
            [(float(i), f"line {i} " + "x" * 200) for i in range(rows)],
        )


def test_files_are_private_whatever_the_umask_and_directory_mode(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    old = os.umask(0o022)
    try:
        s = Store(state)
        s.open()
        _fill(s, 10)  # makes the WAL and shared-memory files exist
        for name in ("sshmonitor.db", "sshmonitor.db-wal", "sshmonitor.db-shm"):
            assert (state / name).exists(), name
            assert _mode(state / name) == 0o600, (name, oct(_mode(state / name)))
        s.close()
    finally:
        os.umask(old)


def test_a_world_readable_database_from_before_is_made_private(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.open()
    s.close()
    db = tmp_path / "sshmonitor.db"
    os.chmod(db, 0o644)
    Path(f"{db}-wal").write_bytes(b"")
    os.chmod(f"{db}-wal", 0o644)
    s = Store(tmp_path)
    s.open()
    assert _mode(db) == 0o600
    assert _mode(Path(f"{db}-wal")) == 0o600
    s.close()


def test_random_bytes_are_moved_aside_and_a_fresh_store_starts(tmp_path: Path) -> None:
    db = tmp_path / "sshmonitor.db"
    db.write_bytes(os.urandom(64 * 1024))
    s = Store(tmp_path)
    s.open()  # no exception: a crash loop would leave the host unprotected
    assert s.recovered is not None
    moved = Path(s.recovered["moved_to"])
    assert moved.exists() and moved.name.startswith("sshmonitor.db.corrupt-")
    assert moved.stat().st_size == 64 * 1024
    assert s.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
    assert _mode(db) == 0o600
    s.close()
    # The next start finds a sound store and says nothing.
    s2 = Store(tmp_path)
    s2.open()
    assert s2.recovered is None
    s2.close()


def _damage_pages(db: Path) -> None:
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) > 20 * page
    # Keep the header page (so the file still opens); smash a run of table pages.
    for off in range(8 * page, 14 * page, 97):
        data[off : off + 40] = os.urandom(40)
    db.write_bytes(bytes(data))


def test_unclean_shutdown_runs_a_check_that_finds_damaged_pages(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.open()
    _fill(s)
    s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    # Die without close(): the clean_shutdown flag stays 0.
    s.conn.close()
    db = tmp_path / "sshmonitor.db"
    _damage_pages(db)
    s2 = Store(tmp_path)
    s2.open()
    assert s2.recovered is not None, "damaged pages after an unclean shutdown went unnoticed"
    assert Path(s2.recovered["moved_to"]).exists()
    s2.close()


def test_a_clean_shutdown_skips_the_check(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.open()
    _fill(s, 10)
    s.close()
    conn = sqlite3.connect(tmp_path / "sshmonitor.db")
    assert conn.execute("SELECT value FROM meta WHERE key='clean_shutdown'").fetchone()[0] == "1"
    conn.close()


def test_the_check_is_bounded_in_time(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.open()
    _fill(s, 20000)
    started = time.monotonic()
    assert store.quick_check(s.conn, seconds=0.0) is None  # cut short at once, not an error
    assert time.monotonic() - started < 2
    assert store.quick_check(s.conn, seconds=30) is None
    s.close()


HOLD_LOCK = """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
c.execute("ROLLBACK")
"""


def test_a_locked_database_is_not_mistaken_for_a_damaged_one(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.open()
    s.close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path / "sshmonitor.db"), "8"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        s2 = Store(tmp_path)
        s2.open()  # waits out the busy timeout, then starts: the pipeline retries writes
        assert s2.recovered is None
        s2.close()
        assert not list(tmp_path.glob("*.corrupt-*")), "a locked database was moved aside"
    finally:
        holder.kill()
        holder.wait()


def test_a_bounded_read_is_stale_when_the_store_is_stuck_and_never_keeps_a_cancel(
    tmp_path: Path,
) -> None:
    """run_bounded (status and metrics reads): a read the store thread does not answer in
    time gives the caller's last answer; a cancellation of the caller arriving as the read
    finishes is raised, not swallowed (asyncio.wait_for swallowed it before Python 3.12)."""
    import asyncio
    import threading

    import pytest

    s = Store(tmp_path)
    s.open()
    held = threading.Event()
    try:

        async def main() -> None:
            # Stuck: the store thread is busy with a long call.
            busy = asyncio.ensure_future(s.run(lambda _c: held.wait(10)))
            assert await s.run_bounded(lambda _c: "fresh", "stale", 0.2) == "stale"
            held.set()
            await busy
            assert await s.run_bounded(lambda _c: "fresh", "stale", 5) == "fresh"

            me = asyncio.current_task()
            assert me is not None
            plain = s.run

            async def cancel_as_it_returns(fn: object) -> str:
                me.cancel()  # the caller is stopped just as the read completes
                return "fresh"

            s.run = cancel_as_it_returns  # type: ignore[method-assign,assignment]
            try:
                with pytest.raises(asyncio.CancelledError):
                    await s.run_bounded(lambda _c: "fresh", "stale", 5)
            finally:
                s.run = plain  # type: ignore[method-assign]

        asyncio.run(main())
    finally:
        held.set()
        s.close()
