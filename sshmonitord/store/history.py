"""The login history tables (``login_sources``, ``login_keys``): what new_source and new_key
judge a login against. Typed functions over the caller's connection, inside its transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import NamedTuple

from ..events import Login
from .rows import insert_rows


class StoredLogins(NamedTuple):
    sources: dict[str, set[str]]  # user -> prefixes
    keys: dict[str, set[str]]  # user -> key fingerprints
    since: float | None  # epoch of the first login ever recorded (learning start)


def save(conn: sqlite3.Connection, logins: Iterable[Login]) -> None:
    """Record logins: first_seen stays, last_seen moves forward. One statement per table for
    the whole batch (a busy host logs thousands of logins a batch; one execute each cost more
    than the batch's events)."""
    sources: list[tuple[str, str, float, float]] = []
    keys: list[tuple[str, str, float, float]] = []
    for user, prefix, key_fp, ts in logins:
        if prefix is not None:
            sources.append((user, prefix, ts, ts))
        if key_fp:
            keys.append((user, key_fp, ts, ts))
    if sources:
        insert_rows(
            conn,
            "INSERT INTO login_sources(user, prefix, first_seen, last_seen) VALUES "
            "(?, ?, ?, ?) ON CONFLICT(user, prefix) DO UPDATE SET last_seen = "
            "max(last_seen, excluded.last_seen)",
            sources,
        )
    if keys:
        insert_rows(
            conn,
            "INSERT INTO login_keys(user, key_fp, first_seen, last_seen) VALUES "
            "(?, ?, ?, ?) ON CONFLICT(user, key_fp) DO UPDATE SET last_seen = "
            "max(last_seen, excluded.last_seen)",
            keys,
        )


def load(conn: sqlite3.Connection) -> StoredLogins:
    """Every source and key each user logged in with, and when learning began."""
    sources: dict[str, set[str]] = {}
    keys: dict[str, set[str]] = {}
    since: float | None = None
    for user, prefix, first in conn.execute("SELECT user, prefix, first_seen FROM login_sources"):
        sources.setdefault(user, set()).add(prefix)
        since = first if since is None else min(since, first)
    for user, fp, first in conn.execute("SELECT user, key_fp, first_seen FROM login_keys"):
        keys.setdefault(user, set()).add(fp)
        since = first if since is None else min(since, first)
    return StoredLogins(sources, keys, since)
