"""Adversarial review of fleet mode (issue #14) against a real PostgreSQL (tests/pgserver.py).

The attacker is root on one host of the fleet (``web4`` here): it holds that host's
PostgreSQL role and can run any SQL that role may. Each test tries one thing. A test that
passes is a defence that holds. The review of schema version 1 found 14 defects (each
test's docstring names what went wrong); schema version 2 and the code fixed them, and the
tests that showed them as strict xfails now pass. Rows version 1 let in may still be in an
upgraded database: ``old_row`` writes such a row, and the readers must cope with it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from test_fleet_store import ev, make_store, write_events  # one set of fixtures for both

from sshmonitord.config import parse_config
from sshmonitord.detect import fleet as fleet_rules
from sshmonitord.store import Store, outbox

HOSTS = ("web1", "web2", "web3", "web4")
EVIL = "web4"
BIG_ID = 9223372036854775000


def _pg() -> Any:
    import psycopg

    return psycopg


@pytest.fixture
def fleet(pg_server: Any, pg_db: str) -> dict[str, Any]:
    """A fleet schema in a fresh database and four registered host roles."""
    from pgserver import unique_name

    from sshmonitord.store.fleet import schema as fs

    with _pg().connect(pg_server.url(db=pg_db), autocommit=True) as conn:
        fs.migrate(conn)
        roles = {}
        for host in HOSTS:
            role = unique_name(f"sshm_{host}")
            conn.execute(fs.host_role_sql(host, role))
            roles[host] = role
    return {"db": pg_db, "roles": roles, "server": pg_server}


def url(fleet: dict[str, Any], host: str | None = None) -> str:
    role = fleet["roles"][host] if host else fleet["server"].superuser
    return str(fleet["server"].url(role=role, db=fleet["db"]))


def connect(fleet: dict[str, Any], host: str | None = None) -> Any:
    return _pg().connect(url(fleet, host), autocommit=True)


def scalar(fleet: dict[str, Any], sql: str, *args: Any) -> Any:
    with connect(fleet) as conn:
        return conn.execute(sql, args).fetchone()[0]


def replicator(st: Store | Path, fleet: dict[str, Any], host: str, as_host: str | None = None) -> Any:
    from sshmonitord.store.fleet.replicator import Replicator

    path = st.path if isinstance(st, Store) else st
    return Replicator(path, url(fleet, as_host or host), host, "test")


_seq: dict[str, int] = {}


def attempts(
    fleet: dict[str, Any],
    host: str,
    ip: str,
    n: int = 1,
    attempt: int = 1,
    ts: float | None = None,
    user: str = "root",
) -> None:
    """``n`` failed-attempt events written straight into the fleet as ``host``'s role (what
    its replicator would write; what an intruder with the role may write at will)."""
    ts = time.time() if ts is None else ts
    with connect(fleet, host) as conn, conn.cursor() as cur:
        rows = []
        for _ in range(n):
            _seq[host] = _seq.get(host, 0) + 1
            rows.append((host, _seq[host], ts, "auth_failure", ip, user, attempt))
        cur.executemany(
            "INSERT INTO sshmonitor.events (host, seq, ts, kind, ip, username, attempt) "
            "VALUES (%s, %s, %s, %s, %s::inet, %s, %s)",
            rows,
        )


def correlate_cfg(threshold: int = 10, min_hosts: int = 3) -> Any:
    return parse_config(
        "fleet: {database: x, spray: {enabled: false}, "
        f"correlate: {{threshold: {threshold}, min_hosts: {min_hosts}, window: 1h}}}}"
    )


def old_row(fleet: dict[str, Any], host: str, sql: str, *args: Any) -> None:
    """Write a row as ``host`` the way schema version 1 let it be written (the database may
    hold such rows from before the upgrade): version 2's checks are lifted for the insert."""
    with connect(fleet) as adm:
        adm.execute("ALTER TABLE sshmonitor.ban_log DROP CONSTRAINT ban_log_sane")
        adm.execute("ALTER TABLE sshmonitor.alert_claims DISABLE ROW LEVEL SECURITY")
        adm.execute("ALTER TABLE sshmonitor.fleet_findings DISABLE ROW LEVEL SECURITY")
        adm.execute("GRANT INSERT ON sshmonitor.ban_log, sshmonitor.alert_claims, "
                    "sshmonitor.fleet_findings TO sshmonitor_host")
    try:
        with connect(fleet, host) as conn:
            conn.execute(sql, args)
    finally:
        from sshmonitord.store.fleet import schema as fs

        with connect(fleet) as adm:
            adm.execute("REVOKE INSERT ON sshmonitor.ban_log, sshmonitor.alert_claims, "
                        "sshmonitor.fleet_findings FROM sshmonitor_host")
            adm.execute(fs._insert_only("ban_log", ["host", "action", "net", "rule", "reason",
                                                    "created", "expires", "origin"]))
            adm.execute(fs._insert_only("fleet_findings", ["host", "rule", "subject", "ts",
                                                           "severity", "summary", "attempts",
                                                           "hosts"]))
            adm.execute(fs._insert_only("alert_claims", ["alert_id", "host", "lease_until"]))
            adm.execute("ALTER TABLE sshmonitor.alert_claims ENABLE ROW LEVEL SECURITY")
            adm.execute("ALTER TABLE sshmonitor.fleet_findings ENABLE ROW LEVEL SECURITY")
            adm.execute("ALTER TABLE sshmonitor.ban_log ADD CONSTRAINT ban_log_sane CHECK ("
                        "created > 0 AND created < 1e11 AND (expires IS NULL OR "
                        "(expires > 0 AND expires < 1e11)) AND length(rule) <= 64 "
                        "AND length(reason) <= 500) NOT VALID")


