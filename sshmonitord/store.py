"""SQLite underneath every stage: positions, events, sessions, bans, the alert spool.

One database file in the state directory, WAL mode (operator commands read while the daemon
writes), schema versioned with ``PRAGMA user_version`` and migrated forward at start.
The daemon owns the only writing connection and drives it from one dedicated thread, so
SQLite never blocks the event loop and writes never contend.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

DB_NAME = "sshmonitor.db"

# (version, what it adds, SQL). Append only: a released migration is never edited.
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "metadata",
        """
        CREATE TABLE meta (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        """,
    ),
]


class StoreError(Exception):
    """The database cannot be opened or migrated."""


def db_path(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / DB_NAME


def connect(path: str | os.PathLike[str], readonly: bool = False) -> sqlite3.Connection:
    """Open the database. Read-only connections are for operator commands."""
    if readonly:
        conn = sqlite3.connect(f"file:{os.fspath(path)}?mode=ro", uri=True, timeout=5)
    else:
        conn = sqlite3.connect(
            os.fspath(path), timeout=5, check_same_thread=False, isolation_level=None
        )
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode is durable against process crashes; only an OS crash can
        # lose the last transactions, and positions make that a bounded replay.
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.row_factory = sqlite3.Row
    return conn


def migrate(conn: sqlite3.Connection) -> tuple[int, int]:
    """Apply pending migrations; return (version before, version after)."""
    before = conn.execute("PRAGMA user_version").fetchone()[0]
    latest = MIGRATIONS[-1][0]
    if before > latest:
        raise StoreError(
            f"database schema version {before} is newer than this sshmonitord knows ({latest}); "
            "refusing to run an older version against it"
        )
    for version, _what, sql in MIGRATIONS:
        if version <= before:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _statements(sql):
                conn.execute(stmt)
            conn.execute(f"PRAGMA user_version={version:d}")
            conn.execute("COMMIT")
        except Exception:
            conn.execute("ROLLBACK")
            raise
    return before, conn.execute("PRAGMA user_version").fetchone()[0]


def _statements(sql: str) -> list[str]:
    out, buf = [], ""
    for piece in sql.split(";"):
        buf += piece
        if sqlite3.complete_statement(buf + ";"):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
        else:
            buf += ";"
    return out


class Store:
    """The daemon's single writer. Use :meth:`run` from async code."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = Path(state_dir)
        self.path = db_path(state_dir)
        self._conn: sqlite3.Connection | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self.schema_version = 0

    def open(self) -> None:
        """Create the state directory and database, and bring the schema up to date."""
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            conn = connect(self.path)
            _before, self.schema_version = migrate(conn)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc
        self._conn = conn

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("store is not open")
        return self._conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the store thread and return its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, self.conn)

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        """Finish queued work, checkpoint the WAL and close."""
        self._pool.shutdown(wait=True)
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None


def query(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    """Convenience for operator commands on a read-only connection."""
    return list(conn.execute(sql, params))
