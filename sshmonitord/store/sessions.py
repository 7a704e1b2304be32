"""The audit trail's tables: ``sessions``, ``commands`` and ``transfers`` (migration 6), and
retention pruning of those and of ``events``.

Every SQL statement of the session tracker (sshmonitord/audit/tracker.py), of pruning
(sshmonitord/audit/stage.py) and of the ``sshmonitor sessions/session/events`` commands
(sshmonitord/cli/audit.py) is here, as a function taking the connection to run on. The
functions never begin or commit a transaction, except :func:`immediate_transaction`: the
tracker writes inside the pipeline's batch transaction (or, for
:meth:`~..audit.tracker.SessionTracker.sweep`, its own), the CLI reads a read-only
connection.

Rows go in and out as tuples in the column orders named here (``SESSION_COLUMNS``,
``SessionUpdate``, ``CommandRow``, ``TransferRow``) or, for the CLI's read-only connection,
as :class:`sqlite3.Row`.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from typing import Any

OPEN, CLOSED, LOST = "open", "closed", "lost"

# The column order of a stored session, as load_open_sessions and get_session return it.
SESSION_COLUMNS = (
    "id, host, user, ip, port, method, key_fp, program, pid, child_pid, start, opened, end, "
    "state, end_reason, last_seen, tty, logind_session, audit_ses, commands, transfers, "
    "bytes_up, bytes_down, detail"
)

# (method, key_fp, child_pid, opened, end, state, end_reason, last_seen, tty,
#  logind_session, audit_ses, commands, transfers, bytes_up, bytes_down, detail, id)
SessionUpdate = tuple[Any, ...]
# (session_id, ts, seq, host, kind, user, runas, tty, cwd, command, attribution, audit_ses,
#  detail)
CommandRow = tuple[Any, ...]
# (session_id, ts, seq, host, pid, op, path, new_path, bytes_read, bytes_written,
#  attribution, detail)
TransferRow = tuple[Any, ...]
# (id, start, detail, user) of a session closed as lost
LostRow = tuple[int, float, str | None, str]

_UPDATE = (
    "UPDATE sessions SET method = ?, key_fp = ?, child_pid = ?, opened = ?, end = ?, "
    "state = ?, end_reason = ?, "
    "last_seen = ?, tty = ?, logind_session = ?, audit_ses = ?, commands = ?, transfers = ?, "
    "bytes_up = ?, bytes_down = ?, detail = ? WHERE id = ?"
)
_INSERT_COMMAND = (
    "INSERT INTO commands(session_id, ts, seq, host, kind, user, runas, tty, cwd, command, "
    "attribution, audit_ses, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_TRANSFER = (
    "INSERT INTO transfers(session_id, ts, seq, host, pid, op, path, new_path, bytes_read, "
    "bytes_written, attribution, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


# ---------------------------------------------------------------------------- the tracker


@contextlib.contextmanager
def immediate_transaction(
    conn: sqlite3.Connection, on_error: Callable[[], None] | None = None
) -> Iterator[None]:
    """A write transaction of its own (the tracker's sweep, outside the pipeline's batches).

    On any error, the commit's included, it is rolled back and ``on_error`` is called (the
    tracker then reloads its index from the store); a failed BEGIN changed nothing.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        if on_error is not None:
            on_error()
        raise


def load_open_sessions(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    """The open sessions, oldest first, as tuples in ``SESSION_COLUMNS`` order."""
    return [
        tuple(r)
        for r in conn.execute(
            f"SELECT {SESSION_COLUMNS} FROM sessions WHERE state = ? ORDER BY start", (OPEN,)
        ).fetchall()
    ]


def insert_session(
    conn: sqlite3.Connection,
    *,
    host: str,
    user: str,
    ip: str | None,
    port: int | None,
    method: str | None,
    key_fp: str | None,
    program: str,
    pid: int | None,
    start: float,
    detail: str | None,
) -> int:
    """A new open session (last seen at its start); return its id."""
    cur = conn.execute(
        "INSERT INTO sessions(host, user, ip, port, method, key_fp, program, pid, start, "
        "state, last_seen, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (host, user, ip, port, method, key_fp, program, pid, start, OPEN, start, detail),
    )
    return int(cur.lastrowid or 0)


def update_sessions(conn: sqlite3.Connection, rows: Iterable[SessionUpdate]) -> None:
    """Write back the changed columns of sessions (see ``SessionUpdate``)."""
    conn.executemany(_UPDATE, rows)


def insert_commands(conn: sqlite3.Connection, rows: Iterable[CommandRow]) -> None:
    conn.executemany(_INSERT_COMMAND, rows)


def insert_transfers(conn: sqlite3.Connection, rows: Iterable[TransferRow]) -> None:
    conn.executemany(_INSERT_TRANSFER, rows)


def find_lost_by_pid(
    conn: sqlite3.Connection, host: str, pid: int, oldest: float, newest: float
) -> LostRow | None:
    """The newest session of ``host`` lost with monitor ``pid`` that started in the window."""
    row = conn.execute(
        "SELECT id, start, detail, user FROM sessions WHERE pid = ? AND state = ? "
        "AND host IS ? AND start BETWEEN ? AND ? ORDER BY start DESC LIMIT 1",
        (pid, LOST, host, oldest, newest),
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2], row[3])