def finding(fleet: dict[str, Any], host: str, rule: str = "fleet_correlate") -> str:
    """A fleet finding recorded as ``host`` (by the administrator, as a leader would);
    its alert id."""
    fid = scalar(
        fleet,
        "INSERT INTO sshmonitor.fleet_findings (host, rule, subject, ts, severity, summary, "
        "attempts, hosts) VALUES (%s, %s, '198.51.100.1', %s, 'high', 's', 1, '{web1}') "
        "RETURNING id",
        host, rule, time.time(),
    )
    return f"fleet-{rule}-{fid}"


def leader_round(fleet: dict[str, Any], cfg: Any, host: str = "web1") -> list[Any]:
    """One round of the real leader as ``host`` (holding the lease); the findings it
    alerted."""
    from sshmonitord.store.fleet.leader import Leader

    alerted: list[Any] = []

    async def on(found: list[Any]) -> None:
        alerted.extend(found)

    async def go() -> None:
        leader = Leader(url(fleet, host), host, cfg, on, fleet_rules.evaluate)
        async with await _pg().AsyncConnection.connect(leader.conninfo, autocommit=True) as c:
            assert await leader.lead(c)
            await leader.round(c)

    asyncio.run(asyncio.wait_for(go(), 20))
    return alerted


def honest_attack(fleet: dict[str, Any], ip: str = "203.0.113.9", each: int = 4) -> None:
    """A slow attack under every local threshold: ``each`` attempts on web1, web2, web3."""
    for h in ("web1", "web2", "web3"):
        attempts(fleet, h, ip, each)


# ============================================================ (1) writing as another host


