"""The alert spool and the throttle state: every SQL statement of notify/queue.py.

A spool row is one thing to deliver on one channel. ``kind`` says what it holds:

* ``alert``: one alert (``Alert.to_dict`` as JSON); due alerts of a channel are rendered
  together as a digest, and ``batch`` records the message id they were last sent in;
* ``message``: a message rendered before it was spooled (the daily report: subject, text, HTML
  and id as JSON), sent as it is; ``batch`` is its id from the start, so it never joins a
  digest and a second row for the same message (the same report slot) goes out as one.

Writers run inside their own transaction (``Store.transaction``) on the store thread; every
function takes the store's connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import NamedTuple

ALERT = "alert"
MESSAGE = "message"


class SpoolRow(NamedTuple):
    id: int
    doc: str  # JSON: an alert, or a prepared message
    attempts: int
    batch: str | None
    kind: str


class ThrottleRow(NamedTuple):
    key: str
    last_sent: float
    severity: int
    folded: int
    folded_since: float | None


def load_throttle(conn: sqlite3.Connection) -> list[ThrottleRow]:
    return [
        ThrottleRow(*r)
        for r in conn.execute(
            "SELECT key, last_sent, severity, folded, folded_since FROM alert_throttle"
        )
    ]


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM alert_spool").fetchone()[0])


def depth(conn: sqlite3.Connection) -> tuple[int, float | None]:
    """(rows waiting, when the oldest was spooled)."""
    n, oldest = conn.execute("SELECT COUNT(*), MIN(created) FROM alert_spool").fetchone()
    return int(n), None if oldest is None else float(oldest)


def retry_now(conn: sqlite3.Connection, now: float) -> None:
    """Make every row waiting for a later retry due at ``now``."""
    conn.execute("UPDATE alert_spool SET next_attempt = ? WHERE next_attempt > ?", (now, now))


def add_alerts(
    conn: sqlite3.Connection, rows: Iterable[tuple[str, str, float, float, int]]
) -> None:
    """Spool alerts: (channel, alert JSON, created, next attempt, severity rank) each."""
    conn.executemany(
        "INSERT INTO alert_spool(channel, alert, created, next_attempt, severity, "
        "attempts, kind) VALUES (?, ?, ?, ?, ?, 0, 'alert')",
        rows,
    )


def add_message(
    conn: sqlite3.Connection,
    channels: Iterable[str],
    doc: str,
    message_id: str,
    now: float,
    severity: int,
) -> int:
    """Spool one prepared message for each of ``channels``, due at once and pinned to its id.
    Returns the number of rows written."""
    rows = [(c, doc, now, now, severity, message_id) for c in channels]
    conn.executemany(
        "INSERT INTO alert_spool(channel, alert, created, next_attempt, severity, attempts, "
        "batch, kind) VALUES (?, ?, ?, ?, ?, 0, ?, 'message')",
        rows,
    )
    return len(rows)


def save_throttle(conn: sqlite3.Connection, rows: Iterable[ThrottleRow]) -> None:
    conn.executemany(
        "INSERT INTO alert_throttle(key, last_sent, severity, folded, folded_since) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET last_sent = "
        "excluded.last_sent, severity = excluded.severity, folded = excluded.folded,"
        " folded_since = excluded.folded_since",
        rows,
    )


def next_due(conn: sqlite3.Connection) -> float | None:
    """When the earliest row is due (None: the spool is empty)."""
    value = conn.execute("SELECT MIN(next_attempt) FROM alert_spool").fetchone()[0]
    return None if value is None else float(value)


def older_than(conn: sqlite3.Connection, cutoff: float) -> list[tuple[int, str, str, str]]:
    """(id, channel, JSON, kind) of rows created before ``cutoff``."""
    return [
        (int(r[0]), str(r[1]), str(r[2]), str(r[3]))
        for r in conn.execute(
            "SELECT id, channel, alert, kind FROM alert_spool WHERE created < ?", (cutoff,)
        )
    ]


def channels_of_rows(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    """(id, channel) of every row."""
    return [(int(r[0]), str(r[1])) for r in conn.execute("SELECT id, channel FROM alert_spool")]


def delete(conn: sqlite3.Connection, ids: Iterable[int]) -> None:
    conn.executemany("DELETE FROM alert_spool WHERE id = ?", [(i,) for i in ids])


def first_due_batch(conn: sqlite3.Connection, channel: str, now: float) -> tuple[bool, str | None]:
    """Is a row of ``channel`` due at ``now``, and the message it is pinned to (rows tried
    before, and prepared messages, come first)?"""
    first = conn.execute(
        "SELECT batch FROM alert_spool WHERE channel = ? AND next_attempt <= ? "
        "ORDER BY batch IS NULL, id LIMIT 1",
        (channel, now),
    ).fetchone()
    if first is None:
        return False, None
    return True, first[0]


_ROW = "SELECT id, alert, attempts, batch, kind FROM alert_spool "


def _rows(cur: sqlite3.Cursor) -> list[SpoolRow]:
    return [SpoolRow(int(r[0]), str(r[1]), int(r[2]), r[3], str(r[4])) for r in cur]


def batch_rows(conn: sqlite3.Connection, channel: str, batch: str) -> list[SpoolRow]:
    """The rows of ``channel`` pinned to message ``batch``, in spool order."""
    return _rows(
        conn.execute(_ROW + "WHERE channel = ? AND batch = ? ORDER BY id", (channel, batch))
    )


def fresh_alerts(
    conn: sqlite3.Connection, channel: str, now: float, limit: int
) -> list[SpoolRow]:
    """Unpinned alert rows of ``channel`` that are due, or never tried (they ride along in
    the same digest rather than wait for their own window)."""
    return _rows(
        conn.execute(
            _ROW + "WHERE channel = ? AND batch IS NULL AND kind = 'alert' AND "
            "(next_attempt <= ? OR attempts = 0) ORDER BY id LIMIT ?",
            (channel, now, limit),
        )
    )


def pin(conn: sqlite3.Connection, ids: Iterable[int], batch: str) -> None:
    conn.executemany("UPDATE alert_spool SET batch = ? WHERE id = ?", [(batch, i) for i in ids])


def suppress(conn: sqlite3.Connection, channel: str, now: float, below: int) -> int:
    """Delete the due alert rows of ``channel`` less severe than ``below`` (the hourly cap);
    return how many. Prepared messages are never suppressed."""
    return int(
        conn.execute(
            "DELETE FROM alert_spool WHERE channel = ? AND kind = 'alert' AND severity < ? AND "
            "(next_attempt <= ? OR attempts = 0)",
            (channel, below, now),
        ).rowcount
    )


def reschedule(
    conn: sqlite3.Connection, ids: Iterable[int], attempts: int, due: float, error: str
) -> None:
    conn.executemany(
        "UPDATE alert_spool SET attempts = ?, next_attempt = ?, last_error = ? WHERE id = ?",
        [(attempts, due, error[:500], i) for i in ids],
    )
