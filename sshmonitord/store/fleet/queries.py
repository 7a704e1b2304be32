"""Fleet-wide reads for operator commands (``sshmonitor fleet status``, ``--fleet``).

Synchronous psycopg: a command runs one query and prints it. Every statement is here.
"""

from __future__ import annotations

import time
from typing import Any

from . import schema as fs


def hosts(conn: Any) -> list[dict[str, Any]]:
    """Each host: last contact, backlog, version, lag, records shipped."""
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT name, role, version, extract(epoch FROM last_contact), backlog, lag, "
            f"shipped_seq - seq_base, seq_base, extract(epoch FROM first_contact) "
            f"FROM {fs.SCHEMA}.hosts ORDER BY name"
        )
        rows = cur.fetchall()
    now = time.time()
    return [
        {
            "host": r[0],
            "role": r[1],
            "version": r[2],
            "last_contact": None if r[3] is None else float(r[3]),
            "seconds_since_contact": None if r[3] is None else max(0.0, now - float(r[3])),
            "backlog": r[4],
            "lag": r[5],
            "shipped": int(r[6] or 0),
            "seq_base": int(r[7] or 0),
            "first_contact": None if r[8] is None else float(r[8]),
        }
        for r in rows
    ]


def leader(conn: Any) -> str | None:
    """The host holding the leader lease now (its role's name if it is no host's), or None."""
    with conn.cursor() as cur:
        cur.execute(
            f"""
            SELECT coalesce(h.name, a.usename::text)
            FROM pg_locks l
            JOIN pg_stat_activity a ON a.pid = l.pid
            LEFT JOIN {fs.SCHEMA}.hosts h ON h.role = a.usename
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND l.classid = ((hashtext(%s)::bigint >> 32) & 4294967295)::oid
              AND l.objid = (hashtext(%s)::bigint & 4294967295)::oid
            LIMIT 1
            """,
            (fs.LEADER_LOCK, fs.LEADER_LOCK),
        )
        row = cur.fetchone()
    return None if row is None else str(row[0])


def active_bans(conn: Any, host: str | None = None) -> list[dict[str, Any]]:
    """The fleet's running bans (each network's longest-running ban not lifted since)."""
    now = time.time()
    with conn.cursor() as cur:
        cur.execute(
            f"""
            SELECT DISTINCT ON (b.net) b.net::text, b.host, b.rule, b.reason, b.created,
                   b.expires
            FROM {fs.SCHEMA}.ban_log b
            WHERE b.action = 'ban' AND b.expires > %s AND (%s::text IS NULL OR b.host = %s)
              AND NOT EXISTS (SELECT 1 FROM {fs.SCHEMA}.ban_log u
                              WHERE u.net = b.net AND u.action = 'unban' AND u.id > b.id)
            ORDER BY b.net, b.expires DESC
            """,
            (now, host, host),
        )
        return [
            {
                "net": str(r[0]).removesuffix("/32").removesuffix("/128"),
                "host": r[1],
                "rule": r[2],
                "reason": r[3],
                "since": float(r[4]),
                "until": float(r[5]),
                "seconds_left": max(0, int(float(r[5]) - now)),
            }
            for r in cur.fetchall()
        ]


