"""SQLite underneath every stage: positions, events, sessions, bans, the alert spool.

One database file in the state directory, WAL mode (operator commands read while the daemon
writes), schema versioned with ``PRAGMA user_version`` and migrated forward at start.
The daemon owns the only writing connection and drives it from one dedicated thread, so
SQLite never blocks the event loop and writes never contend.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .. import log
from ..addresses import address_text
from ..aio import bounded
from ..events import Event, FilePosition, Finding, Kind
from .rows import insert_rows
from .schema import MIGRATIONS, SchemaError, migrate

__all__ = ["MIGRATIONS", "SchemaError", "migrate"]

T = TypeVar("T")

DB_NAME = "sshmonitor.db"
READ_BOUND = 1.0  # seconds a status or metrics read may wait for the store thread
# The database and its WAL/shared-memory files hold user names, addresses and commands.
FILE_MODE = 0o600
SIDE_FILES = ("-wal", "-shm", "-journal")
# After an unclean shutdown the database is checked before use. A check that would take longer
# is cut short (and says so): start-up must stay well inside the unit's TimeoutStartSec=30.
QUICK_CHECK_SECONDS = 10.0
# SQLite's primary result codes meaning "this file is damaged" (sqlite3 exposes the code of
# the error on the exception; a locked or full database is a different code and not damage).
WRITE_BUSY_TIMEOUT = 0.25  # seconds a write waits for another process's lock
# The writer's page cache (KiB; SQLite's default is 2 MB) while it stores a backlog. A batch's
# inserts into events(ip, ts) land on random pages: with a cache smaller than the pages one
# transaction touches, SQLite spills and re-reads them mid-transaction. 32 MB, not the 64 MB
# that measured ~10 % less CPU per row catching up 1M lines (bench/tail.py throughput, issue
# #17's note). The cache fills as far as the database's pages are used and SQLite never gives
# it back by itself, so it is the backlog's only: a transaction of BACKLOG_LINES or more
# takes it, and once the store has had none for CACHE_HOLD seconds the pipeline hands it back
# (release_cache). A 50k-line backlog left the daemon holding 15.6 MB of it for good.
WRITE_CACHE_KIB = 32 * 1024
IDLE_CACHE_KIB = 2 * 1024  # otherwise: a live stream's small transactions need no more
BACKLOG_LINES = 1000
CACHE_HOLD = 5.0
# WAL pages before an automatic checkpoint (SQLite's default is 1000, ~4 MB): a checkpoint
# copies every page changed since the last one back into the database and fsyncs it; less
# often, a page the indexes change in every batch is copied once, not once per batch. The
# WAL file grows to about this many pages (x 4 KiB) and is truncated at a clean shutdown.
WAL_CHECKPOINT_PAGES = 10_000
SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26

# The C encoder behind json.dumps, called directly: JSONEncoder.encode builds it again on
# every call, which cost more than the rest of an event's row (bench/tail.py throughput,
# method (f)), and a cache of the texts by value saved only part of that (issue #17).
# Without the circular-reference check (the parsers' details are flat dicts of plain values);
# a detail that nests itself recurses until RecursionError and then goes through the
# checked encoder, which reports it as before. Without the C accelerator (not CPython), the
# pure-Python encoder.
_encode_detail = json.JSONEncoder(ensure_ascii=False, default=str).encode
_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_c_encode_detail: Any = (
    None
    if _c_make_encoder is None
    else _c_make_encoder(
        None, str, json.encoder.encode_basestring, None, ": ", ", ", False, False, True
    )
)


def detail_text(detail: dict[str, Any]) -> str:
    """``detail`` as the JSON text the events table holds: what ``json.dumps(detail,
    ensure_ascii=False, default=str)`` writes."""
    if _c_encode_detail is None:
        return _encode_detail(detail)
    try:
        return "".join(_c_encode_detail(detail, 0))
    except RecursionError:
        return _encode_detail(detail)


# str() of a StrEnum member goes through Enum.__str__; a dict lookup does not.
_KIND_TEXT: dict[Kind, str] = {k: str(k) for k in Kind}


def event_row(ev: Event) -> tuple[Any, ...]:
    """An Event as a row of the events table."""
    kind = ev.kind
    ip, detail = ev.ip, ev.detail
    return (
        ev.ts.timestamp(),
        ev.host,
        ev.program,
        ev.pid,
        _KIND_TEXT[kind] if kind in _KIND_TEXT else str(kind),
        ev.user,
        None if ip is None else address_text(ip),
        ev.port,
        ev.method,
        ev.key_fp,
        ev.count,
        ev.session,
        detail_text(detail) if detail else None,
        ev.raw,
    )


INSERT_FINDING = (
    "INSERT INTO findings(ts, rule, severity, subject, action, summary, evidence, created) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def finding_row(f: Finding, now: float) -> tuple[Any, ...]:
    ts = f.events[-1].ts.timestamp() if f.events else now
    return (
        ts,
        f.rule,
        str(f.severity),
        f.subject,
        str(f.action),
        f.summary,
        json.dumps([e.raw for e in f.events], ensure_ascii=False),
        now,
    )


INSERT_EVENT = (
    "INSERT INTO events(ts, host, program, pid, kind, user, ip, port, method, key_fp, count, "
    "session, detail, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

# Fleet mode: the same with the attempts detection counted (store/outbox.py).
INSERT_EVENT_ATTEMPT = (
    "INSERT INTO events(ts, host, program, pid, kind, user, ip, port, method, key_fp, count, "
    "session, detail, raw, attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

INSERT_LINE_TRACE = "INSERT INTO line_trace(source, text) VALUES (?, ?)"


class StoreError(Exception):
    """The database cannot be opened or migrated."""


class CorruptDatabase(StoreError):
    """The database file is damaged (not a database, or a malformed page)."""


def is_corruption(exc: BaseException) -> bool:
    """Does this error say the file is damaged (as opposed to locked, full or read-only)?"""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) in (SQLITE_CORRUPT, SQLITE_NOTADB)
    return isinstance(exc, sqlite3.DatabaseError) and (
        "malformed" in str(exc) or "not a database" in str(exc)
    )


def is_transient(exc: BaseException) -> bool:
    """Can retrying the same write succeed later? Yes for a full disk, a lock, an I/O error
    and a damaged file (the watchdog restart moves it aside); no for data that cannot be
    bound or violates a constraint, which fails the same way every time."""
    if isinstance(exc, sqlite3.OperationalError | sqlite3.InternalError):
        return True
    return is_corruption(exc)


def make_private(path: Path) -> None:
    """Create the database file owner-only, and take group/other access away from it and its
    side files whatever the umask or the directory's mode (SQLite gives the WAL and
    shared-memory files the database file's mode when it creates them)."""
    # Never open (and so close) a descriptor of a database this process may have open in
    # SQLite: closing any descriptor of a file drops every POSIX lock the process holds on it.
    if not path.exists():
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE))
    if path.stat().st_mode & 0o077:
        os.chmod(path, FILE_MODE)
    for suffix in SIDE_FILES:
        side = Path(f"{path}{suffix}")
        with contextlib.suppress(FileNotFoundError):
            if side.stat().st_mode & 0o077:
                side.chmod(FILE_MODE)


