"""Fleet mode's store side against a real PostgreSQL (tests/pgserver.py): the schema and its
roles, the outbox and the replicator (exactly once through outages, hostile text, a new
local store), the ban log and its reconcile, the leader lease, the fleet rules.

Adversarial and fault cases first: a host role that tries to write, change or delete
another host's records; NUL bytes and broken text from an attacker's user name; the
database stopped mid-stream or killed; a reinstalled host; an older daemon against a newer
schema; the leader killed after its finding and before its alert.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sshmonitord.config import FleetConfig, parse_config
from sshmonitord.detect import fleet as fleet_rules
from sshmonitord.events import Event, Kind, Tally
from sshmonitord.store import Store, event_row, outbox
from sshmonitord.store import bans as bans_store


def _psycopg() -> Any:
    import psycopg as pg

    return pg


@pytest.fixture
def fleet_db(pg_server: Any, pg_db: str) -> dict[str, Any]:
    """A fleet schema in a fresh database, and three registered host roles."""
    from pgserver import unique_name

    from sshmonitord.store.fleet import schema as fs

    pg = _psycopg()
    with pg.connect(pg_server.url(db=pg_db), autocommit=True) as conn:
        fs.migrate(conn)
        roles = {}
        for host in ("web1", "web2", "web3"):
            role = unique_name(f"sshm_{host}")
            conn.execute(fs.host_role_sql(host, role))
            roles[host] = role
    return {"db": pg_db, "roles": roles, "server": pg_server}


def url(fleet_db: dict[str, Any], host: str | None = None) -> str:
    role = fleet_db["roles"][host] if host else fleet_db["server"].superuser
    return str(fleet_db["server"].url(role=role, db=fleet_db["db"]))


def admin(fleet_db: dict[str, Any]) -> Any:
    return _psycopg().connect(url(fleet_db), autocommit=True)


def make_store(tmp: Path, name: str) -> Store:
    st = Store(tmp / name)
    st.open()
    outbox.enable(st.conn, True)
    return st


def ev(ip: str = "203.0.113.7", user: str = "root", **kw: Any) -> Event:
    base: dict[str, Any] = {
        "ts": datetime.now(UTC),
        "host": "h",
        "program": "sshd",
        "pid": 100,
        "kind": Kind.AUTH_FAILURE,
        "user": user,
        "ip": ipaddress.ip_address(ip),
        "port": 2222,
        "method": "password",
        "raw": f"Failed password for {user} from {ip} port 2222 ssh2",
    }
    base.update(kw)
    return Event(**base)


def write_events(st: Store, events: list[Event], attempt: int | None = 1) -> None:
    with st.transaction():
        st.add_events([(*event_row(e), attempt) for e in events])


def replicator(st: Store, fleet_db: dict[str, Any], host: str, as_host: str | None = None) -> Any:
    from sshmonitord.store.fleet.replicator import Replicator

    return Replicator(st.path, url(fleet_db, as_host or host), host, "test")


def count(fleet_db: dict[str, Any], sql: str, *args: Any) -> int:
    with admin(fleet_db) as conn:
        return int(conn.execute(sql, args).fetchone()[0])


# ----------------------------------------------------------------------------- the schema


def test_host_roles_cannot_forge_change_or_erase_records(fleet_db: dict[str, Any], tmp_path: Path):
    pg = _psycopg()
    st = make_store(tmp_path, "web1")
    write_events(st, [ev()])
    asyncio.run(replicator(st, fleet_db, "web1").ship_all())
    with pg.connect(url(fleet_db, "web2"), autocommit=True) as web2:
        with pytest.raises(pg.errors.InsufficientPrivilege, match="row-level security"):
            web2.execute(
                "INSERT INTO sshmonitor.events (host, seq, ts, kind) VALUES ('web1', 999, 0, 'x')"
            )
        with pytest.raises(pg.errors.InsufficientPrivilege, match="row-level security"):
            web2.execute(
                "INSERT INTO sshmonitor.ban_log (host, action, net, rule, created, expires) "
                "VALUES ('web1', 'unban', '203.0.113.7', 'x', 0, 0)"
            )
        for sql in (
            "DELETE FROM sshmonitor.events",
            "UPDATE sshmonitor.events SET raw = 'nothing happened'",
            "TRUNCATE sshmonitor.events",
            "DELETE FROM sshmonitor.ban_log",
            "UPDATE sshmonitor.hosts SET role = current_user WHERE name = 'web1'",
        ):
            with pytest.raises(pg.errors.InsufficientPrivilege):
                web2.execute(sql)
        # Its status columns of another host's row: the policy hides that row.
        cur = web2.execute("UPDATE sshmonitor.hosts SET shipped_seq = 0 WHERE name = 'web1'")
        assert cur.rowcount == 0
    # web1 itself may not rewrite its own shipped history either.
    with pg.connect(url(fleet_db, "web1"), autocommit=True) as web1:
        with pytest.raises(pg.errors.InsufficientPrivilege):
            web1.execute("UPDATE sshmonitor.events SET raw = 'x' WHERE host = 'web1'")
        with pytest.raises(pg.errors.InsufficientPrivilege):
            web1.execute("DELETE FROM sshmonitor.events WHERE host = 'web1'")
    assert count(fleet_db, "SELECT count(*) FROM sshmonitor.events WHERE raw LIKE 'Failed%%'") == 1


def test_a_role_registered_for_another_host_cannot_ship_as_this_one(fleet_db, tmp_path):
    from sshmonitord.store.fleet.replicator import NotRegistered

    st = make_store(tmp_path, "web1")
    write_events(st, [ev()])
    with pytest.raises(NotRegistered, match="belongs to another database role"):
        asyncio.run(replicator(st, fleet_db, "web1", as_host="web2").ship_all())
    assert count(fleet_db, "SELECT count(*) FROM sshmonitor.events") == 0


def test_an_unregistered_host_is_told_what_to_run(fleet_db, tmp_path):
    from sshmonitord.store.fleet.replicator import NotRegistered

    st = make_store(tmp_path, "db9")
    write_events(st, [ev()])
    with pytest.raises(NotRegistered, match="fleet init --host db9"):
        asyncio.run(replicator(st, fleet_db, "db9", as_host="web1").ship_all())


def test_older_daemon_refuses_a_newer_schema(fleet_db):
    from sshmonitord.store.fleet import schema as fs
    from sshmonitord.store.fleet.service import _migrate_or_check

    with admin(fleet_db) as conn:
        conn.execute("UPDATE sshmonitor.meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(fs.FleetSchemaError, match="newer than this sshmonitord knows"):
        _migrate_or_check(url(fleet_db, "web1"))
    with pytest.raises(fs.FleetSchemaError, match="newer"):
        _migrate_or_check(url(fleet_db))


def test_migrate_is_idempotent_and_a_host_role_cannot_create_the_schema(pg_server, pg_db):
    from pgserver import unique_name

    from sshmonitord.store.fleet import schema as fs
    from sshmonitord.store.fleet.service import _migrate_or_check

    pg = _psycopg()
    role = unique_name("sshm_plain")
    pg_server.execute(f'CREATE ROLE "{role}" LOGIN', db=pg_db)
    with pytest.raises(fs.FleetSchemaError, match="no sshmonitor schema"):
        _migrate_or_check(pg_server.url(role=role, db=pg_db))
    with pg.connect(pg_server.url(db=pg_db), autocommit=True) as conn:
        assert fs.migrate(conn) == (None, fs.LATEST)
        assert fs.migrate(conn) == (fs.LATEST, fs.LATEST)


# ----------------------------------------------------------------------------- replication


def test_hostile_text_is_shipped_not_fatal(fleet_db, tmp_path):
    """NUL (refused by PostgreSQL's text and jsonb, and stored fine by SQLite), also as a
    \\u0000 escape inside the detail JSON, and SQL in a user name: each record arrives,
    with U+FFFD in place of what PostgreSQL cannot store."""
    st = make_store(tmp_path, "web1")
    nasty = [
        ev(user="ro\x00ot", raw="Failed password for ro\x00ot", detail={"k": "a\x00b"}),
        ev(user="'; DROP TABLE sshmonitor.events; --", detail={"\x00key": ["\x00"]}),
    ]
    write_events(st, nasty)
    rep = replicator(st, fleet_db, "web1")
    assert asyncio.run(rep.ship_all()) == 2
    assert rep.stats.skipped_rows == 0
    with admin(fleet_db) as conn:
        rows = conn.execute(
            "SELECT username, detail, raw FROM sshmonitor.events ORDER BY seq"
        ).fetchall()
    assert rows[0][0] == "ro\ufffdot" and rows[0][1] == {"k": "a\ufffdb"}
    assert rows[1][0].startswith("'; DROP TABLE")


def test_every_record_once_across_outages_and_a_kill(fleet_db, tmp_path):
    """Events written while PostgreSQL is stopped, and while it is killed -9 mid-stream,
    arrive exactly once when it is back: (host, seq) is the key, never a file offset."""
    server = fleet_db["server"]
    st = make_store(tmp_path, "web1")
    rep = replicator(st, fleet_db, "web1")
    rep.poll = 0.05

    async def scenario() -> None:
        await rep.start()
        try:
            for i in range(5):
                write_events(st, [ev(ip=f"198.51.100.{i + 1}") for _ in range(40)])
                await asyncio.sleep(0.05)
            await asyncio.to_thread(server.stop)
            for i in range(5):
                write_events(st, [ev(ip=f"192.0.2.{i + 1}") for _ in range(40)])
            await asyncio.sleep(1.5)  # the replicator fails and backs off meanwhile
            await asyncio.to_thread(server.start)
            for _ in range(3):
                write_events(st, [ev(ip="203.0.113.50") for _ in range(300)])
                await asyncio.sleep(0.01)
            await asyncio.to_thread(server.kill9)
            write_events(st, [ev(ip="203.0.113.51") for _ in range(100)])
            await asyncio.to_thread(server.start)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if rep.connected and rep.stats.backlog == 0 and rep.confirmed >= 1400:
                    break
                await asyncio.sleep(0.2)
        finally:
            await rep.stop(drain=5)

    asyncio.run(scenario())
    local = st.conn.execute("SELECT count(*) FROM events").fetchone()[0]
    assert local == 1400
    assert count(fleet_db, "SELECT count(*) FROM sshmonitor.events WHERE host = 'web1'") == 1400
    assert count(fleet_db, "SELECT count(DISTINCT local_id) FROM sshmonitor.events") == 1400
    assert rep.errors >= 1  # it did see the outage


def test_a_commit_lost_with_the_connection_is_not_duplicated(fleet_db, tmp_path):
    """The replicator's position is committed with the records; shipping the same entries
    again (as after a commit whose answer was lost) stores nothing twice."""
    st = make_store(tmp_path, "web1")
    write_events(st, [ev() for _ in range(10)])
    rep = replicator(st, fleet_db, "web1")
    asyncio.run(rep.ship_all())
    with admin(fleet_db) as conn:  # pretend the confirmation never arrived
        conn.execute("UPDATE sshmonitor.hosts SET shipped_seq = 0 WHERE name = 'web1'")
    rep2 = replicator(st, fleet_db, "web1")
    asyncio.run(rep2.ship_all())
    assert count(fleet_db, "SELECT count(*) FROM sshmonitor.events") == 10
    assert count(fleet_db, "SELECT shipped_seq FROM sshmonitor.hosts WHERE name = 'web1'") == 10


def test_a_reinstalled_host_keeps_numbering_after_its_old_records(fleet_db, tmp_path):
    old = make_store(tmp_path, "old")
    write_events(old, [ev() for _ in range(7)])
    asyncio.run(replicator(old, fleet_db, "web1").ship_all())
    new = make_store(tmp_path, "new")  # the local store is lost: seq starts at 1 again
    write_events(new, [ev(ip="192.0.2.99") for _ in range(3)])
    asyncio.run(replicator(new, fleet_db, "web1").ship_all())
    assert count(fleet_db, "SELECT count(*) FROM sshmonitor.events WHERE host = 'web1'") == 10
    assert count(fleet_db, "SELECT max(seq) FROM sshmonitor.events") == 10


def test_sessions_ship_as_versions_and_the_view_shows_the_newest(fleet_db, tmp_path):
    st = make_store(tmp_path, "web1")
    now = time.time()
    with st.transaction():
        st.conn.execute(
            "INSERT INTO sessions (user, ip, start, state, last_seen) "
            "VALUES ('alice', '192.0.2.1', ?, 'open', ?)",
            (now, now),
        )
    with st.transaction():
        st.conn.execute(
            "UPDATE sessions SET state = 'closed', end = ? WHERE user = 'alice'", (now + 5,)
        )
    asyncio.run(replicator(st, fleet_db, "web1").ship_all())
    assert count(fleet_db, "SELECT count(*) FROM sshmonitor.sessions") == 2
    with admin(fleet_db) as conn:
        row = conn.execute("SELECT state, ended FROM sshmonitor.sessions_current").fetchall()
    assert row == [("closed", now + 5)]


def test_outbox_triggers_only_while_a_fleet_is_configured(tmp_path):
    st = Store(tmp_path / "s")
    st.open()
    write_events(st, [ev()], attempt=None)
    assert outbox.entries(st.conn) == []
    assert outbox.enable(st.conn, True) is True
    assert outbox.enable(st.conn, True) is False
    write_events(st, [ev()])
    assert [e[1] for e in outbox.entries(st.conn)] == ["events"]
    assert outbox.enable(st.conn, False) is True
    write_events(st, [ev()])
    assert len(outbox.entries(st.conn)) == 1
    # AUTOINCREMENT: pruning everything never hands out a used seq again.
    outbox.prune(st.conn, 10**9)
    outbox.enable(st.conn, True)
    write_events(st, [ev()])
    assert outbox.entries(st.conn)[0][0] == 2


# ----------------------------------------------------------------------------- the ban log


def ban_row(st: Store, net: str, rule: str = "bruteforce", seconds: int = 600) -> None:
    now = time.time()
    with st.transaction():
        bans_store.insert(st.conn, net, rule, "5 failures", 1, now, now + seconds, False, None)


def test_bans_published_once_and_fleet_bans_never_echoed(fleet_db, tmp_path):
    st = make_store(tmp_path, "web1")
    ban_row(st, "198.51.100.9")
    ban_row(st, "192.0.2.44", rule="fleet")  # came from the fleet: not ours to publish
    with st.transaction():  # an operator lifts the first one
        st.conn.execute(
            "UPDATE bans SET active = 0, lifted = ?, lifted_by = 'operator' WHERE net = ?",
            (time.time(), "198.51.100.9"),
        )
    rep = replicator(st, fleet_db, "web1")
    asyncio.run(rep.ship_all())
    with admin(fleet_db) as conn:
        log = conn.execute(
            "SELECT action, host(net), rule FROM sshmonitor.ban_log ORDER BY id"
        ).fetchall()
    assert log == [("ban", "198.51.100.9", "bruteforce"), ("unban", "198.51.100.9", "operator")]


def test_ban_log_state_and_notification(fleet_db):
    from sshmonitord.store.fleet.bansync import read_state

    pg = _psycopg()
    now = time.time()

    async def go() -> Any:
        async with await pg.AsyncConnection.connect(url(fleet_db, "web2"), autocommit=True) as lis:
            await lis.execute("LISTEN sshmonitor_bans")
            with pg.connect(url(fleet_db, "web1"), autocommit=True) as w1:
                for net, action, exp in (
                    ("198.51.100.1", "ban", now + 600),
                    ("198.51.100.2", "ban", now + 600),
                    ("198.51.100.2", "unban", None),
                    ("198.51.100.3", "ban", now - 1),  # already over
                    ("2001:db8:1:2::/64", "ban", now + 60),
                ):
                    w1.execute(
                        "INSERT INTO sshmonitor.ban_log (host, action, net, rule, created, "
                        "expires) VALUES ('web1', %s, %s, 'bruteforce', %s, %s)",
                        (action, net, now, exp),
                    )
            got = []
            async for n in lis.notifies():
                got.append(n.payload)
                if len(got) == 5:
                    break
            state = await read_state(lis)
        return got, state

    got, state = asyncio.run(asyncio.wait_for(go(), 20))
    assert len(got) == 5
    assert set(state.active) == {"198.51.100.1/32", "2001:db8:1:2::/64"}
    assert set(state.unbanned) == {"198.51.100.2/32"}


# ----------------------------------------------------------------------------- fleet rules


def test_correlate_needs_enough_attempts_on_enough_hosts():
    cfg = FleetConfig(database="x")
    t = [Tally("203.0.113.9", h, 4, 0.0, 1.0) for h in ("web1", "web2", "web3")]
    (f,) = fleet_rules.correlate(t, cfg, set())
    assert f.rule == "fleet_correlate" and f.attempts == 12 and f.hosts == ("web1", "web2", "web3")
    assert f.ban and "12 failed attempts from 203.0.113.9 on 3 hosts" in f.summary
    assert fleet_rules.correlate(t[:2], cfg, set()) == []  # 8 on 2 hosts
    assert fleet_rules.correlate([Tally("203.0.113.9", "web1", 50, 0, 1)], cfg, set()) == []
    assert fleet_rules.correlate(t, cfg, {"203.0.113.9"}) == []  # found already
    few = [Tally("203.0.113.9", h, 3, 0.0, 1.0) for h in ("web1", "web2", "web3")]
    assert fleet_rules.correlate(few, cfg, set()) == []  # 9 < 10


def test_spray_is_an_alert_not_a_ban():
    cfg = parse_config("fleet: {database: x, spray: {threshold: 6}}").fleet
    t = [Tally("admin", h, 2, 0.0, 1.0) for h in ("a", "b", "c")]
    (f,) = fleet_rules.spray(t, cfg, set())
    assert f.rule == "fleet_spray" and not f.ban and f.severity == "warning"


def test_leader_lease_one_at_a_time_takeover_never_repeats(fleet_db, tmp_path):
    """Two leaders race for the lease; the holder finds the cross-host attack once; killed
    (its connection dropped) after recording and before delivering its alert, the next
    holder delivers that alert and does not find the attack again."""
    from sshmonitord.store.fleet.leader import Leader

    pg = _psycopg()
    cfg = parse_config("fleet: {database: x, correlate: {threshold: 6, min_hosts: 3, window: 1h}}")
    stores = {h: make_store(tmp_path, h) for h in ("web1", "web2", "web3")}
    for h, st in stores.items():
        write_events(st, [ev(ip="203.0.113.9") for _ in range(2)])
        asyncio.run(replicator(st, fleet_db, h).ship_all())
    delivered: list[Any] = []

    async def dies(_found: list[Any]) -> None:
        raise _Died  # the process dies between recording its finding and alerting

    async def delivers(found: list[Any]) -> None:
        delivered.extend(found)

    a = Leader(url(fleet_db, "web1"), "web1", cfg, dies, fleet_rules.evaluate, every=0.1)
    b = Leader(url(fleet_db, "web2"), "web2", cfg, delivers, fleet_rules.evaluate, every=0.1)

    async def go() -> None:
        async with (
            await pg.AsyncConnection.connect(a.conninfo, autocommit=True) as ca,
            await pg.AsyncConnection.connect(b.conninfo, autocommit=True) as cb,
        ):
            lock = "SELECT pg_try_advisory_lock(hashtext('sshmonitor.leader'))"
            assert (await (await ca.execute(lock)).fetchone())[0] is True
            assert (await (await cb.execute(lock)).fetchone())[0] is False
            with pytest.raises(_Died):
                await a.round(ca)
        # ca closed: the lease is free. The claim's lease has not run out yet: b must not
        # deliver it before it does.
        await b.start()
        await asyncio.sleep(1.0)
        assert b.leader and delivered == []
        with pg.connect(url(fleet_db), autocommit=True) as adm:
            adm.execute("UPDATE sshmonitor.alert_claims SET lease_until = now() - interval '1s'")
        for _ in range(100):
            if delivered:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # more rounds: nothing found again
        await b.stop()

    asyncio.run(asyncio.wait_for(go(), 30))
    assert [f.subject for f in delivered] == ["203.0.113.9"]
    assert count(fleet_db, "SELECT count(*) FROM sshmonitor.fleet_findings") == 1
    assert (
        count(fleet_db, "SELECT count(*) FROM sshmonitor.ban_log WHERE rule = 'fleet_correlate'")
        == 1
    )
    assert (
        count(fleet_db, "SELECT count(*) FROM sshmonitor.alert_claims WHERE delivered IS NOT NULL")
        == 1
    )


class _Died(Exception):
    pass


# ----------------------------------------------------------------------------- commands


def sshmonitor(*args: str) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "sshmonitord.cli", *args], capture_output=True, text=True,
        timeout=60,
    )


def test_fleet_commands_read_every_host_or_one(fleet_db, tmp_path):
    import json

    for h, ip in (("web1", "198.51.100.1"), ("web2", "198.51.100.2")):
        st = make_store(tmp_path, h)
        write_events(st, [ev(ip=ip, user=f"user-{h}")])
        ban_row(st, ip)
        asyncio.run(replicator(st, fleet_db, h).ship_all())
    db = url(fleet_db)
    r = sshmonitor("events", "--fleet", "--database", db, "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert {(x["host"], x["ip"], x["username"]) for x in rows} == {
        ("web1", "198.51.100.1", "user-web1"),
        ("web2", "198.51.100.2", "user-web2"),
    }
    r = sshmonitor("events", "--host", "web2", "--database", db)
    assert r.returncode == 0 and "web2" in r.stdout and "web1" not in r.stdout, r.stdout
    r = sshmonitor("bans", "--fleet", "--database", db)
    assert r.returncode == 0 and "198.51.100.1" in r.stdout and "198.51.100.2" in r.stdout
    r = sshmonitor("fleet", "status", "--database", db, "--json")
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    shipped = {h["host"]: h["shipped"] for h in status["hosts"]}
    assert shipped["web1"] == 2 and shipped["web2"] == 2 and shipped["web3"] == 0
    assert status["active_bans"] == 2 and status["leader"] is None
    r = sshmonitor("fleet", "status", "--database", db)
    assert "fleet rules run on no host" in r.stdout
    with _psycopg().connect(url(fleet_db, "web2"), autocommit=True) as web2:
        web2.execute("SELECT pg_advisory_lock(hashtext('sshmonitor.leader'))")
        r = sshmonitor("fleet", "status", "--database", db)
        assert "fleet rules run on web2" in r.stdout, r.stdout


def test_fleet_commands_fail_in_one_line(tmp_path, pg_server):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("fleet: {host: x}\n")
    r = sshmonitor("events", "--fleet", "--config", str(cfg))
    assert r.returncode == 1 and "no fleet database" in r.stderr and "Traceback" not in r.stderr
    r = sshmonitor("fleet", "status", "--database", f"postgresql://nobody@/nodb?host={tmp_path}")
    assert r.returncode == 1 and "cannot connect to the fleet database" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


# ----------------------------------------------------------------------------- applying


def test_a_hostile_peer_cannot_ban_wide_allowlisted_or_forever(tmp_path):
    """What another host publishes passes this host's own rules: allowlist, never-bannable
    networks, max_ban_prefix (no --force from afar), bantime_max; an unban from the fleet
    lifts only that network; reconcile lifts fleet bans the fleet no longer has."""
    import dataclasses

    from sshmonitord import config as config_mod
    from sshmonitord.respond import make_backend
    from sshmonitord.respond.bans import BanManager

    async def go() -> None:
        store = Store(tmp_path / "state")
        await asyncio.to_thread(store.open)
        cfg = dataclasses.replace(config_mod.ResponseConfig(), bantime_max=3600)
        m = BanManager(store, make_backend("none"), cfg, (ipaddress.ip_network("192.0.2.0/24"),))
        await m.start()
        far = time.time() + 10 * 365 * 86400
        assert not await m.fleet_ban("0.0.0.0/0", far, "x", "evil")
        assert not await m.fleet_ban("10.0.0.0/8", far, "x", "evil")
        assert not await m.fleet_ban("192.0.2.7", far, "x", "evil")  # allowlisted here
        assert not await m.fleet_ban("127.0.0.1", far, "x", "evil")
        assert not await m.fleet_ban("not-an-address; rm -rf /", far, "x", "evil")
        assert not await m.fleet_ban("198.51.100.1", time.time() - 5, "x", "web2")  # over
        assert await m.fleet_ban("198.51.100.1", far, "bruteforce", "web2")
        rec = m.active["198.51.100.1/32"]
        assert rec.rule == "fleet" and rec.expires <= time.time() + 3601
        assert set(m.active) == {"198.51.100.1/32"}
        assert not await m.fleet_ban("198.51.100.1", far, "again", "web3")  # no change
        assert await m.fleet_ban("2001:db8:1:2::/64", far, "fleet_correlate", "web2")
        assert await m.fleet_unban("2001:db8:1:2::/64", "web3")
        assert set(m.active) == {"198.51.100.1/32"}
        done = await m.fleet_reconcile({}, {})
        assert done["lifted"] == ["198.51.100.1/32"] and m.active == {}
        await m.stop()

    asyncio.run(go())


def test_tallies_count_each_attempt_once_per_host_and_group_ipv6_by_64(fleet_db, tmp_path):
    from sshmonitord.store.fleet.leader import Leader

    pg = _psycopg()
    for i, h in enumerate(("web1", "web2", "web3")):
        st = make_store(tmp_path, h)
        write_events(st, [ev(ip=f"2001:db8:5:6::{i}:{k + 1}") for k in range(2)])
        write_events(st, [ev(ip="192.0.2.200")], attempt=None)  # counted nothing: not an attempt
        asyncio.run(replicator(st, fleet_db, h).ship_all())
        with admin(fleet_db) as conn:  # a commit whose answer was lost: shipped again
            conn.execute("UPDATE sshmonitor.hosts SET shipped_seq = 0 WHERE name = %s", (h,))
        asyncio.run(replicator(st, fleet_db, h).ship_all())
    with admin(fleet_db) as conn:
        rows = conn.execute(
            "SELECT subject, host, attempts FROM sshmonitor.attempt_tallies "
            "WHERE kind = 'address' ORDER BY host"
        ).fetchall()
    assert rows == [("2001:db8:5:6::/64", h, 2) for h in ("web1", "web2", "web3")]
    with pg.connect(url(fleet_db, "web2"), autocommit=True) as web2:
        with pytest.raises(pg.errors.InsufficientPrivilege):
            web2.execute(
                "INSERT INTO sshmonitor.attempt_tallies VALUES "
                "('address', '203.0.113.1', 'web1', 0, 100, 0, 0)"
            )
        # Deleting is only for tallies older than any window: current ones stay.
        assert web2.execute("DELETE FROM sshmonitor.attempt_tallies").rowcount == 0
    cfg = parse_config("fleet: {database: x, correlate: {threshold: 6, min_hosts: 3}}")
    found: list[Any] = []

    async def on(fs_: list[Any]) -> None:
        found.extend(fs_)

    async def go() -> None:
        leader = Leader(url(fleet_db, "web3"), "web3", cfg, on, fleet_rules.evaluate)
        async with await pg.AsyncConnection.connect(leader.conninfo, autocommit=True) as c:
            assert await leader.lead(c)
            await leader.round(c)
            await leader.round(c)

    asyncio.run(go())
    assert [(f.rule, f.subject, f.attempts) for f in found] == [
        ("fleet_correlate", "2001:db8:5:6::/64", 6)
    ]
    with admin(fleet_db) as conn:
        bans = conn.execute("SELECT net::text FROM sshmonitor.ban_log").fetchall()
    assert bans == [("2001:db8:5:6::/64",)]


def test_alerts_ship_even_after_they_left_the_spool(fleet_db, tmp_path):
    """An alert's spool row is deleted once sent; the outbox kept the row itself, so the
    fleet still gets what was raised, per channel (the daily report's messages are not
    alerts and stay local)."""
    import json

    from sshmonitord.store import spool

    st = make_store(tmp_path, "web1")
    doc = json.dumps({"rule": "bruteforce", "subject": "203.0.113.5/32", "note": "\x00"})
    with st.transaction():
        spool.add_alerts(st.conn, [("smtp", doc, time.time(), time.time(), 2)])
        spool.add_alerts(st.conn, [("webhook", doc, time.time(), time.time(), 2)])
    with st.transaction():
        st.conn.execute("DELETE FROM alert_spool")  # delivered
    asyncio.run(replicator(st, fleet_db, "web1").ship_all())
    with admin(fleet_db) as conn:
        rows = conn.execute(
            "SELECT channel, alert->>'subject', alert->>'note' FROM sshmonitor.alerts ORDER BY seq"
        ).fetchall()
    assert rows == [("smtp", "203.0.113.5/32", "\ufffd"), ("webhook", "203.0.113.5/32", "\ufffd")]


def test_session_timeline_from_the_fleet(fleet_db, tmp_path):
    """The audit trail off the host: one session of one host with what was run in it, from
    the fleet's database (the newest version of each row)."""
    st = make_store(tmp_path, "web1")
    now = time.time()
    with st.transaction():
        st.conn.execute(
            "INSERT INTO sessions (id, user, ip, port, method, start, state, last_seen) "
            "VALUES (7, 'alice', '192.0.2.1', 5555, 'publickey', ?, 'open', ?)",
            (now, now),
        )
        st.conn.execute(
            "INSERT INTO commands (session_id, ts, seq, kind, user, runas, command) "
            "VALUES (7, ?, 1, 'sudo', 'alice', 'root', '/usr/bin/cat /etc/shadow')",
            (now + 1,),
        )
        st.conn.execute(
            "INSERT INTO transfers (session_id, ts, seq, op, path) "
            "VALUES (7, ?, 2, 'write', '/tmp/x.tar')",
            (now + 2,),
        )
    with st.transaction():
        st.conn.execute("UPDATE sessions SET state = 'closed', end = ? WHERE id = 7", (now + 3,))
    asyncio.run(replicator(st, fleet_db, "web1").ship_all())
    r = sshmonitor("session", "7", "--host", "web1", "--database", url(fleet_db))
    assert r.returncode == 0, r.stderr
    assert "alice from 192.0.2.1" in r.stdout and "closed" in r.stdout
    assert "/usr/bin/cat /etc/shadow" in r.stdout and "/tmp/x.tar" in r.stdout
    r = sshmonitor("session", "7", "--fleet", "--database", url(fleet_db))
    assert r.returncode == 1 and "--host NAME" in r.stderr
    r = sshmonitor("session", "8", "--host", "web1", "--database", url(fleet_db))
    assert r.returncode == 1 and "no session 8 of host web1" in r.stderr


def test_report_over_the_fleet_or_one_host(fleet_db, tmp_path):
    import json

    for h, n in (("web1", 3), ("web2", 5)):
        st = make_store(tmp_path, h)
        write_events(st, [ev(ip=f"198.51.100.{n}", port=3000 + i) for i in range(n)])
        asyncio.run(replicator(st, fleet_db, h).ship_all())
    r = sshmonitor("report", "--fleet", "--database", url(fleet_db), "--format", "json")
    assert r.returncode == 0, r.stderr
    whole = json.loads(r.stdout)
    r = sshmonitor("report", "--host", "web2", "--database", url(fleet_db), "--format", "json")
    assert r.returncode == 0, r.stderr
    one = json.loads(r.stdout)
    assert sum(whole["chart"]["failures"]) == 8 and sum(one["chart"]["failures"]) == 5
    text = json.dumps(whole)
    assert "198.51.100.3" in text and "198.51.100.5" in text
    assert "198.51.100.5" in json.dumps(one) and "198.51.100.3" not in json.dumps(one)
    r = sshmonitor("report", "--fleet", "--database", url(fleet_db))
    assert r.returncode == 0 and "the fleet" in r.stdout, r.stdout + r.stderr


def test_fleet_init_creates_then_says_up_to_date_and_prints_role_sql(pg_server, pg_db):
    from pgserver import unique_name

    from sshmonitord.store.fleet import schema as fs

    db = pg_server.url(db=pg_db)
    r = sshmonitor("fleet", "init", "--database", db, "--host", "web9")
    assert r.returncode == 0, r.stderr
    assert f"created the fleet schema (version {fs.LATEST})" in r.stderr
    assert "CREATE ROLE \"sshmonitor_web9\" LOGIN PASSWORD 'CHANGE-ME' IN ROLE sshmonitor_host" in r.stdout
    assert "INSERT INTO sshmonitor.hosts(name, role) VALUES ('web9', 'sshmonitor_web9')" in r.stdout
    r = sshmonitor("fleet", "init", "--database", db)
    assert r.returncode == 0 and "up to date" in r.stderr
    role = unique_name("sshm_plain")
    pg_server.execute(f'CREATE ROLE "{role}" LOGIN', db=pg_db)
    pg_server.execute(f'REVOKE CREATE ON DATABASE "{pg_db}" FROM PUBLIC', db=pg_db)
    with admin_db(pg_server, pg_db) as conn:
        conn.execute("UPDATE sshmonitor.meta SET value = '0' WHERE key = 'schema_version'")
    r = sshmonitor("fleet", "init", "--database", pg_server.url(role=role, db=pg_db))
    assert r.returncode == 1 and "may not create the fleet schema" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_version_1_fleet_with_data_and_odd_rows_upgrades_in_place(pg_server, pg_db, tmp_path):
    """A fleet at schema version 1 (the first release) holding records and rows version 2
    refuses (a NaN expiry, a 1 MB reason): `fleet init` migrates it; what was there stays;
    a daemon at version 2 ships on after its old position; a version-1 daemon is refused."""
    from pgserver import unique_name

    from sshmonitord.store.fleet import schema as fs
    from sshmonitord.store.fleet.replicator import Replicator

    pg = _psycopg()
    with admin_db(pg_server, pg_db) as conn:
        assert fs.migrate(conn, upto=1) == (None, 1)
        role = unique_name("sshm_web1")
        conn.execute(fs.host_role_sql("web1", role))
    web1 = pg_server.url(role=role, db=pg_db)
    st = make_store(tmp_path, "web1")
    write_events(st, [ev() for _ in range(4)])
    with pytest.raises(fs.FleetSchemaError, match="older than this sshmonitord needs"):
        asyncio.run(Replicator(st.path, web1, "web1", "test").ship_all())
    now = time.time()
    with pg.connect(web1, autocommit=True) as conn:  # what version 1 let a host write
        conn.execute(
            "UPDATE sshmonitor.hosts SET store_id = %s, shipped_seq = 2 WHERE name = 'web1'",
            (outbox.read_store_id(st.conn),),
        )
        conn.execute(
            "INSERT INTO sshmonitor.events (host, seq, ts, kind) VALUES "
            "('web1', 1, %s, 'auth_failure'), ('web1', 2, %s, 'auth_failure')",
            (now, now),
        )
        conn.execute(
            "INSERT INTO sshmonitor.ban_log (id, host, action, net, rule, reason, created, "
            "expires) VALUES (424242, 'web1', 'ban', '198.51.100.1', 'x', repeat('r', 1000000), "
            "%s, 'NaN')",
            (now,),
        )
    r = sshmonitor("fleet", "init", "--database", pg_server.url(db=pg_db))
    assert r.returncode == 0, r.stderr
    assert f"migrated the fleet schema from version 1 to {fs.LATEST}" in r.stderr
    rep = Replicator(st.path, web1, "web1", "test")
    assert asyncio.run(rep.ship_all()) == 2  # after its old position: records 3 and 4
    with admin_db(pg_server, pg_db) as conn:
        assert conn.execute("SELECT count(*) FROM sshmonitor.events").fetchone()[0] == 4
        assert conn.execute("SELECT count(*) FROM sshmonitor.ban_log").fetchone()[0] == 1
    with pg.connect(web1, autocommit=True) as conn, pytest.raises(pg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO sshmonitor.ban_log (host, action, net, rule, created, expires) "
            "VALUES ('web1', 'ban', '198.51.100.2', 'x', %s, 'NaN')",
            (now,),
        )
    with admin_db(pg_server, pg_db) as conn:
        conn.execute("UPDATE sshmonitor.meta SET value = '1' WHERE key = 'schema_version'")
    with pytest.raises(fs.FleetSchemaError, match="older"):
        asyncio.run(Replicator(st.path, web1, "web1", "test").ship_all())


def admin_db(server: Any, db: str) -> Any:
    return _psycopg().connect(server.url(db=db), autocommit=True)


def test_a_fleet_rule_given_in_part_keeps_its_own_defaults():
    cfg = parse_config("fleet: {database: x, spray: {window: 2h}, correlate: {min_hosts: 4}}")
    assert (cfg.fleet.spray.threshold, cfg.fleet.spray.window) == (20, 7200)
    assert (cfg.fleet.correlate.threshold, cfg.fleet.correlate.min_hosts) == (10, 4)