def events(
    conn: Any,
    since: float,
    host: str | None = None,
    ip: str | None = None,
    user: str | None = None,
    kind: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Events of the fleet (oldest first within the newest ``limit``)."""
    with conn.cursor() as cur:
        cur.execute(
            f"""
            SELECT * FROM (
                SELECT host, seq, ts, log_host, program, pid, kind, username, host(ip) AS ip, port,
                       method, key_fp, count, session, detail, raw, attempt
                FROM {fs.SCHEMA}.events
                WHERE ts >= %s AND (%s::text IS NULL OR host = %s)
                  AND (%s::text IS NULL OR ip = %s::inet)
                  AND (%s::text IS NULL OR username = %s)
                  AND (%s::text IS NULL OR kind = %s)
                ORDER BY ts DESC, host, seq DESC LIMIT %s
            ) t ORDER BY ts, host, seq
            """,
            (since, host, host, ip, ip, user, user, kind, kind, limit),
        )
        names = [d.name for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def sessions(
    conn: Any, since: float, host: str | None = None, user: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """The newest version of each session of the fleet that started since ``since``."""
    with conn.cursor() as cur:
        cur.execute(
            f"""
            SELECT host, local_id, username, host(ip) AS ip, port, method, key_fp, start,
                   ended, state, end_reason, commands, transfers, bytes_up, bytes_down, tty
            FROM {fs.SCHEMA}.sessions_current
            WHERE start >= %s AND (%s::text IS NULL OR host = %s)
              AND (%s::text IS NULL OR username = %s)
            ORDER BY start DESC, host LIMIT %s
            """,
            (since, host, host, user, user, limit),
        )
        names = [d.name for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in reversed(cur.fetchall())]


def fleet_findings(conn: Any, since: float) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT id, host, rule, subject, ts, severity, summary, attempts, hosts "
            f"FROM {fs.SCHEMA}.fleet_findings WHERE ts >= %s ORDER BY ts",
            (since,),
        )
        names = [d.name for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def session(conn: Any, host: str, local_id: int) -> dict[str, Any] | None:
    """One session of one host (its newest version), with its commands and file transfers
    (their newest versions), in time order."""
    with conn.cursor() as cur:
        cur.execute(
            f"""
            SELECT host, local_id, username, host(ip) AS ip, port, method, key_fp, program,
                   pid, start, ended, state, end_reason, tty, commands, transfers, bytes_up,
                   bytes_down, log_host
            FROM {fs.SCHEMA}.sessions_current WHERE host = %s AND local_id = %s
            """,
            (host, local_id),
        )
        row = cur.fetchone()
        if row is None:
            return None
        names = [d.name for d in cur.description]
        out: dict[str, Any] = dict(zip(names, row, strict=True))
        cur.execute(
            f"""
            SELECT ts, 'command' AS what, coalesce(runas, '') || ' ' || coalesce(command, '')
            FROM {fs.SCHEMA}.commands_current WHERE host = %s AND session_id = %s
            UNION ALL
            SELECT ts, op, coalesce(path, '') || coalesce(' -> ' || new_path, '')
            FROM {fs.SCHEMA}.transfers_current WHERE host = %s AND session_id = %s
            ORDER BY 1
            """,
            (host, local_id, host, local_id),
        )
        out["timeline"] = [{"ts": r[0], "what": r[1], "text": r[2]} for r in cur.fetchall()]
    return out


SNAPSHOT_MAX_EVENTS = 2_000_000  # a report over more: narrow it (--host, --since)


class TooMuch(Exception):
    """The period holds more fleet rows than a report copies (one line, for operators)."""


def snapshot(conn: Any, since: float, until: float, host: str | None = None) -> Any:
    """The fleet's records of ``[since, until)`` (one host's, or every host's) as an in-memory
    SQLite database with the local store's schema, so ``sshmonitor report`` runs its own
    queries on it unchanged. Versioned rows come as their newest version; a record's ``host``
    is the fleet host that shipped it."""
    import sqlite3

    from ..schema import migrate

    mem = sqlite3.connect(":memory:")
    mem.row_factory = sqlite3.Row
    migrate(mem)
    margin = 86400.0  # rows that began before the period but overlap it (sessions, bans)
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT count(*) FROM {fs.SCHEMA}.events WHERE ts >= %s AND ts < %s "
            "AND (%s::text IS NULL OR host = %s)",
            (since, until, host, host),
        )
        n = int(cur.fetchone()[0])
        if n > SNAPSHOT_MAX_EVENTS:
            raise TooMuch(
                f"{n:,} fleet events in that period (at most {SNAPSHOT_MAX_EVENTS:,} in one "
                "report): narrow it with --host NAME or --since"
            )
        for table, source, ts_col, lo in (
            ("events", "events", "ts", since),
            ("findings", "findings", "ts", since),
            ("sessions", "sessions_current", "start", 0.0),
            ("commands", "commands_current", "ts", since),
            ("transfers", "transfers_current", "ts", since),
            ("bans", "bans_current", "created", since - 365 * 86400),
        ):
            cols = [c for c in fs.COLUMNS[table] if c[0] != "id"]
            select = ", ".join(
                f"host(t.{f})"
                if tp.startswith("inet")
                else f"t.{f}::text"
                if tp.startswith(("jsonb", "cidr"))
                else f"t.{f}"
                for _l, f, tp in cols
            )
            local = [c[0] for c in cols]
            if "host" in local:  # the record's syslog host name: the fleet host instead
                select = select.replace("t.log_host", "t.host", 1)
            where = f"t.{ts_col} >= %s AND t.{ts_col} < %s"
            args: list[Any] = [lo, until]
            if table == "sessions":
                where = "t.start < %s AND (t.ended IS NULL OR t.ended >= %s)"
                args = [until, since - margin]
            cur.execute(
                f"SELECT {select} FROM {fs.SCHEMA}.{source} t WHERE {where} "
                "AND (%s::text IS NULL OR t.host = %s)",
                (*args, host, host),
            )
            names = ", ".join(f'"{c}"' for c in local)
            marks = ", ".join("?" * len(local))
            mem.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", cur.fetchall())
    mem.commit()
    return mem