def quick_check(conn: sqlite3.Connection, seconds: float = QUICK_CHECK_SECONDS) -> str | None:
    """``PRAGMA quick_check`` bounded in time. Returns the first problem found, or None when
    the database is sound or the check ran out of time (logged; a big database is checked as
    far as the time allows rather than delaying start-up past systemd's timeout)."""
    deadline = time.monotonic() + seconds
    conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 20_000)
    try:
        rows = conn.execute("PRAGMA quick_check(3)").fetchall()
    except sqlite3.OperationalError as exc:
        if "interrupt" not in str(exc):
            raise
        log.get("store").warning(
            "database check cut short; carrying on", seconds=seconds, database=str(conn)
        )
        return None
    finally:
        conn.set_progress_handler(None, 0)
    problems = [str(r[0]) for r in rows if str(r[0]) != "ok"]
    return "; ".join(problems) if problems else None


def db_path(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / DB_NAME


def connect(path: str | os.PathLike[str], readonly: bool = False) -> sqlite3.Connection:
    """Open the database. Read-only connections are for operator commands."""
    if readonly:
        conn = sqlite3.connect(f"file:{os.fspath(path)}?mode=ro", uri=True, timeout=5)
    else:
        # A short busy timeout: every writer retries with its own backoff, and a foreign
        # write lock must not make the one store thread (bans, alerts, control commands
        # queue behind it) wait seconds per attempt.
        conn = sqlite3.connect(
            os.fspath(path),
            timeout=WRITE_BUSY_TIMEOUT,
            check_same_thread=False,
            isolation_level=None,
        )
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode is durable against process crashes; only an OS crash can
        # lose the last transactions, and positions make that a bounded replay.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA cache_size=-{IDLE_CACHE_KIB:d}")
        conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES:d}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.row_factory = sqlite3.Row
    return conn