def test_no_table_takes_a_row_tagged_with_another_host(fleet: dict[str, Any]) -> None:
    pg = _pg()
    now = time.time()
    forged = {
        "events": "INSERT INTO sshmonitor.events (host, seq, ts, kind) VALUES ('web1', 1, 0, 'x')",
        "findings": "INSERT INTO sshmonitor.findings (host, seq, ts, rule, severity) "
        "VALUES ('web1', 1, 0, 'r', 'high')",
        "sessions": "INSERT INTO sshmonitor.sessions (host, seq, local_id) VALUES ('web1', 1, 1)",
        "commands": "INSERT INTO sshmonitor.commands (host, seq, local_id) VALUES ('web1', 1, 1)",
        "transfers": "INSERT INTO sshmonitor.transfers (host, seq, local_id) "
        "VALUES ('web1', 1, 1)",
        "bans": "INSERT INTO sshmonitor.bans (host, seq, local_id) VALUES ('web1', 1, 1)",
        "alerts": "INSERT INTO sshmonitor.alerts (host, seq) VALUES ('web1', 1)",
        "ban_log": "INSERT INTO sshmonitor.ban_log (host, action, net, rule, created, expires) "
        f"VALUES ('web1', 'ban', '198.51.100.1', 'bruteforce', {now}, {now + 600})",
        "fleet_findings": "INSERT INTO sshmonitor.fleet_findings "
        "(host, rule, subject, ts, severity, summary, attempts, hosts) "
        "VALUES ('web1', 'fleet_correlate', '198.51.100.1', 0, 'high', 's', 1, '{web1}')",
        "alert_claims": "INSERT INTO sshmonitor.alert_claims (alert_id, host, lease_until) "
        "VALUES ('fleet-fleet_correlate-1', 'web1', now() + interval '1h')",
    }
    refused_outright = {
        "hosts": "INSERT INTO sshmonitor.hosts (name, role) VALUES ('web9', current_user)",
        "hosts rename": "UPDATE sshmonitor.hosts SET name = 'web1x' WHERE role = current_user",
        "hosts role": "UPDATE sshmonitor.hosts SET role = 'postgres' WHERE role = current_user",
        "tallies": "INSERT INTO sshmonitor.attempt_tallies VALUES "
        "('address', '198.51.100.1', 'web1', 0, 100, 0, 0)",
        "tallies update": "UPDATE sshmonitor.attempt_tallies SET attempts = 0",
        "meta": "UPDATE sshmonitor.meta SET value = '1'",
        "claims delete": "DELETE FROM sshmonitor.alert_claims",
        "findings delete": "DELETE FROM sshmonitor.fleet_findings",
        "findings update": "UPDATE sshmonitor.fleet_findings SET subject = 'x'",
        "ban_log update": "UPDATE sshmonitor.ban_log SET expires = 0",
        "ban_log truncate": "TRUNCATE sshmonitor.ban_log",
        "sequence reset": "SELECT setval('sshmonitor.ban_log_id_seq', 1)",
        "schema object": "CREATE TABLE sshmonitor.evil (x int)",
        "function swap": "CREATE OR REPLACE FUNCTION sshmonitor.my_host() RETURNS text "
        "LANGUAGE sql AS $$ SELECT 'web1' $$",
    }
    with connect(fleet, EVIL) as evil:
        for sql in forged.values():  # every shipped table and every fleet table
            with pytest.raises(pg.errors.InsufficientPrivilege, match="row-level security"):
                evil.execute(sql)
        for sql in refused_outright.values():
            with pytest.raises(pg.errors.InsufficientPrivilege):
                evil.execute(sql)
        # The *_current views run as their owner: they must not be a way to write.
        for sql in (
            "UPDATE sshmonitor.bans_current SET expires = 0",
            "DELETE FROM sshmonitor.sessions_current",
        ):
            with pytest.raises(
                (pg.errors.InsufficientPrivilege, pg.errors.ObjectNotInPrerequisiteState)
            ):
                evil.execute(sql)
        # SET ROLE to the group role: it is no host, so it may write as none.
        evil.execute("SET ROLE sshmonitor_host")
        with pytest.raises(pg.errors.InsufficientPrivilege):
            evil.execute(forged["ban_log"])
        evil.execute("RESET ROLE")
        # Another host's status row is invisible to UPDATE (rowcount 0), its claims likewise.
        assert evil.execute("UPDATE sshmonitor.hosts SET backlog = 0 WHERE name = 'web1'"
                            ).rowcount == 0
    with connect(fleet, "web1") as web1:
        aid = finding(fleet, "web1")
        web1.execute(
            "INSERT INTO sshmonitor.alert_claims (alert_id, host, lease_until) "
            "VALUES (%s, 'web1', now() + interval '5 minutes')",
            (aid,),
        )
    with connect(fleet, EVIL) as evil:
        # It may claim only its own findings' alerts, for at most an hour.
        for claim in ("x-web4", aid, finding(fleet, "web1"), "fleet-fleet_correlate-999999"):
            with pytest.raises(pg.errors.InsufficientPrivilege, match="row-level security"):
                evil.execute(
                    "INSERT INTO sshmonitor.alert_claims (alert_id, host, lease_until) "
                    "VALUES (%s, 'web4', now() + interval '5 minutes')",
                    (claim,),
                )
        mine = finding(fleet, EVIL)
        with pytest.raises(pg.errors.InsufficientPrivilege, match="row-level security"):
            evil.execute(
                "INSERT INTO sshmonitor.alert_claims (alert_id, host, lease_until) "
                "VALUES (%s, 'web4', now() + interval '10 years')",
                (mine,),
            )
        evil.execute(
            "INSERT INTO sshmonitor.alert_claims (alert_id, host, lease_until) "
            "VALUES (%s, 'web4', now() + interval '5 minutes')",
            (mine,),
        )
        # Its own claim cannot be re-tagged as another host's, nor renamed.
        with pytest.raises(pg.errors.InsufficientPrivilege, match="row-level security"):
            evil.execute(
                "UPDATE sshmonitor.alert_claims SET host = 'web1' WHERE alert_id = %s", (mine,)
            )
        with pytest.raises(pg.errors.InsufficientPrivilege):
            evil.execute(
                "UPDATE sshmonitor.alert_claims SET alert_id = 'x' WHERE alert_id = %s", (mine,)
            )
    assert scalar(fleet, "SELECT count(*) FROM sshmonitor.events") == 0
    assert scalar(fleet, "SELECT count(*) FROM sshmonitor.ban_log") == 0


def test_a_forged_huge_ban_log_id_does_not_stop_propagation(fleet: dict[str, Any]) -> None:
    """A ban_log id chosen by a host (a huge one moved every follower past all later
    entries) is refused; propagation goes on."""
    from sshmonitord.store.fleet.bansync import BanSync

    pg = _pg()

    got: list[str] = []

    async def on_entries(entries: list[Any]) -> None:
        got.extend(b.net for b in entries)

    async def on_reconcile(_state: Any) -> dict[str, list[str]]:
        return {}

    async def go() -> None:
        sync = BanSync(url(fleet, "web3"), "web3", on_entries, on_reconcile, period=60)
        await sync.start()
        try:
            for _ in range(100):
                if sync.connected:
                    break
                await asyncio.sleep(0.05)
            now = time.time()
            with connect(fleet, EVIL) as evil, pytest.raises(pg.errors.InsufficientPrivilege):
                evil.execute(
                    "INSERT INTO sshmonitor.ban_log (id, host, action, net, rule, created, "
                    "expires) VALUES (%s, 'web4', 'ban', '198.51.100.250', 'x', %s, %s)",
                    (BIG_ID, now, now + 600),
                )
            await asyncio.sleep(0.5)
            with connect(fleet, "web1") as web1:
                web1.execute(
                    "INSERT INTO sshmonitor.ban_log (host, action, net, rule, created, expires) "
                    "VALUES ('web1', 'ban', '198.51.100.1', 'bruteforce', %s, %s)",
                    (now, now + 600),
                )
            for _ in range(40):
                if "198.51.100.1/32" in got:
                    break
                await asyncio.sleep(0.05)
        finally:
            await sync.stop()

    asyncio.run(asyncio.wait_for(go(), 20))
    assert "198.51.100.1/32" in got


