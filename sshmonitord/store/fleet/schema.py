"""The fleet's PostgreSQL schema: versioned migrations, roles, row-level security.

Everything lives in the schema ``sshmonitor`` of the fleet's database. Each host connects
with its own login role, a member of the group role ``sshmonitor_host``; the table
``sshmonitor.hosts`` says which role writes as which host. The database, not our code,
enforces that a host role inserts only rows tagged with its own host and never updates or
deletes a shipped record (no such privilege is granted); the mutable rows — a host's own
status line, alert claims — are scoped by row-level security policies. The schema's owner
(whoever ran ``sshmonitor fleet init``) is not subject to the policies: it is the
administrator's role, never a host's.

Records shipped from a host's store keep the store's columns, renamed where PostgreSQL
reserves the word or the fleet needs the name: ``id`` → ``local_id``, ``user`` →
``username``, ``end`` → ``ended``, a record's own ``host`` (the syslog host name) →
``log_host``; the fleet's ``host`` is the host that shipped it. Rows that change on the host
(sessions, commands, transfers, ban records) arrive as versions: every change is a new row
with a new ``seq``, and the ``*_current`` views show the newest version of each.
"""

from __future__ import annotations

from typing import Any

SCHEMA = "sshmonitor"
GROUP_ROLE = "sshmonitor_host"
BAN_CHANNEL = "sshmonitor_bans"
# The advisory lock the fleet's leader holds (store/fleet/leader.py); schema version 2's
# holds_lead() names it too, so it never changes.
LEADER_LOCK = "sshmonitor.leader"

# The columns of each shipped table as the fleet stores them: (local name, fleet name, type).
COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "events": [
        ("id", "local_id", "bigint"),
        ("ts", "ts", "double precision NOT NULL"),
        ("host", "log_host", "text"),
        ("program", "program", "text"),
        ("pid", "pid", "bigint"),
        ("kind", "kind", "text NOT NULL"),
        ("user", "username", "text"),
        ("ip", "ip", "inet"),
        ("port", "port", "integer"),
        ("method", "method", "text"),
        ("key_fp", "key_fp", "text"),
        ("count", "count", "integer"),
        ("session", "session", "text"),
        ("detail", "detail", "jsonb"),
        ("raw", "raw", "text"),
        ("attempt", "attempt", "integer"),
    ],
    "findings": [
        ("id", "local_id", "bigint"),
        ("ts", "ts", "double precision NOT NULL"),
        ("rule", "rule", "text NOT NULL"),
        ("severity", "severity", "text NOT NULL"),
        ("subject", "subject", "text"),
        ("action", "action", "text"),
        ("summary", "summary", "text"),
        ("evidence", "evidence", "jsonb"),
        ("created", "created", "double precision"),
    ],
    "sessions": [
        ("id", "local_id", "bigint NOT NULL"),
        ("host", "log_host", "text"),
        ("user", "username", "text"),
        ("ip", "ip", "inet"),
        ("port", "port", "integer"),
        ("method", "method", "text"),
        ("key_fp", "key_fp", "text"),
        ("program", "program", "text"),
        ("pid", "pid", "bigint"),
        ("child_pid", "child_pid", "bigint"),
        ("start", "start", "double precision"),
        ("opened", "opened", "double precision"),
        ("end", "ended", "double precision"),
        ("state", "state", "text"),
        ("end_reason", "end_reason", "text"),
        ("last_seen", "last_seen", "double precision"),
        ("tty", "tty", "text"),
        ("logind_session", "logind_session", "text"),
        ("audit_ses", "audit_ses", "bigint"),
        ("commands", "commands", "integer"),
        ("transfers", "transfers", "integer"),
        ("bytes_up", "bytes_up", "bigint"),
        ("bytes_down", "bytes_down", "bigint"),
        ("detail", "detail", "jsonb"),
    ],
    "commands": [
        ("id", "local_id", "bigint NOT NULL"),
        ("session_id", "session_id", "bigint"),
        ("ts", "ts", "double precision"),
        ("seq", "stream_seq", "bigint"),
        ("host", "log_host", "text"),
        ("kind", "kind", "text"),
        ("user", "username", "text"),
        ("runas", "runas", "text"),
        ("tty", "tty", "text"),
        ("cwd", "cwd", "text"),
        ("command", "command", "text"),
        ("attribution", "attribution", "text"),
        ("audit_ses", "audit_ses", "bigint"),
        ("detail", "detail", "jsonb"),
    ],
    "transfers": [
        ("id", "local_id", "bigint NOT NULL"),
        ("session_id", "session_id", "bigint"),
        ("ts", "ts", "double precision"),
        ("seq", "stream_seq", "bigint"),
        ("host", "log_host", "text"),
        ("pid", "pid", "bigint"),
        ("op", "op", "text"),
        ("path", "path", "text"),
        ("new_path", "new_path", "text"),
        ("bytes_read", "bytes_read", "bigint"),
        ("bytes_written", "bytes_written", "bigint"),
        ("attribution", "attribution", "text"),
        ("detail", "detail", "jsonb"),
    ],
    "bans": [
        ("id", "local_id", "bigint NOT NULL"),
        ("net", "net", "cidr"),
        ("rule", "rule", "text"),
        ("reason", "reason", "text"),
        ("offence", "offence", "integer"),
        ("created", "created", "double precision"),
        ("expires", "expires", "double precision"),
        ("active", "active", "integer"),
        ("lifted", "lifted", "double precision"),
        ("lifted_by", "lifted_by", "text"),
        ("dry_run", "dry_run", "integer"),
    ],
    # Alerts as raised, one row per channel they were queued for (the spool's rows; not
    # whether the channel took them).
    "alerts": [
        ("id", "local_id", "bigint"),
        ("channel", "channel", "text"),
        ("kind", "kind", "text"),
        ("severity", "severity", "integer"),
        ("created", "created", "double precision"),
        ("alert", "alert", "jsonb"),
    ],
}
# The local table each fleet table is shipped from.
LOCAL_TABLE = {"alerts": "alert_spool"}
VERSIONED = ("sessions", "commands", "transfers", "bans")
SHIPPED_TABLES = tuple(COLUMNS)


