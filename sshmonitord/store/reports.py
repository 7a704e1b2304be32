"""The report's reads: every SQL statement of ``sshmonitor report`` and the daily report.

Read-only, on whatever connection the caller holds (the report opens its own read-only one, so
it never blocks the writer). The report also runs against stores of other schema versions, so
callers look up tables and columns first (:func:`tables`) and pass the column names they found;
those names come from the database's own schema, never from a log line, and are quoted.

Queries use the events indexes (``events(kind, ts)``, ``events(ip, ts)``, ``events(ts)``) and
bucket in SQL; bench numbers are in docs/alerts.md ("Reports").
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

# One failure as sshd counts it: its own "Failed <method>" line, not PAM's restatement.
FAILED_LINE = "kind = 'auth_failure' AND (method IS NULL OR method <> 'pam')"

BAN_COLUMNS = (
    "net",
    "rule",
    "reason",
    "offence",
    "created",
    "expires",
    "active",
    "lifted",
    "lifted_by",
    "dry_run",
)

Row = tuple[Any, ...]


def tables(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """Every table in the database and its columns (the schema may be older or newer)."""
    out: dict[str, list[str]] = {}
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for name in names:
        out[name] = [r[1] for r in conn.execute(f'PRAGMA table_info("{name}")')]
    return out


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def count_kind(conn: sqlite3.Connection, kind: str, since: float, until: float) -> int:
    """Events of one kind in ``[since, until)``: index-only on ``(kind, ts)``."""
    return int(
        conn.execute(
            "SELECT COUNT(*) FROM events WHERE kind = ? AND ts >= ? AND ts < ?",
            (kind, since, until),
        ).fetchone()[0]
    )


def _bucket(origin: float, bucket: float, col: str = "ts") -> str:
    return f"CAST(({col} - {float(origin)!r}) / {float(bucket)!r} AS INTEGER)"


def failure_buckets(
    conn: sqlite3.Connection, origin: float, bucket: float, since: float, until: float
) -> list[Row]:
    """(ip, bucket, failures, first, last) per address and chart bucket."""
    return conn.execute(
        f"SELECT ip, {_bucket(origin, bucket)} AS b, SUM(count), MIN(ts), MAX(ts) FROM events "
        f"WHERE {FAILED_LINE} AND ts >= ? AND ts < ? GROUP BY ip, b",
        (since, until),
    ).fetchall()


def unmatched_invalid_buckets(
    conn: sqlite3.Connection,
    origin: float,
    bucket: float,
    since: float,
    until: float,
    window: float,
) -> list[Row]:
    """(ip, bucket, count, first, last) of "Invalid user" lines that no ``Failed`` line from
    the same address and port follows within ``window`` seconds."""
    sql = (
        f"SELECT e.ip, {_bucket(origin, bucket, 'e.ts')} AS b, "
        "COUNT(*), MIN(e.ts), MAX(e.ts) FROM events AS e "
        "WHERE e.kind = 'invalid_user' AND e.ts >= ? AND e.ts < ? AND NOT EXISTS ("
        "SELECT 1 FROM events AS f INDEXED BY events_ip_ts "
        "WHERE f.ip = e.ip AND f.ts >= e.ts AND f.ts <= e.ts + ? "
        "AND f.kind = 'auth_failure' AND (f.method IS NULL OR f.method <> 'pam') "
        "AND (e.port IS NULL OR f.port IS NULL OR f.port = e.port)) "
        "GROUP BY e.ip, b"
    )
    params = (since, until, window)
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # an index missing: same query, planner's choice
        return conn.execute(sql.replace(" INDEXED BY events_ip_ts", ""), params).fetchall()


def users_tried(conn: sqlite3.Connection, ip: str, since: float, until: float) -> int:
    """How many distinct user names ``ip`` failed with or tried as invalid."""
    n = conn.execute(
        "SELECT COUNT(DISTINCT user) FROM events WHERE ip = ? AND ts >= ? AND ts < ? "
        "AND kind IN ('auth_failure', 'invalid_user')",
        (ip, since, until),
    ).fetchone()[0]
    return int(n or 0)


def invalid_user_groups(conn: sqlite3.Connection, since: float, until: float) -> list[Row]:
    """(user, count, addresses, first, last) per invalid user name, unordered."""
    return conn.execute(
        "SELECT user, COUNT(*) AS n, COUNT(DISTINCT ip), MIN(ts), MAX(ts) FROM events "
        "WHERE kind = 'invalid_user' AND ts >= ? AND ts < ? GROUP BY user",
        (since, until),
    ).fetchall()


def account_groups(conn: sqlite3.Connection, since: float, until: float) -> list[Row]:
    """(user, failures, addresses, first, last) per existing account attacked, most first."""
    return conn.execute(
        "SELECT user, SUM(count) AS n, COUNT(DISTINCT ip), MIN(ts), MAX(ts) FROM events "
        f"WHERE {FAILED_LINE} AND ts >= ? AND ts < ? AND user IS NOT NULL "
        "AND (detail IS NULL OR json_extract(detail, '$.invalid_user') IS NOT 1) "
        "GROUP BY user ORDER BY n DESC, MIN(ts)",
        (since, until),
    ).fetchall()


def login_groups(conn: sqlite3.Connection, since: float, until: float) -> list[Row]:
    """(user, ip, method, count, first, last, "fp1,fp2") per successful login group."""
    return conn.execute(
        "SELECT user, ip, method, COUNT(*), MIN(ts), MAX(ts), "
        "GROUP_CONCAT(DISTINCT key_fp) FROM events "
        "WHERE kind = 'auth_success' AND ts >= ? AND ts < ? "
        "GROUP BY user, ip, method ORDER BY MIN(ts)",
        (since, until),
    ).fetchall()


def bans_overlapping(conn: sqlite3.Connection, since: float, until: float) -> list[dict[str, Any]]:
    """Bans that existed at some moment of ``[since, until)`` (or were placed in it), oldest
    first, as dicts keyed by :data:`BAN_COLUMNS`."""
    return [
        dict(zip(BAN_COLUMNS, r, strict=True))
        for r in conn.execute(
            "SELECT net, rule, reason, offence, created, expires, active, lifted, lifted_by, "
            "dry_run FROM bans WHERE created < ? AND expires >= ? "
            "AND (lifted IS NULL OR lifted >= ?) ORDER BY created",
            (until, since, since),
        )
    ]


def finding_groups(conn: sqlite3.Connection, since: float, until: float) -> list[Row]:
    """(rule, severity, count, distinct subjects) of the findings raised in the period."""
    return conn.execute(
        "SELECT rule, severity, COUNT(*), COUNT(DISTINCT subject) FROM findings "
        "WHERE ts >= ? AND ts < ? GROUP BY rule, severity",
        (since, until),
    ).fetchall()


def notable_findings(
    conn: sqlite3.Connection, since: float, until: float, rules: Iterable[str], limit: int
) -> tuple[list[Row], int]:
    """The newest ``limit`` findings that are critical or of one of ``rules`` as
    (ts, rule, severity, subject, summary), and how many there are in all."""
    names = sorted(rules)
    marks = ",".join("?" * len(names))
    where = f"WHERE ts >= ? AND ts < ? AND (severity = 'critical' OR rule IN ({marks}))"
    rows = conn.execute(
        f"SELECT ts, rule, severity, subject, summary FROM findings {where} "
        "ORDER BY ts DESC LIMIT ?",
        (since, until, *names, limit),
    ).fetchall()
    total = conn.execute(
        f"SELECT COUNT(*) FROM findings {where}", (since, until, *names)
    ).fetchone()[0]
    return rows, int(total)


def spool_pending(conn: sqlite3.Connection) -> list[Row]:
    """(channel, rows, oldest created, most attempts) of what waits in the alert spool."""
    return conn.execute(
        "SELECT channel, COUNT(*), MIN(created), MAX(attempts) FROM alert_spool "
        "GROUP BY channel ORDER BY channel"
    ).fetchall()


def session_rows(
    conn: sqlite3.Connection,
    columns: Iterable[str | None],
    start: str,
    end: str,
    since: float,
    until: float,
) -> list[Row]:
    """Sessions overlapping the period: ``columns`` (None: NULL) of the ``sessions`` table,
    whose start and end columns are named ``start`` and ``end``, oldest first."""
    select = ", ".join(f'"{c}"' if c else "NULL" for c in columns)
    return conn.execute(
        f'SELECT {select} FROM sessions WHERE "{start}" < ? '
        f'AND ("{end}" IS NULL OR "{end}" >= ?) ORDER BY "{start}"',
        (until, since),
    ).fetchall()


def count_rows(conn: sqlite3.Connection, table: str, ts: str, since: float, until: float) -> int:
    """Rows of ``table`` whose ``ts`` column is in the period."""
    return int(
        conn.execute(
            f'SELECT COUNT(*) FROM "{table}" WHERE "{ts}" >= ? AND "{ts}" < ?', (since, until)
        ).fetchone()[0]
    )


def count_by(
    conn: sqlite3.Connection, table: str, ts: str, key: str, since: float, until: float
) -> dict[str, int]:
    """Rows of ``table`` in the period per value of ``key``, most first."""
    return {
        str(k): int(c)
        for k, c in conn.execute(
            f'SELECT "{key}", COUNT(*) AS c FROM "{table}" WHERE "{ts}" >= ? AND "{ts}" < ? '
            f'GROUP BY "{key}" ORDER BY c DESC, "{key}"',
            (since, until),
        )
    }


def sum_column(
    conn: sqlite3.Connection, table: str, ts: str, col: str, since: float, until: float
) -> int:
    """The sum of ``col`` over the rows of ``table`` in the period (0 for none)."""
    return int(
        conn.execute(
            f'SELECT COALESCE(SUM("{col}"), 0) FROM "{table}" WHERE "{ts}" >= ? AND "{ts}" < ?',
            (since, until),
        ).fetchone()[0]
    )