def find_lost_by_addr(
    conn: sqlite3.Connection,
    host: str,
    ip: str,
    port: int | None,
    oldest: float,
    newest: float,
) -> LostRow | None:
    """The newest session of ``host`` lost from ``ip`` port ``port`` started in the window."""
    row = conn.execute(
        "SELECT id, start, detail, user FROM sessions WHERE ip = ? AND port = ? "
        "AND state = ? AND host IS ? AND start BETWEEN ? AND ? "
        "ORDER BY start DESC LIMIT 1",
        (ip, port, LOST, host, oldest, newest),
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2], row[3])


def close_lost(
    conn: sqlite3.Connection, session_id: int, end: float, reason: str, detail: str | None
) -> None:
    """A session closed as lost did end after all: store its real end."""
    conn.execute(
        "UPDATE sessions SET state = ?, end = ?, end_reason = ?, detail = ? WHERE id = ?",
        (CLOSED, end, reason, detail, session_id),
    )


def session_of_audit_ses(
    conn: sqlite3.Connection, host: str, ses: int, before: float
) -> int | None:
    """The newest session of ``host`` tied to audit session ``ses`` that started by
    ``before``."""
    row = conn.execute(
        "SELECT id FROM sessions WHERE audit_ses = ? AND host IS ? AND start <= ? "
        "ORDER BY start DESC LIMIT 1",
        (ses, host, before),
    ).fetchone()
    return None if row is None else int(row[0])


def claim_commands(
    conn: sqlite3.Connection,
    session_id: int,
    attribution: str,
    ses: int,
    host: str,
    since: float,
) -> int:
    """Give the unattributed commands of audit session ``ses`` (on ``host``, from ``since``)
    to the session; return how many."""
    return conn.execute(
        "UPDATE commands SET session_id = ?, attribution = ? WHERE session_id IS NULL "
        "AND audit_ses = ? AND host IS ? AND ts >= ?",
        (session_id, attribution, ses, host, since),
    ).rowcount


def count_command(conn: sqlite3.Connection, session_id: int, ts: float) -> None:
    """One more command for a session that is no longer in the tracker's index."""
    conn.execute(
        "UPDATE sessions SET commands = commands + 1, last_seen = MAX(last_seen, ?) WHERE id = ?",
        (ts, session_id),
    )


# ---------------------------------------------------------------------------- retention

# table → (time column, extra condition). Sessions still open are never pruned.
PRUNE_TABLES: dict[str, tuple[str, str]] = {
    "events": ("ts", ""),
    "commands": ("ts", ""),
    "transfers": ("ts", ""),
    "sessions": ("start", f" AND state != '{OPEN}' AND COALESCE(end, start) < ?"),
}
PRUNE_BATCH = 1000


def prune_batch(
    conn: sqlite3.Connection, table: str, cutoff: float, limit: int = PRUNE_BATCH
) -> int:
    """Delete up to ``limit`` rows of ``table`` older than ``cutoff``; return how many.

    One short statement (its own transaction, autocommit): the pipeline's next commit waits
    at most for one batch.
    """
    col, extra = PRUNE_TABLES[table]
    params: tuple[Any, ...] = (cutoff, cutoff, limit) if extra else (cutoff, limit)
    cur = conn.execute(
        f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {col} < ?{extra} LIMIT ?)",
        params,
    )
    return cur.rowcount


