"""The outbox: what this host's store has written that the fleet's database has not got yet.

While a fleet is configured (docs/fleet.md), triggers append ``(seq, table, row id)`` to the
``outbox`` table in the same transaction as every record the fleet ships: events, findings,
sessions, commands, transfers and ban records (inserts, and the updates of the tables whose
rows change: a session ends, a command is tied to its login, a ban is lifted). ``seq`` is an
AUTOINCREMENT key, so it is never handed out twice, even after rows are deleted: with the
host's name it is the record's identity in the fleet, and shipping it twice stores it once.

The replicator (store/fleet/replicator.py) reads the outbox on its own read-only connection,
ships the rows as they are then, and the maintenance prunes what the fleet confirmed. The
triggers are dropped when the fleet is switched off, so a single host pays nothing for them.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

# The tables shipped, and whether their rows change after they are written.
SHIPPED: dict[str, bool] = {
    "events": False,
    "findings": False,
    "sessions": True,
    "commands": True,
    "transfers": True,
    "bans": True,
    "alert_spool": False,  # alerts as raised (kind 'alert'), with their payload
}
# Tables whose rows are gone soon after they are written: the trigger keeps the row itself.
PAYLOAD: dict[str, str] = {
    "alert_spool": "json_object('id', NEW.id, 'channel', NEW.channel, 'kind', NEW.kind, "
    "'severity', NEW.severity, 'created', NEW.created, 'alert', NEW.alert)",
}
WHEN: dict[str, str] = {"alert_spool": "WHEN NEW.kind = 'alert'"}

STORE_ID_KEY = "store_id"


def _trigger_names(table: str) -> list[str]:
    names = [f"outbox_{table}_insert"]
    if SHIPPED[table]:
        names.append(f"outbox_{table}_update")
    return names


def enable(conn: sqlite3.Connection, on: bool) -> bool:
    """Create (or drop) the outbox triggers; returns whether anything changed. Runs in its
    own transaction on the writing connection."""
    have = {
        r[0]
        for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        if str(r[0]).startswith("outbox_")
    }
    want = {name for table in SHIPPED for name in _trigger_names(table)} if on else set()
    if have == want:
        return False
    conn.execute("BEGIN IMMEDIATE")
    try:
        for name in sorted(have - want):
            conn.execute(f"DROP TRIGGER IF EXISTS {name}")
        for table, mutable in SHIPPED.items():
            if f"outbox_{table}_insert" in want - have:
                payload = PAYLOAD.get(table, "NULL")
                conn.execute(
                    f"CREATE TRIGGER outbox_{table}_insert AFTER INSERT ON {table} "
                    f"{WHEN.get(table, '')} BEGIN "
                    f"INSERT INTO outbox(tbl, row_id, payload) "
                    f"VALUES ('{table}', NEW.id, {payload}); END"
                )
            if mutable and f"outbox_{table}_update" in want - have:
                conn.execute(
                    f"CREATE TRIGGER outbox_{table}_update AFTER UPDATE ON {table} BEGIN "
                    f"INSERT INTO outbox(tbl, row_id) VALUES ('{table}', NEW.id); END"
                )
        if on:
            store_id(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return True


def store_id(conn: sqlite3.Connection) -> str:
    """This store's identity (made once): a fleet database tells a reinstalled host's new
    store from the old one by it, and numbers the new store's records after the old ones."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (STORE_ID_KEY,)).fetchone()
    if row is not None:
        return str(row[0])
    value = uuid.uuid4().hex
    conn.execute("INSERT INTO meta(key, value) VALUES (?, ?)", (STORE_ID_KEY, value))
    return value


def read_store_id(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (STORE_ID_KEY,)).fetchone()
    return None if row is None else str(row[0])


def pending(
    conn: sqlite3.Connection, after: int, limit: int
) -> list[tuple[int, str, int, str | None]]:
    """Outbox entries after ``after``, oldest first: (seq, table, row id, payload)."""
    return [
        (int(r[0]), str(r[1]), int(r[2]), r[3])
        for r in conn.execute(
            "SELECT seq, tbl, row_id, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        )
    ]


def backlog(conn: sqlite3.Connection, after: int) -> tuple[int, int]:
    """(entries after ``after``, the newest seq): what is still to ship."""
    row = conn.execute(
        "SELECT count(*), coalesce(max(seq), 0) FROM outbox WHERE seq > ?", (after,)
    ).fetchone()
    top = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
    return int(row[0]), max(int(row[1]), int(top[0]) if top else 0)


def rows(conn: sqlite3.Connection, table: str, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """The current rows of ``table`` with these ids (rows deleted since are absent)."""
    if table not in SHIPPED:
        raise ValueError(f"not a shipped table: {table}")
    out: dict[int, dict[str, Any]] = {}
    wanted = sorted(set(ids))
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        marks = ",".join("?" * len(chunk))
        cur = conn.execute(f"SELECT * FROM {table} WHERE id IN ({marks})", chunk)
        names = [d[0] for d in cur.description]
        for r in cur:
            row = dict(zip(names, r, strict=True))
            out[int(row["id"])] = row
    return out


def prune(conn: sqlite3.Connection, upto: int) -> int:
    """Forget entries the fleet has confirmed."""
    return conn.execute("DELETE FROM outbox WHERE seq <= ?", (upto,)).rowcount


def entries(conn: sqlite3.Connection) -> Sequence[tuple[int, str, int, str | None]]:
    """Every entry (tests and ``fleet status``)."""
    return pending(conn, 0, 1 << 62)