def _record_table(name: str) -> str:
    cols = ",\n    ".join(f"{fleet} {tp}" for _local, fleet, tp in COLUMNS[name])
    return f"""
CREATE TABLE {SCHEMA}.{name} (
    host text NOT NULL,
    seq bigint NOT NULL,
    {cols},
    received timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host, seq)
);
ALTER TABLE {SCHEMA}.{name} ENABLE ROW LEVEL SECURITY;
CREATE POLICY {name}_read ON {SCHEMA}.{name} FOR SELECT TO {GROUP_ROLE} USING (true);
CREATE POLICY {name}_insert ON {SCHEMA}.{name} FOR INSERT TO {GROUP_ROLE}
    WITH CHECK (host = (SELECT {SCHEMA}.my_host()));
GRANT SELECT, INSERT ON {SCHEMA}.{name} TO {GROUP_ROLE};
"""


def _current_view(name: str) -> str:
    return f"""
CREATE VIEW {SCHEMA}.{name}_current AS
    SELECT DISTINCT ON (host, local_id) * FROM {SCHEMA}.{name}
    ORDER BY host, local_id, seq DESC;
GRANT SELECT ON {SCHEMA}.{name}_current TO {GROUP_ROLE};
"""


_V1 = (
    f"""
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{GROUP_ROLE}') THEN
        CREATE ROLE {GROUP_ROLE} NOLOGIN;
    END IF;
END $$;
GRANT USAGE ON SCHEMA {SCHEMA} TO {GROUP_ROLE};

-- One row per host: which role writes as it, and its status (written by the host itself).
CREATE TABLE {SCHEMA}.hosts (
    name          text PRIMARY KEY,
    role          name NOT NULL UNIQUE,
    store_id      text,
    seq_base      bigint NOT NULL DEFAULT 0,
    shipped_seq   bigint NOT NULL DEFAULT 0,
    first_contact timestamptz,
    last_contact  timestamptz,
    version       text,
    backlog       bigint,
    lag           double precision
);
ALTER TABLE {SCHEMA}.hosts ENABLE ROW LEVEL SECURITY;
CREATE POLICY hosts_read ON {SCHEMA}.hosts FOR SELECT TO {GROUP_ROLE} USING (true);
CREATE POLICY hosts_status ON {SCHEMA}.hosts FOR UPDATE TO {GROUP_ROLE}
    USING (role = current_user) WITH CHECK (role = current_user);
GRANT SELECT ON {SCHEMA}.hosts TO {GROUP_ROLE};
GRANT UPDATE (store_id, seq_base, shipped_seq, first_contact, last_contact, version, backlog,
              lag) ON {SCHEMA}.hosts TO {GROUP_ROLE};

-- The host the connected role writes as (NULL for a role that is no host's).
CREATE FUNCTION {SCHEMA}.my_host() RETURNS text LANGUAGE sql STABLE
    AS $f$ SELECT name FROM {SCHEMA}.hosts WHERE role = current_user $f$;
"""
    + "".join(_record_table(t) for t in SHIPPED_TABLES)
    + "".join(_current_view(t) for t in VERSIONED)
    + f"""
CREATE INDEX events_ts ON {SCHEMA}.events (ts);
CREATE INDEX events_ip_ts ON {SCHEMA}.events (ip, ts);
CREATE INDEX findings_ts ON {SCHEMA}.findings (ts);
CREATE INDEX sessions_start ON {SCHEMA}.sessions (start);

-- Failed attempts per subject, host and minute, kept by a trigger on events: the leader's
-- rules read these few rows, never the window's events. The trigger fires only for rows
-- really inserted (a record shipped twice is skipped, so it is counted once), and only from
-- rows tagged with the inserting host: a host adds only to its own tallies, so one
-- compromised host cannot make an address look active on the min_hosts hosts a fleet
-- finding needs.
CREATE TABLE {SCHEMA}.attempt_tallies (
    kind     text NOT NULL CHECK (kind IN ('address', 'user')),
    subject  text NOT NULL,
    host     text NOT NULL,
    minute   double precision NOT NULL,
    attempts bigint NOT NULL,
    first    double precision NOT NULL,
    last     double precision NOT NULL,
    PRIMARY KEY (kind, minute, subject, host)
);
ALTER TABLE {SCHEMA}.attempt_tallies ENABLE ROW LEVEL SECURITY;
CREATE POLICY attempt_tallies_read ON {SCHEMA}.attempt_tallies FOR SELECT TO {GROUP_ROLE}
    USING (true);
-- Anyone may drop tallies older than any window (the leader does, now and then).
CREATE POLICY attempt_tallies_expire ON {SCHEMA}.attempt_tallies FOR DELETE TO {GROUP_ROLE}
    USING (minute < extract(epoch FROM now()) - 8 * 86400);
GRANT SELECT, DELETE ON {SCHEMA}.attempt_tallies TO {GROUP_ROLE};
-- SECURITY DEFINER: host roles cannot write tallies at all; the trigger (run as the schema's
-- owner) writes them from the event rows the insert policy of events let in, so a tally's
-- host is always the inserting host's own.
CREATE FUNCTION {SCHEMA}.tally_attempts() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
    INSERT INTO {SCHEMA}.attempt_tallies AS t (kind, subject, host, minute, attempts, first, last)
    SELECT k, s, NEW.host, floor(NEW.ts / 60) * 60, NEW.attempt, NEW.ts, NEW.ts
    FROM (VALUES
        ('address', CASE WHEN NEW.ip IS NULL THEN NULL
                         WHEN family(NEW.ip) = 6 THEN network(set_masklen(NEW.ip, 64))::text
                         ELSE host(NEW.ip) END),
        ('user', NEW.username)) AS v(k, s)
    WHERE s IS NOT NULL
    ON CONFLICT (kind, minute, subject, host) DO UPDATE
        SET attempts = t.attempts + excluded.attempts,
            first = least(t.first, excluded.first), last = greatest(t.last, excluded.last);
    RETURN NULL;
END $f$;
CREATE TRIGGER events_tally_attempts AFTER INSERT ON {SCHEMA}.events
    FOR EACH ROW WHEN (NEW.attempt IS NOT NULL) EXECUTE FUNCTION {SCHEMA}.tally_attempts();

-- The fleet's ban log, append only: a ban or an unban, by whichever host decided it. The
-- active bans are each network's newest 'ban' not yet expired and not followed by an
-- 'unban'. Every insert notifies the listening hosts.
CREATE TABLE {SCHEMA}.ban_log (
    id       bigserial PRIMARY KEY,
    host     text NOT NULL,
    action   text NOT NULL CHECK (action IN ('ban', 'unban')),
    net      cidr NOT NULL,
    rule     text NOT NULL,
    reason   text NOT NULL DEFAULT '',
    created  double precision NOT NULL,
    expires  double precision,
    origin   bigint,
    at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (host, action, origin)
);
CREATE INDEX ban_log_net ON {SCHEMA}.ban_log (net, id);
ALTER TABLE {SCHEMA}.ban_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY ban_log_read ON {SCHEMA}.ban_log FOR SELECT TO {GROUP_ROLE} USING (true);
CREATE POLICY ban_log_insert ON {SCHEMA}.ban_log FOR INSERT TO {GROUP_ROLE}
    WITH CHECK (host = (SELECT {SCHEMA}.my_host()));
GRANT SELECT, INSERT ON {SCHEMA}.ban_log TO {GROUP_ROLE};
GRANT USAGE ON SEQUENCE {SCHEMA}.ban_log_id_seq TO {GROUP_ROLE};
CREATE FUNCTION {SCHEMA}.ban_log_notify() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM pg_notify('{BAN_CHANNEL}', NEW.id::text);
    RETURN NULL;
END $f$;
CREATE TRIGGER ban_log_notify AFTER INSERT ON {SCHEMA}.ban_log
    FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.ban_log_notify();

-- Findings of the fleet's own rules, written by the host that held the leader lease.
CREATE TABLE {SCHEMA}.fleet_findings (
    id       bigserial PRIMARY KEY,
    host     text NOT NULL,
    rule     text NOT NULL,
    subject  text NOT NULL,
    ts       double precision NOT NULL,
    severity text NOT NULL,
    summary  text NOT NULL,
    attempts integer NOT NULL,
    hosts    text[] NOT NULL,
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX fleet_findings_subject ON {SCHEMA}.fleet_findings (rule, subject, ts);
ALTER TABLE {SCHEMA}.fleet_findings ENABLE ROW LEVEL SECURITY;
CREATE POLICY fleet_findings_read ON {SCHEMA}.fleet_findings FOR SELECT TO {GROUP_ROLE}
    USING (true);
CREATE POLICY fleet_findings_insert ON {SCHEMA}.fleet_findings FOR INSERT TO {GROUP_ROLE}
    WITH CHECK (host = (SELECT {SCHEMA}.my_host()));
GRANT SELECT, INSERT ON {SCHEMA}.fleet_findings TO {GROUP_ROLE};
GRANT USAGE ON SEQUENCE {SCHEMA}.fleet_findings_id_seq TO {GROUP_ROLE};

-- Who delivers an alert about a fleet incident: a host claims it for a lease; another may
-- take it over once the lease ran out without a delivery.
CREATE TABLE {SCHEMA}.alert_claims (
    alert_id    text PRIMARY KEY,
    host        text NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz NOT NULL,
    delivered   timestamptz
);
ALTER TABLE {SCHEMA}.alert_claims ENABLE ROW LEVEL SECURITY;
CREATE POLICY alert_claims_read ON {SCHEMA}.alert_claims FOR SELECT TO {GROUP_ROLE}
    USING (true);
CREATE POLICY alert_claims_insert ON {SCHEMA}.alert_claims FOR INSERT TO {GROUP_ROLE}
    WITH CHECK (host = (SELECT {SCHEMA}.my_host()));
CREATE POLICY alert_claims_take ON {SCHEMA}.alert_claims FOR UPDATE TO {GROUP_ROLE}
    USING (host = (SELECT {SCHEMA}.my_host()) OR (delivered IS NULL AND lease_until < now()))
    WITH CHECK (host = (SELECT {SCHEMA}.my_host()));
GRANT SELECT, INSERT, UPDATE ON {SCHEMA}.alert_claims TO {GROUP_ROLE};
"""
)