def test_forged_ban_log_ids_do_not_swallow_an_honest_hosts_ban(
    fleet: dict[str, Any], tmp_path: Path
) -> None:
    """Ids taken ahead of the sequence (an honest host's ban then collided and was skipped)
    are refused."""
    from sshmonitord.store import bans as bans_store

    pg = _pg()
    with connect(fleet, EVIL) as evil, pytest.raises(pg.errors.InsufficientPrivilege):
        nxt = int(evil.execute("SELECT nextval('sshmonitor.ban_log_id_seq')").fetchone()[0])
        evil.execute(
            "INSERT INTO sshmonitor.ban_log (id, host, action, net, rule, created) "
            "SELECT g, 'web4', 'unban', '192.0.2.200', 'x', 0 FROM generate_series(%s::bigint, %s::bigint) g",
            (nxt + 1, nxt + 200),
        )
    st = make_store(tmp_path, "web1")
    now = time.time()
    with st.transaction():
        bans_store.insert(st.conn, "198.51.100.9", "bruteforce", "5", 1, now, now + 600, False, None)
    rep = replicator(st, fleet, "web1")
    asyncio.run(rep.ship_all())
    assert scalar(
        fleet, "SELECT count(*) FROM sshmonitor.ban_log WHERE host = 'web1' AND action = 'ban'"
    ) == 1


# ============================================================ (2) alert claims


def test_an_undelivered_claim_is_not_taken_before_its_lease_ends(fleet: dict[str, Any]) -> None:
    one, two = finding(fleet, "web1"), finding(fleet, "web1")
    assert (one, two) == ("fleet-fleet_correlate-1", "fleet-fleet_correlate-2")
    with connect(fleet, "web1") as web1:
        web1.execute(
            "INSERT INTO sshmonitor.alert_claims (alert_id, host, lease_until) VALUES "
            "('fleet-fleet_correlate-1', 'web1', now() + interval '5 minutes'), "
            "('fleet-fleet_correlate-2', 'web1', now() - interval '1 second')"
        )
    with connect(fleet, EVIL) as evil:
        for sql in (
            "UPDATE sshmonitor.alert_claims SET host = 'web4'",
            "UPDATE sshmonitor.alert_claims SET delivered = now()",
            "UPDATE sshmonitor.alert_claims SET lease_until = now() - interval '1h'",
        ):
            cur = evil.execute(sql + " WHERE alert_id = 'fleet-fleet_correlate-1'")
            assert cur.rowcount == 0, sql
        # The one whose lease ran out undelivered is anyone's: that is the takeover.
        cur = evil.execute(
            "UPDATE sshmonitor.alert_claims SET host = 'web4', lease_until = now() "
            "WHERE alert_id = 'fleet-fleet_correlate-2'"
        )
        assert cur.rowcount == 1
    with connect(fleet) as adm:
        rows = adm.execute(
            "SELECT alert_id, host, delivered FROM sshmonitor.alert_claims ORDER BY alert_id"
        ).fetchall()
    assert rows == [("fleet-fleet_correlate-1", "web1", None), ("fleet-fleet_correlate-2", "web4", None)]


@pytest.mark.parametrize("how", ["claims", "finding_ids"])
def test_pre_claimed_alert_ids_do_not_stop_the_leader(fleet: dict[str, Any], how: str) -> None:
    """Claims on alert ids not yet used, or finding ids taken ahead (the leader's
    finding+ban+claim transaction failed on the duplicate: no fleet finding or ban ever),
    are refused, with or without the columns only the server sets."""
    pg = _pg()
    if how == "claims":
        attacks = [
            "INSERT INTO sshmonitor.alert_claims (alert_id, host, lease_until, delivered) "
            "SELECT 'fleet-fleet_correlate-' || g, 'web4', now() + interval '10 years', "
            "now() FROM generate_series(1, 500) g",
            "INSERT INTO sshmonitor.alert_claims (alert_id, host, lease_until) "
            "SELECT 'fleet-fleet_correlate-' || g, 'web4', now() + interval '10 minutes' "
            "FROM generate_series(1, 500) g",
        ]
    else:
        attacks = [
            "INSERT INTO sshmonitor.fleet_findings "
            "(id, host, rule, subject, ts, severity, summary, attempts, hosts) "
            "SELECT g, 'web4', 'x', 'x', 0, 'low', 'x', 0, '{web4}' "
            "FROM generate_series(1, 500) g",
            "INSERT INTO sshmonitor.fleet_findings "
            "(host, rule, subject, ts, severity, summary, attempts, hosts) "
            "SELECT 'web4', 'x', 'x', 0, 'low', 'x', 0, '{web4}' "
            "FROM generate_series(1, 500) g",
        ]
    with connect(fleet, EVIL) as evil:
        for sql in attacks:
            with pytest.raises(pg.errors.InsufficientPrivilege):
                evil.execute(sql)
    honest_attack(fleet)
    found = leader_round(fleet, correlate_cfg())
    assert [f.subject for f in found] == ["203.0.113.9"]
    assert scalar(
        fleet, "SELECT count(*) FROM sshmonitor.ban_log WHERE rule = 'fleet_correlate'"
    ) == 1


