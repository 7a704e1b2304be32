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
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from . import log
from .events import Event, FilePosition, Finding

T = TypeVar("T")

DB_NAME = "sshmonitor.db"
# The database and its WAL/shared-memory files hold user names, addresses and commands.
FILE_MODE = 0o600
SIDE_FILES = ("-wal", "-shm", "-journal")
# After an unclean shutdown the database is checked before use. A check that would take longer
# is cut short (and says so): start-up must stay well inside the unit's TimeoutStartSec=30.
QUICK_CHECK_SECONDS = 10.0
# SQLite's primary result codes meaning "this file is damaged" (sqlite3 exposes the code of
# the error on the exception; a locked or full database is a different code and not damage).
WRITE_BUSY_TIMEOUT = 0.25  # seconds a write waits for another process's lock
SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26

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
    (
        2,
        "source positions and the optional line trace",
        """
        CREATE TABLE file_positions (
            path        TEXT    NOT NULL,
            dev         INTEGER NOT NULL,
            inode       INTEGER NOT NULL,
            fingerprint TEXT    NOT NULL,
            offset      INTEGER NOT NULL,
            updated_at  REAL    NOT NULL,
            PRIMARY KEY (path, dev, inode)
        );
        CREATE TABLE journal_positions (
            name       TEXT PRIMARY KEY,
            cursor     TEXT NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE TABLE line_trace (
            id     INTEGER PRIMARY KEY,
            source TEXT NOT NULL,
            text   TEXT NOT NULL
        );
        """,
    ),
    (
        3,
        "events",
        """
        CREATE TABLE events (
            id      INTEGER PRIMARY KEY,
            ts      REAL    NOT NULL,
            host    TEXT,
            program TEXT    NOT NULL,
            pid     INTEGER,
            kind    TEXT    NOT NULL,
            user    TEXT,
            ip      TEXT,
            port    INTEGER,
            method  TEXT,
            key_fp  TEXT,
            count   INTEGER NOT NULL DEFAULT 1,
            session TEXT,
            detail  TEXT,
            raw     TEXT
        );
        CREATE INDEX events_ts ON events(ts);
        CREATE INDEX events_ip_ts ON events(ip, ts);
        CREATE INDEX events_user_ts ON events(user, ts);
        CREATE INDEX events_kind_ts ON events(kind, ts);
        """,
    ),
    (
        4,
        "findings, bans, login and key history",
        """
        CREATE TABLE findings (
            id        INTEGER PRIMARY KEY,
            ts        REAL NOT NULL,
            rule      TEXT NOT NULL,
            severity  TEXT NOT NULL,
            subject   TEXT NOT NULL,
            action    TEXT NOT NULL,
            summary   TEXT NOT NULL,
            evidence  TEXT NOT NULL,
            created   REAL NOT NULL
        );
        CREATE INDEX findings_ts ON findings(ts);
        CREATE TABLE bans (
            id         INTEGER PRIMARY KEY,
            net        TEXT    NOT NULL,
            rule       TEXT    NOT NULL,
            reason     TEXT    NOT NULL,
            offence    INTEGER NOT NULL,
            created    REAL    NOT NULL,
            expires    REAL    NOT NULL,
            active     INTEGER NOT NULL DEFAULT 1,
            lifted     REAL,
            lifted_by  TEXT,
            dry_run    INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX bans_net ON bans(net);
        CREATE INDEX bans_active ON bans(active, expires);
        CREATE TABLE login_sources (
            user       TEXT NOT NULL,
            prefix     TEXT NOT NULL,
            first_seen REAL NOT NULL,
            last_seen  REAL NOT NULL,
            PRIMARY KEY (user, prefix)
        );
        CREATE TABLE login_keys (
            user       TEXT NOT NULL,
            key_fp     TEXT NOT NULL,
            first_seen REAL NOT NULL,
            last_seen  REAL NOT NULL,
            PRIMARY KEY (user, key_fp)
        );
        """,
    ),
    (
        5,
        "alert spool and throttle state",
        """
        CREATE TABLE alert_spool (
            id           INTEGER PRIMARY KEY,
            channel      TEXT    NOT NULL,
            alert        TEXT    NOT NULL,
            created      REAL    NOT NULL,
            next_attempt REAL    NOT NULL,
            attempts     INTEGER NOT NULL DEFAULT 0,
            severity     INTEGER NOT NULL DEFAULT 1,
            last_error   TEXT
        );
        CREATE INDEX alert_spool_due ON alert_spool(channel, next_attempt);
        CREATE TABLE alert_throttle (
            key          TEXT PRIMARY KEY,
            last_sent    REAL    NOT NULL,
            severity     INTEGER NOT NULL,
            folded       INTEGER NOT NULL DEFAULT 0,
            folded_since REAL
        );
        """,
    ),
    (
        6,
        "audit trail: sessions, the commands and file transfers attributed to them",
        # Written by sshmonitord/sessions.py (see docs/audit-trail.md). No foreign keys:
        # each table is pruned on its own retention, and a command whose login was not
        # seen (session_id NULL) is still part of the trail. ``seq`` orders the rows of
        # commands and transfers (and the sftp/channel steps in sessions.detail) in stream
        # order when classic syslog stamps give several the same second.
        """
        CREATE TABLE sessions (
            id             INTEGER PRIMARY KEY,
            host           TEXT,
            user           TEXT    NOT NULL,
            ip             TEXT,
            port           INTEGER,
            method         TEXT,
            key_fp         TEXT,
            program        TEXT,
            pid            INTEGER,
            child_pid      INTEGER,
            start          REAL    NOT NULL,
            opened         REAL,
            end            REAL,
            state          TEXT    NOT NULL,
            end_reason     TEXT,
            last_seen      REAL    NOT NULL,
            tty            TEXT,
            logind_session TEXT,
            audit_ses      INTEGER,
            commands       INTEGER NOT NULL DEFAULT 0,
            transfers      INTEGER NOT NULL DEFAULT 0,
            bytes_up       INTEGER NOT NULL DEFAULT 0,
            bytes_down     INTEGER NOT NULL DEFAULT 0,
            detail         TEXT
        );
        CREATE INDEX sessions_start ON sessions(start);
        CREATE INDEX sessions_user_start ON sessions(user, start);
        CREATE INDEX sessions_ip_start ON sessions(ip, start);
        CREATE INDEX sessions_state_start ON sessions(state, start);
        CREATE INDEX sessions_pid ON sessions(pid);
        CREATE INDEX sessions_audit_ses ON sessions(audit_ses) WHERE audit_ses IS NOT NULL;
        CREATE TABLE commands (
            id          INTEGER PRIMARY KEY,
            session_id  INTEGER,
            ts          REAL    NOT NULL,
            seq         INTEGER NOT NULL,
            host        TEXT,
            kind        TEXT    NOT NULL,
            user        TEXT,
            runas       TEXT,
            tty         TEXT,
            cwd         TEXT,
            command     TEXT,
            attribution TEXT,
            audit_ses   INTEGER,
            detail      TEXT
        );
        CREATE INDEX commands_session ON commands(session_id, ts);
        CREATE INDEX commands_ts ON commands(ts);
        -- auditd commands waiting for their audit session to be tied to a login
        CREATE INDEX commands_waiting ON commands(audit_ses)
            WHERE session_id IS NULL AND audit_ses IS NOT NULL;
        CREATE TABLE transfers (
            id            INTEGER PRIMARY KEY,
            session_id    INTEGER,
            ts            REAL    NOT NULL,
            seq           INTEGER NOT NULL,
            host          TEXT,
            pid           INTEGER,
            op            TEXT    NOT NULL,
            path          TEXT,
            new_path      TEXT,
            bytes_read    INTEGER,
            bytes_written INTEGER,
            attribution   TEXT,
            detail        TEXT
        );
        CREATE INDEX transfers_session ON transfers(session_id, ts);
        CREATE INDEX transfers_ts ON transfers(ts);
        """,
    ),
    (
        7,
        "alert spool: the message a row was last sent in",
        # A retry (or the re-delivery after a crash mid-send) sends the same rows again as the
        # same message, so its id (Message-ID, Idempotency-Key) marks the duplicate.
        """
        ALTER TABLE alert_spool ADD COLUMN batch TEXT;
        """,
    ),
]


def event_row(ev: Event) -> tuple[Any, ...]:
    """An Event as a row of the events table."""
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
            os.fspath(path), timeout=WRITE_BUSY_TIMEOUT, check_same_thread=False,
            isolation_level=None,
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
        # Set when a damaged database was moved aside at open: {moved_to, error, at}.
        self.recovered: dict[str, str] | None = None
        # A write failed because the file is damaged: the next start checks it (and an
        # unhealthy daemon gets restarted by the watchdog, which then moves it aside).
        self.corruption_seen = False
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