def _insert_only(table: str, columns: list[str]) -> str:
    return (
        f"REVOKE INSERT ON {SCHEMA}.{table} FROM {GROUP_ROLE};\n"
        f"GRANT INSERT ({', '.join(columns)}) ON {SCHEMA}.{table} TO {GROUP_ROLE};\n"
    )


# Version 2 closes what a compromised host could do to the others (the adversarial review of
# version 1, tests/test_fleet_attack.py). The constraints are NOT VALID: they hold for every
# row written from now on without refusing to migrate a database that already has odd rows
# (the readers bound those).
_V2 = (
    # Host roles insert only the columns a host decides: never a row's id (a huge ban_log id
    # moved every follower past all later entries; ids taken ahead made honest inserts
    # collide) nor the server's own timestamps.
    _insert_only("ban_log", ["host", "action", "net", "rule", "reason", "created", "expires",
                             "origin"])
    + _insert_only("fleet_findings", ["host", "rule", "subject", "ts", "severity", "summary",
                                      "attempts", "hosts"])
    + _insert_only("alert_claims", ["alert_id", "host", "lease_until"])
    + "".join(
        _insert_only(t, ["host", "seq", *[f for _l, f, _t in COLUMNS[t]]]) for t in SHIPPED_TABLES
    )
    + f"""
REVOKE UPDATE ON {SCHEMA}.alert_claims FROM {GROUP_ROLE};
GRANT UPDATE (host, claimed_at, lease_until, delivered) ON {SCHEMA}.alert_claims
    TO {GROUP_ROLE};

-- Bans: finite, plausible times (NaN sorted above every expiry and was "active" forever),
-- and bounded text (every follower reads each entry).
ALTER TABLE {SCHEMA}.ban_log ADD CONSTRAINT ban_log_sane CHECK (
    created > 0 AND created < 1e11
    AND (expires IS NULL OR (expires > 0 AND expires < 1e11))
    AND length(rule) <= 64 AND length(reason) <= 500
) NOT VALID;

-- Whether this session holds the leader lease (store/fleet/leader.py takes it with
-- pg_try_advisory_lock(hashtext('{LEADER_LOCK}'))): only the leader writes findings.
-- A bigint advisory key shows in pg_locks as its high and low 32 bits.
CREATE FUNCTION {SCHEMA}.holds_lead() RETURNS boolean LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp AS $f$
    SELECT EXISTS (
        SELECT 1 FROM pg_locks
        WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted AND objsubid = 1
          AND classid = ((hashtext('{LEADER_LOCK}')::bigint >> 32) & 4294967295)::oid
          AND objid = (hashtext('{LEADER_LOCK}')::bigint & 4294967295)::oid)
$f$;
DROP POLICY fleet_findings_insert ON {SCHEMA}.fleet_findings;
CREATE POLICY fleet_findings_insert ON {SCHEMA}.fleet_findings FOR INSERT TO {GROUP_ROLE}
    WITH CHECK (host = (SELECT {SCHEMA}.my_host()) AND {SCHEMA}.holds_lead()
                AND ts <= date_part('epoch', now()) + 60);

-- A claim names a finding of the claiming host (alert id fleet-<rule>-<finding id>): no
-- host can claim, and so block, the alert ids the leader is about to use.
DROP POLICY alert_claims_insert ON {SCHEMA}.alert_claims;
CREATE POLICY alert_claims_insert ON {SCHEMA}.alert_claims FOR INSERT TO {GROUP_ROLE}
    WITH CHECK (
        host = (SELECT {SCHEMA}.my_host())
        AND lease_until <= now() + interval '1 hour'
        AND alert_id ~ '^fleet-[a-z_]{{1,64}}-[0-9]{{1,18}}$'
        AND EXISTS (
            SELECT 1 FROM {SCHEMA}.fleet_findings f
            WHERE f.id = substring(alert_id FROM '([0-9]+)$')::bigint
              AND f.host = alert_claims.host
              AND 'fleet-' || f.rule || '-' || f.id = alert_id));
DROP POLICY alert_claims_take ON {SCHEMA}.alert_claims;
CREATE POLICY alert_claims_take ON {SCHEMA}.alert_claims FOR UPDATE TO {GROUP_ROLE}
    USING (host = (SELECT {SCHEMA}.my_host()) OR (delivered IS NULL AND lease_until < now()))
    WITH CHECK (host = (SELECT {SCHEMA}.my_host()) AND lease_until <= now() + interval '1 hour');

-- Attempts: a host adds only positive, bounded counts (a negative one vetoed an address),
-- and only for events dated now or in the window's past (one dated next year, or NaN, made
-- its host "active" for that address in every window until then). date_part, not extract:
-- extract returns numeric, and comparing every row's ts as numeric cost 15 % of an insert.
CREATE OR REPLACE FUNCTION {SCHEMA}.tally_attempts() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
    INSERT INTO {SCHEMA}.attempt_tallies AS t (kind, subject, host, minute, attempts, first, last)
    SELECT k, s, NEW.host, floor(NEW.ts / 60) * 60, least(NEW.attempt, 1000), NEW.ts, NEW.ts
    FROM (VALUES
        ('address', CASE WHEN NEW.ip IS NULL THEN NULL
                         WHEN family(NEW.ip) = 6 THEN network(set_masklen(NEW.ip, 64))::text
                         ELSE host(NEW.ip) END),
        ('user', left(NEW.username, 200))) AS v(k, s)
    WHERE s IS NOT NULL
    ON CONFLICT (kind, minute, subject, host) DO UPDATE
        SET attempts = t.attempts + excluded.attempts,
            first = least(t.first, excluded.first), last = greatest(t.last, excluded.last);
    RETURN NULL;
END $f$;
DROP TRIGGER events_tally_attempts ON {SCHEMA}.events;
CREATE TRIGGER events_tally_attempts AFTER INSERT ON {SCHEMA}.events
    FOR EACH ROW WHEN (
        NEW.attempt > 0
        AND NEW.ts <= date_part('epoch', now()) + 300
        AND NEW.ts >= date_part('epoch', now()) - 8 * 86400)
    EXECUTE FUNCTION {SCHEMA}.tally_attempts();
"""
)