def test_a_malformed_expired_claim_does_not_stop_fleet_alerts(fleet: dict[str, Any]) -> None:
    """A claim 'fleet-x-y' (every round raised on it: no fleet alert delivered any more) is
    refused; one left from before schema version 2 is passed over."""
    pg = _pg()
    claim = (
        "INSERT INTO sshmonitor.alert_claims (alert_id, host, lease_until) "
        "VALUES ('fleet-x-y', 'web4', now() - interval '1 second')"
    )
    with connect(fleet, EVIL) as evil, pytest.raises(pg.errors.InsufficientPrivilege):
        evil.execute(claim)
    old_row(fleet, EVIL, claim)
    honest_attack(fleet)
    found = leader_round(fleet, correlate_cfg())
    assert [f.subject for f in found] == ["203.0.113.9"]


# ============================================================ (3) fake attempts, min_hosts


def test_one_host_alone_cannot_get_an_address_banned(fleet: dict[str, Any]) -> None:
    """Any number of attempts on the intruder's own host (it cannot tag them as another's)
    plus one real attempt on one other host: 2 hosts < min_hosts 3."""
    pg = _pg()
    attempts(fleet, EVIL, "198.51.100.77", n=50, attempt=1000)
    attempts(fleet, "web1", "198.51.100.77", n=1)
    with connect(fleet, EVIL) as evil, pytest.raises(pg.errors.InsufficientPrivilege):
        evil.execute(
            "INSERT INTO sshmonitor.events (host, seq, ts, kind, ip, attempt) "
            "VALUES ('web2', 1, %s, 'auth_failure', '198.51.100.77', 100)",
            (time.time(),),
        )
    assert leader_round(fleet, correlate_cfg()) == []
    assert scalar(fleet, "SELECT count(*) FROM sshmonitor.ban_log") == 0
    # A record shipped again (the same (host, seq)) is not counted twice either.
    with connect(fleet, EVIL) as evil:
        evil.execute(
            "INSERT INTO sshmonitor.events (host, seq, ts, kind, ip, attempt) "
            "VALUES ('web4', 1, %s, 'auth_failure', '198.51.100.77', 1) ON CONFLICT DO NOTHING",
            (time.time(),),
        )
    assert scalar(
        fleet, "SELECT sum(attempts) FROM sshmonitor.attempt_tallies WHERE host = 'web4' "
        "AND kind = 'address'"
    ) == 50000


def test_negative_attempts_from_one_host_cannot_hide_an_attack(fleet: dict[str, Any]) -> None:
    """A negative attempt count (one host vetoed any address) is not counted."""
    honest_attack(fleet)  # 12 attempts on 3 hosts: a fleet finding
    attempts(fleet, EVIL, "203.0.113.9", n=1, attempt=-1_000_000)
    found = leader_round(fleet, correlate_cfg())
    assert [f.subject for f in found] == ["203.0.113.9"]


@pytest.mark.parametrize("when", ["future", "nan"])
def test_events_dated_in_the_future_do_not_count_now(fleet: dict[str, Any], when: str) -> None:
    """Events dated next year, or NaN (its host stayed 'active' for the address in every
    window until then), are not counted."""
    ts = time.time() + 365 * 86400 if when == "future" else float("nan")
    attempts(fleet, EVIL, "203.0.113.9", n=1, attempt=1, ts=ts)
    for h in ("web1", "web2"):
        attempts(fleet, h, "203.0.113.9", n=5)  # 2 hosts really active: no fleet finding
    assert leader_round(fleet, correlate_cfg()) == []


def test_a_fake_finding_from_a_non_leader_does_not_silence_the_rule(
    fleet: dict[str, Any],
) -> None:
    """A finding from a host not holding the lease, or dated ahead (one dated far ahead
    silenced fleet_correlate for its address for ever), is refused; one left from before
    schema version 2 silences nothing."""
    pg = _pg()
    fake = (
        "INSERT INTO sshmonitor.fleet_findings "
        "(host, rule, subject, ts, severity, summary, attempts, hosts) "
        "VALUES ('web4', 'fleet_correlate', '203.0.113.9', %s, 'low', 'x', 0, '{web4}')"
    )
    ahead = time.time() + 10 * 365 * 86400
    with connect(fleet, EVIL) as evil:
        with pytest.raises(pg.errors.InsufficientPrivilege, match="row-level security"):
            evil.execute(fake, (time.time(),))
        # Holding the lease (a compromised host may take it when it is free): still not
        # dated ahead.
        evil.execute("SELECT pg_advisory_lock(hashtext('sshmonitor.leader'))")
        with pytest.raises(pg.errors.InsufficientPrivilege, match="row-level security"):
            evil.execute(fake, (ahead,))
        evil.execute(fake, (time.time() - 7200,))  # the leader may write; outside the window
        evil.execute("SELECT pg_advisory_unlock_all()")
    old_row(fleet, EVIL, fake, ahead)
    honest_attack(fleet)
    found = leader_round(fleet, correlate_cfg())
    assert [f.subject for f in found] == ["203.0.113.9"]