class Store:
    """The daemon's single writer. Use :meth:`run` from async code."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = Path(state_dir)
        self.path = db_path(state_dir)
        self._conn: sqlite3.Connection | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self.schema_version = 0
        # Set when a damaged database was moved aside at open: {moved_to, error, at}.
        self.recovered: dict[str, str] | None = None
        # A write failed because the file is damaged: the next start checks it (and an
        # unhealthy daemon gets restarted by the watchdog, which then moves it aside).
        self.corruption_seen = False
        # When the last backlog-sized transaction began (monotonic); None: the writer has
        # its idle cache (see WRITE_CACHE_KIB).
        self.backlog_at: float | None = None
        self.log = log.get("store")

    def open(self) -> None:
        """Create the state directory and database, and bring the schema up to date.

        A damaged database (random bytes, a malformed page found on open or by the bounded
        check after an unclean shutdown) is moved aside with a timestamp and a fresh one is
        started: a crash loop would leave the host with no protection at all."""
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                conn = self._open_checked()
            except CorruptDatabase as exc:
                moved = self._move_aside()
                self.log.error(
                    "database is damaged; moved it aside and started a fresh one",
                    database=str(self.path),
                    moved_to=str(moved),
                    error=str(exc),
                )
                self.recovered = {
                    "moved_to": str(moved),
                    "error": str(exc),
                    "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
                conn = self._open_checked()
        except SchemaError as exc:
            raise StoreError(str(exc)) from exc
        except CorruptDatabase as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc
        self._conn = conn

    def _open_checked(self) -> sqlite3.Connection:
        make_private(self.path)
        conn: sqlite3.Connection | None = None
        try:
            conn = connect(self.path)
            _before, self.schema_version = migrate(conn)
            row = conn.execute("SELECT value FROM meta WHERE key = 'clean_shutdown'").fetchone()
            if row is not None and row[0] == "0":
                # The last run did not close the store: it may have died mid-write.
                problem = quick_check(conn)
                if problem is not None:
                    raise CorruptDatabase(f"integrity check failed: {problem}")
            try:
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('clean_shutdown', '0') "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value"
                )
            except sqlite3.OperationalError as exc:
                if is_corruption(exc):
                    raise
                # Another process holds the write lock: start anyway (the pipeline retries
                # its writes); only the next start's check after a crash is lost.
                self.log.warning("cannot mark the store in use", error=str(exc))
            make_private(self.path)  # the WAL and shm files now exist too
            return conn
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            if is_corruption(exc):
                raise CorruptDatabase(str(exc)) from exc
            raise
        except CorruptDatabase:
            if conn is not None:
                conn.close()
            raise

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        moved = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while moved.exists():
            n += 1
            moved = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        for suffix in ("", *SIDE_FILES):
            with contextlib.suppress(FileNotFoundError):
                os.rename(f"{self.path}{suffix}", f"{moved}{suffix}")
        return moved

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("store is not open")
        return self._conn

    async def run_bounded(
        self, fn: Callable[[sqlite3.Connection], T], stale: T, timeout: float = READ_BOUND
    ) -> T:
        """``fn(conn)`` on the store thread if it answers within ``timeout``; else ``stale``
        (the caller's last answer). For status and metrics reads: they must answer even while
        the store is stuck or failing, which is when they are needed most. A cancellation
        of the caller always propagates (aio.bounded, not asyncio.wait_for: see there)."""
        try:
            return await bounded(self.run(fn), timeout)
        except Exception:
            return stale

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the store thread and return its result."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, fn, self.conn)
        except sqlite3.DatabaseError as exc:
            if is_corruption(exc) and not self.corruption_seen:
                self.corruption_seen = True
                self.log.error(
                    "database is damaged; restart to move it aside", database=str(self.path)
                )
            raise

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # ------------------------------------------------------------------ positions

    def load_file_positions(self) -> dict[str, list[FilePosition]]:
        """Saved positions per configured path, oldest first."""
        out: dict[str, list[FilePosition]] = {}
        for r in self.conn.execute(
            "SELECT path, dev, inode, fingerprint, offset FROM file_positions "
            "ORDER BY updated_at, rowid"
        ):
            out.setdefault(r[0], []).append(FilePosition(r[0], r[1], r[2], r[3], r[4]))
        return out

    def file_position_times(self) -> dict[tuple[str, int, int], float]:
        """When each saved file position was last written (wall clock), by (path, dev, inode):
        what was written to a log after that time is what we have not read."""
        return {
            (r[0], r[1], r[2]): float(r[3])
            for r in self.conn.execute("SELECT path, dev, inode, updated_at FROM file_positions")
        }

    def load_journal_cursor(self, name: str = "journal") -> str | None:
        row = self.conn.execute(
            "SELECT cursor FROM journal_positions WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else str(row[0])

    def save_positions(
        self,
        files: Iterable[FilePosition],
        retired: Iterable[tuple[str, int, int]] = (),
        cursors: dict[str, str] | None = None,
    ) -> None:
        """Upsert positions and forget retired files. Call inside the batch's transaction."""
        now = time.time()
        self.conn.executemany(
            "INSERT INTO file_positions(path, dev, inode, fingerprint, offset, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(path, dev, inode) DO UPDATE SET "
            "fingerprint = excluded.fingerprint, offset = excluded.offset, "
            "updated_at = excluded.updated_at",
            [(p.path, p.dev, p.inode, p.fingerprint, p.offset, now) for p in files],
        )
        self.conn.executemany(
            "DELETE FROM file_positions WHERE path = ? AND dev = ? AND inode = ?", list(retired)
        )
        for name, cursor in (cursors or {}).items():
            self.conn.execute(
                "INSERT INTO journal_positions(name, cursor, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET cursor = excluded.cursor, "
                "updated_at = excluded.updated_at",
                (name, cursor, now),
            )

    def save_initial_positions(self, files: Iterable[FilePosition]) -> None:
        """Store where sources start reading files they had no position for. A position the
        pipeline has stored meanwhile (it is later) wins."""
        now = time.time()
        with self.transaction():
            self.conn.executemany(
                "INSERT INTO file_positions(path, dev, inode, fingerprint, offset, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(path, dev, inode) DO NOTHING",
                [(p.path, p.dev, p.inode, p.fingerprint, p.offset, now) for p in files],
            )

    # ------------------------------------------------------------------ a batch's rows

    def add_events(self, rows: Sequence[tuple[Any, ...]], skip_bad: bool = False) -> list[str]:
        """Insert events-table rows (:func:`event_row`). Inside the batch's transaction.

        ``skip_bad``: row by row, skipping the rows that can never be stored (a value no
        column takes) and returning why each was skipped; a transient error (full disk,
        lock) still raises, so the whole batch is retried."""
        sql = INSERT_EVENT_ATTEMPT if rows and len(rows[0]) == 15 else INSERT_EVENT
        return self._insert(sql, rows, skip_bad)

    def add_findings(
        self, findings: Sequence[Finding], now: float, skip_bad: bool = False
    ) -> list[str]:
        """Insert findings (``now``: when they were raised, the wall clock); see add_events."""
        return self._insert(INSERT_FINDING, [finding_row(f, now) for f in findings], skip_bad)

    def add_line_trace(self, rows: Sequence[tuple[str, str]], skip_bad: bool = False) -> list[str]:
        """Insert raw lines as read, ``(source, text)`` (``--trace-lines``); see add_events."""
        return self._insert(INSERT_LINE_TRACE, rows, skip_bad)

    def _insert(self, sql: str, rows: Sequence[tuple[Any, ...]], skip_bad: bool) -> list[str]:
        if not skip_bad:
            insert_rows(self.conn, sql, rows)
            return []
        # A failed statement leaves the rest of SQLite's transaction intact.
        skipped: list[str] = []
        for row in rows:
            try:
                self.conn.execute(sql, row)
            except Exception as exc:
                if is_transient(exc):
                    raise
                skipped.append(str(exc))
        return skipped

    def cache_for(self, lines: int) -> None:
        """Before a transaction of ``lines`` handled lines (store thread): a backlog's gets
        the big page cache (WRITE_CACHE_KIB)."""
        if lines < BACKLOG_LINES:
            return
        if self.backlog_at is None:
            self.conn.execute(f"PRAGMA cache_size=-{WRITE_CACHE_KIB:d}")
        self.backlog_at = time.monotonic()

    def release_cache(self, conn: sqlite3.Connection | None = None) -> bool:
        """Hand the backlog's page cache back (store thread): SQLite frees its pages, then
        the C heap returns the freed memory to the system. False if it was not held."""
        if self.backlog_at is None:
            return False
        conn = conn or self.conn
        conn.execute(f"PRAGMA cache_size=-{IDLE_CACHE_KIB:d}")
        conn.execute("PRAGMA shrink_memory")
        self.backlog_at = None
        _trim_heap()
        return True

    # ------------------------------------------------------------------ operator views

    def ping(self) -> None:
        """The cheapest statement there is: raises if the database does not answer (the
        watchdog runs it on the store thread, so a stuck store thread shows too)."""
        self.conn.execute("SELECT 1").fetchone()

    def transaction(self) -> _Transaction:
        """``with store.transaction(): ...`` — one atomic batch (BEGIN IMMEDIATE/COMMIT)."""
        return _Transaction(self.conn)

    def close(self) -> None:
        """Finish queued work, checkpoint the WAL and close."""
        self._pool.shutdown(wait=True)
        if self._conn is not None:
            if not self.corruption_seen:
                with contextlib.suppress(sqlite3.Error):
                    self.set_meta("clean_shutdown", "1")
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None


def _trim_heap() -> None:
    """glibc keeps freed memory in its heap for reuse; malloc_trim gives the whole free
    pages back. Elsewhere (musl) or without ctypes: nothing, and no error."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError, ImportError):
        pass


class _Transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, *_: object) -> None:
        if not exc_type:
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error:
                # A COMMIT that fails (disk full while writing the WAL) can leave the
                # transaction open: end it, or every later BEGIN fails too.
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        elif self.conn.in_transaction:
            # SQLite rolls back by itself on some errors (SQLITE_FULL, SQLITE_IOERR): a second
            # ROLLBACK would raise and hide the error that matters.
            self.conn.execute("ROLLBACK")


def query(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    """Convenience for operator commands on a read-only connection."""
    return list(conn.execute(sql, params))