# (version, what it adds, SQL). Append only: a released migration is never edited.
MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "hosts, shipped records, the ban log, fleet findings, alert claims", _V1),
    (2, "host roles confined: column grants, sane bans, leader-only findings, checked claims "
        "and attempts", _V2),
]
LATEST = MIGRATIONS[-1][0]


class FleetSchemaError(Exception):
    """The fleet database's schema cannot be used by this version (one line, for operators)."""


def current_version(cur: Any) -> int | None:
    """The schema version of the fleet database (None: no schema yet)."""
    cur.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.meta",))
    if cur.fetchone()[0] is None:
        return None
    cur.execute(VERSION_SQL)
    return parse_version(cur.fetchone())


VERSION_SQL = f"SELECT value FROM {SCHEMA}.meta WHERE key = 'schema_version'"


def parse_version(row: Any) -> int | None:
    """The version a ``meta`` row holds; a value that is no number is the operator's to
    look at, not a crash."""
    if row is None:
        return None
    try:
        return int(row[0])
    except (TypeError, ValueError):
        raise FleetSchemaError(
            f"the fleet database's schema version is unreadable ({str(row[0])[:40]!r} in "
            f"{SCHEMA}.meta); restore it from a backup or ask its administrator"
        ) from None


def check_version(version: int | None) -> None:
    """Refuse a database this version cannot write into."""
    if version is None:
        raise FleetSchemaError(
            "the fleet database has no sshmonitor schema yet: run `sshmonitor fleet init` "
            "as its owner (or give this host's role the right to create it)"
        )
    if version > LATEST:
        raise FleetSchemaError(
            f"the fleet database's schema is version {version}, newer than this sshmonitord "
            f"knows ({LATEST}); upgrade sshmonitord on this host before it writes there"
        )
    if version < LATEST:
        raise FleetSchemaError(
            f"the fleet database's schema is version {version}, older than this sshmonitord "
            f"needs ({LATEST}): run `sshmonitor fleet init` to migrate it"
        )