# ============================================================ (4)+(5) the ban log reaching a follower


def _manager(tmp_path: Path, allow: tuple[str, ...] = ()) -> Any:
    from sshmonitord import config as config_mod
    from sshmonitord.respond import make_backend
    from sshmonitord.respond.bans import BanManager

    store = Store(tmp_path / "state")
    store.open()
    cfg = dataclasses.replace(config_mod.ResponseConfig(), bantime_max=3600)
    return BanManager(
        store, make_backend("none"), cfg, tuple(ipaddress.ip_network(a) for a in allow)
    )


def _follow(fleet: dict[str, Any], tmp_path: Path, host: str, scenario: Any,
            allow: tuple[str, ...] = ()) -> Any:
    """A real BanSync of ``host`` wired to a real BanManager through the real FleetService
    callbacks; ``scenario(sync, manager)`` runs while it follows."""
    from sshmonitord.store.fleet.bansync import BanSync
    from sshmonitord.store.fleet.service import FleetService

    async def go() -> Any:
        m = _manager(tmp_path, allow)
        await m.start()
        cfg = parse_config(f"fleet: {{database: x, host: {host}}}")
        svc = FleetService(m.store, cfg, m, "test")
        sync = BanSync(url(fleet, host), host, svc._entries, svc._reconcile, period=60)
        await sync.start()
        try:
            for _ in range(100):
                if sync.connected and sync.reconciles:
                    break
                await asyncio.sleep(0.05)
            return await scenario(sync, m)
        finally:
            await sync.stop()
            await m.stop()

    return asyncio.run(asyncio.wait_for(go(), 60))


async def _until(cond: Any, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.05)
    return bool(cond())


def _log(conn: Any, rows: list[tuple[str, str, Any]], host: str = EVIL) -> None:
    now = time.time()
    for action, net, expires in rows:
        conn.execute(
            "INSERT INTO sshmonitor.ban_log (host, action, net, rule, created, expires) "
            "VALUES (%s, %s, %s::cidr, 'bruteforce', %s, %s)",
            (host, action, net, now, expires),
        )


def test_odd_networks_in_the_ban_log_are_refused_or_normalised(
    fleet: dict[str, Any], tmp_path: Path
) -> None:
    far = time.time() + 10 * 86400

    async def scenario(sync: Any, m: Any) -> dict[str, Any]:
        with connect(fleet, EVIL) as evil:
            _log(evil, [
                ("ban", "::ffff:198.51.100.7/128", far),  # one IPv4 address, mapped
                ("ban", "::/0", far),
                ("ban", "0.0.0.0/0", far),
                ("ban", "::ffff:0.0.0.0/96", far),  # every IPv4 address, mapped
                ("ban", "10.0.0.0/8", far),
                ("ban", "192.0.2.7/32", far),  # allowlisted on this host
                ("ban", "2001:db8:1:2::/64", far),
            ])
        await _until(lambda: "2001:db8:1:2::/64" in m.active)
        before = set(m.active)
        with connect(fleet, EVIL) as evil:
            _log(evil, [("unban", "0.0.0.0/0", None), ("unban", "::/0", None)])
        await asyncio.sleep(0.5)
        after_unban = set(m.active)
        sync.reconcile_now()
        await _until(lambda: sync.reconciles >= 2)
        return {"before": before, "after_unban": after_unban, "after_reconcile": set(m.active),
                "fw": {str(n) for n in await m.backend.list()} if hasattr(m.backend, "list")
                else set()}

    out = _follow(fleet, tmp_path, "web1", scenario, allow=("192.0.2.0/24",))
    assert out["before"] == {"198.51.100.7/32", "2001:db8:1:2::/64"}
    # An unban of /0 is not "unban everything": it lifts only a ban of /0 itself.
    assert out["after_unban"] == out["before"]
    assert out["after_reconcile"] == out["before"]


def test_a_nan_expiry_does_not_kill_ban_sharing(fleet: dict[str, Any], tmp_path: Path) -> None:
    """expires = NaN (sorted above every number: 'active' for ever; int(nan) raised in every
    follower and reconcile) is refused; one left from before schema version 2, and any
    entry the ban manager cannot apply, is passed over."""
    pg = _pg()
    for bad in (float("nan"), float("inf"), 1e300, -5.0):
        with connect(fleet, EVIL) as evil, pytest.raises(pg.errors.CheckViolation):
            _log(evil, [("ban", "198.51.100.66", bad)])
    old_row(fleet, EVIL, "INSERT INTO sshmonitor.ban_log (host, action, net, rule, created, "
            "expires) VALUES ('web4', 'ban', '198.51.100.65', 'x', %s, 'NaN')", time.time())

    async def scenario(sync: Any, m: Any) -> set[str]:
        assert not await m.fleet_ban("198.51.100.64", float("nan"), "x", "web4")
        # A start that is no number counts from now.
        assert await m.fleet_ban("198.51.100.63", time.time() + 60, "x", "web4", float("nan"))
        await asyncio.sleep(0.3)
        with connect(fleet, "web1") as web1:
            _log(web1, [("ban", "198.51.100.77", time.time() + 600)], host="web1")
        await _until(lambda: "198.51.100.77/32" in m.active, 4.0)
        return set(m.active)

    active = _follow(fleet, tmp_path, "web3", scenario)
    assert "198.51.100.77/32" in active and "198.51.100.65/32" not in active


