"""The schema: append-only migrations, applied forward at open (``PRAGMA user_version``)."""

from __future__ import annotations

import sqlite3


class SchemaError(Exception):
    """The database's schema cannot be used by this version."""


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
        # Written by sshmonitord/audit/tracker.py through store/sessions.py (see
        # docs/audit-trail.md). No foreign keys:
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
    (
        8,
        "alert spool: rows that hold a prepared message (the daily report), not an alert",
        # The report goes out through the spool for the alerts' retries and durability; such a
        # row is sent as it is, never folded into a digest (store/spool.py).
        """
        ALTER TABLE alert_spool ADD COLUMN kind TEXT NOT NULL DEFAULT 'alert';
        """,
    ),
    (
        9,
        "fleet: the outbox of records to ship, and the attempts local detection counted",
        # The outbox is filled by triggers that exist only while a fleet is configured
        # (store/outbox.py); AUTOINCREMENT so a sequence number is never handed out twice,
        # even after the newest rows are deleted: (host, seq) is the fleet's idempotency key.
        # payload: the record itself, for rows deleted soon after (an alert leaves the spool
        # when it is sent). events.attempt: the failed attempts detection counted for the
        # event (NULL: none),
        # what the fleet's cross-host rules add up.
        """
        CREATE TABLE outbox (
            seq     INTEGER PRIMARY KEY AUTOINCREMENT,
            tbl     TEXT    NOT NULL,
            row_id  INTEGER NOT NULL,
            payload TEXT
        );
        ALTER TABLE events ADD COLUMN attempt INTEGER;
        """,
    ),
]


def migrate(conn: sqlite3.Connection) -> tuple[int, int]:
    """Apply pending migrations; return (version before, version after)."""
    before = conn.execute("PRAGMA user_version").fetchone()[0]
    latest = MIGRATIONS[-1][0]
    if before > latest:
        raise SchemaError(
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