def migrate(conn: Any, upto: int = LATEST) -> tuple[int | None, int]:
    """Create or migrate the schema up to version ``upto`` (tests stop short of the latest),
    each migration in its own transaction (``conn`` in autocommit mode). Returns (version
    before, version after). Raises psycopg's error when the role may not do it."""
    with conn.cursor() as cur:
        # Serialise concurrent first starts of several hosts.
        with conn.transaction():
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('sshmonitor.migrate'))")
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {SCHEMA}.meta (key text PRIMARY KEY, value text)"
            )
            before = current_version(cur)
        if before is not None and before > LATEST:
            check_version(before)
        for version, _what, sql in MIGRATIONS:
            if (before is not None and version <= before) or version > upto:
                continue
            with conn.transaction():
                cur.execute("SELECT pg_advisory_xact_lock(hashtext('sshmonitor.migrate'))")
                now = current_version(cur)
                if now is not None and now >= version:
                    continue
                cur.execute(sql)
                cur.execute(
                    f"INSERT INTO {SCHEMA}.meta(key, value) VALUES ('schema_version', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(version),),
                )
                cur.execute(f"GRANT SELECT ON {SCHEMA}.meta TO {GROUP_ROLE}")
        return before, current_version(cur) or 0


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def host_role_sql(host: str, role: str | None = None, password: str | None = None) -> str:
    """The SQL an administrator runs to let one host in: its login role, its membership
    of the group role, and the line of ``hosts`` that ties the role to the host name."""
    role = role or f"sshmonitor_{host}"
    pw = f" PASSWORD {quote_literal(password)}" if password else ""
    return (
        f"CREATE ROLE {quote_ident(role)} LOGIN{pw} IN ROLE {GROUP_ROLE};\n"
        f"INSERT INTO {SCHEMA}.hosts(name, role) VALUES "
        f"({quote_literal(host)}, {quote_literal(role)});\n"
    )