def test_a_flood_of_bans_from_one_host_does_not_stall_a_follower(
    fleet: dict[str, Any], tmp_path: Path
) -> None:
    """1,000 distinct /32s published by one intruder: the follower applies them all (nothing
    caps what one host may get the fleet to ban: see the report) and stays live: an honest
    host's ban published right after the flood is applied within seconds."""
    n = 1000
    far = time.time() + 86400

    async def scenario(sync: Any, m: Any) -> tuple[int, float, float]:
        t0 = time.monotonic()
        with connect(fleet, EVIL) as evil:
            evil.execute(
                "INSERT INTO sshmonitor.ban_log (host, action, net, rule, created, expires) "
                "SELECT 'web4', 'ban', ('100.64.0.0'::inet + g)::cidr, 'x', %s, %s "
                "FROM generate_series(1, %s) g",
                (time.time(), far, n),
            )
        with connect(fleet, "web2") as web2:
            _log(web2, [("ban", "198.51.100.42", far)], host="web2")
        await _until(lambda: "198.51.100.42/32" in m.active, 20.0)
        honest = time.monotonic() - t0
        t1 = time.monotonic()
        sync.reconcile_now()
        await _until(lambda: sync.reconciles >= 2, 20.0)
        print(f"flood of {n}: honest ban applied after {honest:.1f}s; "
              f"reconcile over {len(m.active)} bans {time.monotonic() - t1:.2f}s")
        return len(m.active), honest, time.monotonic() - t1

    applied, honest, reconcile = _follow(fleet, tmp_path, "web1", scenario)
    assert applied == n + 1
    assert honest < 10 and reconcile < 10


def test_a_huge_reason_in_the_ban_log_does_not_reach_followers(fleet: dict[str, Any]) -> None:
    """Reasons and rules of any length (every follower reads each: 3,000 rows x 100 kB cost
    +858 MB in review) are refused; one left from before schema version 2 is read cut."""
    pg = _pg()
    now = time.time()
    huge = (
        "INSERT INTO sshmonitor.ban_log (host, action, net, rule, reason, created, "
        "expires) VALUES ('web4', 'ban', '198.51.100.3', repeat('r', 1000000), "
        "repeat('x', 1000000), %s, %s)"
    )
    with connect(fleet, EVIL) as evil, pytest.raises(pg.errors.CheckViolation):
        evil.execute(huge, (now, now + 600))
    old_row(fleet, EVIL, huge, now, now + 600)
    from sshmonitord.store.fleet.bansync import read_state

    async def go() -> Any:
        async with await pg.AsyncConnection.connect(url(fleet, "web1"), autocommit=True) as c:
            return await read_state(c)

    state = asyncio.run(go())
    (b,) = state.active.values()
    assert len(b.reason) <= 500 and len(b.rule) <= 64


def test_reconcile_does_not_lengthen_a_capped_fleet_ban(tmp_path: Path) -> None:
    """bantime_max counts from the fleet ban's start (counted from now, every reconcile
    found the ban 'shorter', re-applied it and logged it repaired: 3,000 bans, 8.9 s)."""
    async def go() -> tuple[list[str], float, float]:
        m = _manager(tmp_path)
        await m.start()
        try:
            began = time.time()
            fleet_view = {"198.51.100.5": (began + 30 * 86400, "bruteforce: x", "web2", began)}
            first = await m.fleet_reconcile(fleet_view, {})
            assert first["added"] == ["198.51.100.5/32"]
            until = m.active["198.51.100.5/32"].expires
            await asyncio.sleep(2.1)
            again = await m.fleet_reconcile(fleet_view, {})
            return again["added"], until, m.active["198.51.100.5/32"].expires
        finally:
            await m.stop()

    added, until, later = asyncio.run(go())
    assert added == [] and later == until


# ============================================================ (6) the replicator's input


def test_replicator_skips_deleted_rows_and_ships_huge_and_odd_rows(
    fleet: dict[str, Any], tmp_path: Path
) -> None:
    st = make_store(tmp_path, "web1")
    write_events(st, [ev(ip=f"198.51.100.{i + 1}") for i in range(6)])
    write_events(st, [ev(raw="A" * 1_000_000 + "\x00end")])
    write_events(st, [ev(user="detail-not-json")])
    with st.transaction():
        st.conn.execute("DELETE FROM events WHERE ip IN ('198.51.100.2', '198.51.100.5')")
        st.conn.execute(
            "UPDATE events SET detail = ? WHERE user = 'detail-not-json'", ("not json {\x00",)
        )
    rep = replicator(st, fleet, "web1")
    t0 = time.monotonic()
    asyncio.run(rep.ship_all())
    assert time.monotonic() - t0 < 10
    assert rep.stats.missing_rows == 2 and rep.stats.skipped_rows == 0
    with connect(fleet) as adm:
        n, big = adm.execute(
            "SELECT count(*), max(length(raw)) FROM sshmonitor.events WHERE host = 'web1'"
        ).fetchone()
        detail = adm.execute(
            "SELECT detail FROM sshmonitor.events WHERE username = 'detail-not-json'"
        ).fetchone()[0]
        shipped = adm.execute("SELECT shipped_seq FROM sshmonitor.hosts WHERE name = 'web1'"
                              ).fetchone()[0]
    assert n == 6 and big == 1_000_004
    assert detail == "not json {\ufffd"
    assert shipped == 8  # past the deleted rows: nothing holds the outbox up


