"""The ``bans`` table: every SQL statement the ban manager runs, as typed functions.

Each takes the caller's connection and runs inside the caller's transaction (the ban manager
and the pipeline open it). Rows are found by ``(net, created)``: a row id handed out inside a
transaction that may still roll back is never kept.
"""

from __future__ import annotations

import sqlite3
from typing import Any, NamedTuple


class BanRow(NamedTuple):
    id: int
    net: str
    rule: str
    reason: str
    offence: int
    created: float
    expires: float
    dry_run: bool


_COLS = "id, net, rule, reason, offence, created, expires, dry_run"
_LIFT = "UPDATE bans SET active = 0, lifted = ?, lifted_by = ? "


def _row(r: sqlite3.Row | tuple[Any, ...]) -> BanRow:
    return BanRow(
        int(r[0]),
        str(r[1]),
        str(r[2]),
        str(r[3]),
        int(r[4]),
        float(r[5]),
        float(r[6]),
        bool(r[7]),
    )


def active(conn: sqlite3.Connection, now: float) -> list[BanRow]:
    """Bans still running at ``now``, oldest first."""
    return [
        _row(r)
        for r in conn.execute(
            f"SELECT {_COLS} FROM bans WHERE active = 1 AND expires > ? ORDER BY created",
            (now,),
        )
    ]


def offence_counts(conn: sqlite3.Connection, dry_run: bool) -> dict[str, int]:
    """Past bans per network (of this dry-run mode): the escalation's memory."""
    return {
        str(net): int(n)
        for net, n in conn.execute(
            "SELECT net, COUNT(*) FROM bans WHERE dry_run = ? GROUP BY net", (int(dry_run),)
        )
    }


def lift_id(conn: sqlite3.Connection, ban_id: int, when: float, by: str) -> None:
    conn.execute(_LIFT + "WHERE id = ?", (when, by, ban_id))


def lift_expired(conn: sqlite3.Connection, now: float) -> None:
    """End the rows still marked active whose time ran out (lifted = now: found at start)."""
    conn.execute(_LIFT + "WHERE active = 1 AND expires <= ?", (now, "expired", now))


def rename(conn: sqlite3.Connection, ban_id: int, net: str) -> None:
    """Store a row's network in its normalised spelling."""
    conn.execute("UPDATE bans SET net = ? WHERE id = ?", (net, ban_id))


def find(
    conn: sqlite3.Connection, net: str, created: float, dry_run: bool
) -> tuple[int, bool] | None:
    """(id, active) of the row of the ban ``(net, created)``, if it was written."""
    row = conn.execute(
        "SELECT id, active FROM bans WHERE net = ? AND created = ? AND dry_run = ?",
        (net, created, int(dry_run)),
    ).fetchone()
    return None if row is None else (int(row[0]), bool(row[1]))


def insert(
    conn: sqlite3.Connection,
    net: str,
    rule: str,
    reason: str,
    offence: int,
    created: float,
    expires: float,
    dry_run: bool,
    ended: tuple[float, str] | None = None,
) -> None:
    """Write a ban's row; ``ended`` (when, by): it ended before its row existed."""
    lifted, by = ended if ended is not None else (None, None)
    conn.execute(
        "INSERT INTO bans(net, rule, reason, offence, created, expires, active, lifted, "
        "lifted_by, dry_run) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            net,
            rule,
            reason,
            offence,
            created,
            expires,
            0 if ended is not None else 1,
            lifted,
            by,
            int(dry_run),
        ),
    )


def lift_ban(conn: sqlite3.Connection, net: str, created: float, when: float, by: str) -> None:
    """End the ban ``(net, created)`` if its row still says active."""
    conn.execute(_LIFT + "WHERE net = ? AND created = ? AND active = 1", (when, by, net, created))


def lift_others(conn: sqlite3.Connection, net: str, keep_created: float, when: float) -> None:
    """A new ban on ``net`` replaces the older ones still active."""
    conn.execute(
        _LIFT + "WHERE net = ? AND active = 1 AND created != ?",
        (when, "replaced", net, keep_created),
    )


def lift_net(conn: sqlite3.Connection, net: str, when: float, by: str) -> int:
    """End every active ban on ``net``; how many rows there were."""
    return int(conn.execute(_LIFT + "WHERE net = ? AND active = 1", (when, by, net)).rowcount)
