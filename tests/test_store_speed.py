"""The daemon path's store work made cheaper (issue #17), held to what it stored before.

Real SQLite stores.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from sshmonitord.events import Event, Kind, Login
from sshmonitord.store import Store, connect, event_row
from sshmonitord.store import history as history_store


def _old_event_row(ev: Event) -> tuple[Any, ...]:
    """event_row as it was written before (json.dumps per row, str() of the kind)."""
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


def test_event_row_is_what_it_was() -> None:
    ts = datetime(2026, 11, 24, 12, 0, 1, 123456, tzinfo=UTC)
    events = [
        Event(ts, "web1", "sshd", 7, Kind.AUTH_FAILURE, "root", ip_address("203.0.113.5"), 22),
        Event(
            ts,
            "wéb",
            "sshd",
            None,
            Kind.INVALID_USER,
            "ünïcode\u202e",
            ip_address("2001:db8::1"),
            detail={"invalid_user": True, "what": "naïve \"quoted\"\n", "n": 3, "f": -0.0},
            raw="raw \x00 line",
        ),
        # A value json cannot encode is written with str(), as before.
        Event(ts, "h", "sudo", 1, Kind.SUDO, "alice", detail={"at": ts, "x": None}),
        Event(ts, "h", "sshd", 2, Kind.AUTH_SUCCESS, "bob", key_fp="SHA256:abc", count=3,
              session="s1", detail={}),
    ]  # fmt: skip
    assert [event_row(e) for e in events] == [_old_event_row(e) for e in events]


def test_history_save_keeps_first_seen_and_moves_last_seen(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.open()
    try:
        logins = [
            Login("alice", "192.0.2.0/24", "SHA256:k1", 100.0),
            Login("alice", "192.0.2.0/24", None, 300.0),
            Login("alice", "192.0.2.0/24", "SHA256:k1", 200.0),  # older: last_seen stays
            Login("bob", None, "SHA256:k2", 50.0),
        ]
        with s.transaction():
            history_store.save(s.conn, logins)
        with s.transaction():
            history_store.save(s.conn, [Login("alice", "192.0.2.0/24", "SHA256:k1", 10.0)])
        src = s.conn.execute("SELECT user, prefix, first_seen, last_seen FROM login_sources")
        keys = s.conn.execute(
            "SELECT user, key_fp, first_seen, last_seen FROM login_keys ORDER BY user"
        )
        assert [tuple(r) for r in src] == [("alice", "192.0.2.0/24", 100.0, 300.0)]
        assert [tuple(r) for r in keys] == [
            ("alice", "SHA256:k1", 100.0, 200.0),
            ("bob", "SHA256:k2", 50.0, 50.0),
        ]
        with s.transaction():
            history_store.save(s.conn, [])  # nothing to write: no statement fails
    finally:
        s.close()


def test_the_writer_keeps_a_cache_and_checkpoints_less_often(tmp_path: Path) -> None:
    conn = connect(tmp_path / "x.db")
    try:
        assert conn.execute("PRAGMA cache_size").fetchone()[0] <= -32 * 1024
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] >= 4000
    finally:
        conn.close()
    ro = connect(tmp_path / "x.db", readonly=True)
    try:  # operator commands keep SQLite's defaults
        assert ro.execute("PRAGMA cache_size").fetchone()[0] == -2000
    finally:
        ro.close()