def test_a_detail_with_nan_is_shipped_not_skipped(fleet: dict[str, Any], tmp_path: Path) -> None:
    st = make_store(tmp_path, "web1")
    write_events(st, [ev(user="nan-detail")])
    with st.transaction():
        st.conn.execute("UPDATE events SET detail = '{\"x\": NaN, \"y\": 1e999}'")
    rep = replicator(st, fleet, "web1")
    asyncio.run(rep.ship_all())
    assert rep.stats.skipped_rows == 0
    assert scalar(fleet, "SELECT count(*) FROM sshmonitor.events") == 1


# ============================================================ (7) renamed and restored hosts


def test_a_renamed_host_does_not_ship_its_records_twice(
    fleet: dict[str, Any], tmp_path: Path
) -> None:
    st = make_store(tmp_path, "web1")
    write_events(st, [ev() for _ in range(5)])
    rep = replicator(st, fleet, "web1")
    asyncio.run(rep.ship_all())
    with st.transaction():
        outbox.prune(st.conn, 3)  # as the daemon does every 30 s: the newest stay a while
    asyncio.run(replicator(st, fleet, "web2").ship_all())  # fleet.host: web2 from now on
    assert scalar(fleet, "SELECT count(*) FROM sshmonitor.events WHERE host = 'web2'") == 0


def test_a_renamed_host_cannot_take_a_name_registered_to_another_role(
    fleet: dict[str, Any], tmp_path: Path
) -> None:
    from sshmonitord.store.fleet.replicator import NotRegistered

    st = make_store(tmp_path, "web1")
    write_events(st, [ev()])
    with pytest.raises(NotRegistered, match="another database role"):
        asyncio.run(replicator(st, fleet, "web2", as_host="web1").ship_all())


def test_a_store_restored_from_a_snapshot_loses_nothing(
    fleet: dict[str, Any], tmp_path: Path
) -> None:
    st = make_store(tmp_path, "web1")
    write_events(st, [ev() for _ in range(5)])
    asyncio.run(replicator(st, fleet, "web1").ship_all())
    (tmp_path / "snapshot").mkdir()
    snap = sqlite3.connect(tmp_path / "snapshot" / Path(st.path).name)
    st.conn.backup(snap)
    snap.close()
    write_events(st, [ev() for _ in range(5)])
    asyncio.run(replicator(st, fleet, "web1").ship_all())
    st.close()
    restored = Store(tmp_path / "snapshot")
    restored.open()
    write_events(restored, [ev(ip="192.0.2.99") for _ in range(3)])
    asyncio.run(replicator(restored, fleet, "web1").ship_all())
    assert scalar(
        fleet, "SELECT count(*) FROM sshmonitor.events WHERE ip = '192.0.2.99'"
    ) == 3


# ============================================================ (8) schema versions


def test_a_garbled_schema_version_is_one_line_not_a_traceback(fleet: dict[str, Any]) -> None:
    import subprocess
    import sys

    with connect(fleet) as adm:
        adm.execute("UPDATE sshmonitor.meta SET value = 'banana' WHERE key = 'schema_version'")
    r = subprocess.run(
        [sys.executable, "-m", "sshmonitord.cli", "fleet", "init", "--database", url(fleet)],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_concurrent_first_starts_migrate_once(pg_server: Any, pg_db: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from sshmonitord.store.fleet import schema as fs

    def go(_i: int) -> tuple[int | None, int]:
        with _pg().connect(pg_server.url(db=pg_db), autocommit=True) as conn:
            return fs.migrate(conn)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(go, range(4)))
    assert all(after == fs.LATEST for _b, after in results)
    assert pg_server.execute(
        "SELECT value FROM sshmonitor.meta WHERE key = 'schema_version'", db=pg_db
    ) == [(str(fs.LATEST),)]


def test_a_reconnecting_replicator_refuses_a_newer_schema(
    fleet: dict[str, Any], tmp_path: Path
) -> None:
    st = make_store(tmp_path, "web1")
    write_events(st, [ev()])
    asyncio.run(replicator(st, fleet, "web1").ship_all())
    with connect(fleet) as adm:
        adm.execute("UPDATE sshmonitor.meta SET value = '99' WHERE key = 'schema_version'")
    write_events(st, [ev()])
    with pytest.raises(Exception, match="newer"):
        asyncio.run(replicator(st, fleet, "web1").ship_all())