# ---------------------------------------------------------------------------- the audit CLI

# Tables the CLI may filter by address (names are never taken from input).
_ADDRESS_TABLES = frozenset({"sessions", "events"})


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def distinct_addresses(conn: sqlite3.Connection, table: str) -> Iterator[str]:
    """Every address stored in ``table`` (``sessions`` or ``events``): a scan of its ip
    index, not of its rows."""
    if table not in _ADDRESS_TABLES:
        raise ValueError(f"no addresses in table {table!r}")
    for (ip_text,) in conn.execute(f"SELECT DISTINCT ip FROM {table} WHERE ip IS NOT NULL"):
        yield ip_text


def _address_clause(addresses: list[str], single: bool) -> tuple[str, list[Any]]:
    # One address: a plain equality (the ip index); a network: the addresses it matched.
    if single and len(addresses) == 1:
        return "ip = ?", [addresses[0]]
    return "ip IN (SELECT value FROM json_each(?))", [json.dumps(addresses)]


def list_sessions(
    conn: sqlite3.Connection,
    *,
    user: str | None = None,
    addresses: list[str] | None = None,
    single_address: bool = False,
    active: bool = False,
    since: float | None = None,
    until: float | None = None,
    limit: int = 0,
) -> list[sqlite3.Row]:
    """Sessions, newest first. ``addresses``: only sessions from one of these (None: any);
    ``single_address``: it is one address, not the matches of a network; ``limit`` 0: all."""
    where: list[str] = []
    params: list[Any] = []
    if user:
        where.append("user = ?")
        params.append(user)
    if addresses is not None:
        clause, values = _address_clause(addresses, single_address)
        where.append(clause)
        params.extend(values)
    if active:
        where.append("state = 'open'")
    if since is not None:
        where.append("start >= ?")
        params.append(since)
    if until is not None:
        where.append("start <= ?")
        params.append(until)
    sql = f"SELECT {SESSION_COLUMNS} FROM sessions"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY start DESC, id DESC"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return conn.execute(sql, params).fetchall()


def get_session(conn: sqlite3.Connection, session_id: int) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)
    ).fetchone()
    return row


def session_commands(conn: sqlite3.Connection, session_id: int) -> list[sqlite3.Row]:
    """The session's commands in stream order."""
    return conn.execute(
        "SELECT id, ts, seq, kind, user, runas, tty, cwd, command, attribution, detail "
        "FROM commands WHERE session_id = ? ORDER BY ts, seq",
        (session_id,),
    ).fetchall()


def session_transfers(conn: sqlite3.Connection, session_id: int) -> list[sqlite3.Row]:
    """The session's file operations in stream order."""
    return conn.execute(
        "SELECT id, ts, seq, pid, op, path, new_path, bytes_read, bytes_written, attribution, "
        "detail FROM transfers WHERE session_id = ? ORDER BY ts, seq",
        (session_id,),
    ).fetchall()


def list_events(
    conn: sqlite3.Connection,
    *,
    addresses: list[str] | None = None,
    single_address: bool = False,
    user: str | None = None,
    kinds: list[str] | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 0,
) -> Iterable[sqlite3.Row]:
    """Stored events, oldest first; with ``limit``, the newest ``limit`` of them (still
    oldest first). Without a limit the rows are streamed, not read into memory."""
    where: list[str] = []
    params: list[Any] = []
    if addresses is not None:
        clause, values = _address_clause(addresses, single_address)
        where.append(clause)
        params.extend(values)
    if user:
        where.append("user = ?")
        params.append(user)
    if kinds:
        where.append(f"kind IN ({', '.join('?' * len(kinds))})")
        params.extend(kinds)
    if since is not None:
        where.append("ts >= ?")
        params.append(since)
    if until is not None:
        where.append("ts <= ?")
        params.append(until)
    sql = (
        "SELECT id, ts, host, program, pid, kind, user, ip, port, method, key_fp, count, "
        "detail FROM events"
    )
    if where:
        sql += " WHERE " + " AND ".join(where)
    if limit:
        sql += f" ORDER BY ts DESC, id DESC LIMIT {int(limit)}"
        return reversed(conn.execute(sql, params).fetchall())
    sql += " ORDER BY ts, id"
    return conn.execute(sql, params)
