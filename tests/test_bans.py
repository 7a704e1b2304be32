"""BanManager with a real store and the in-memory backend: escalation, allowlist, dry run,
persistence across restarts, expiry; bans that fail closed when the store cannot write
(decide/enforce first, record later); addresses normalised on every path. (Real
nftables/ipset in namespaces: test_backends.py and test_ban_e2e.py.)

A store that cannot write is SQLite's own refusal (``PRAGMA query_only``): every write raises
``sqlite3.OperationalError`` as a full disk does, and it is switched off again in place."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import sqlite3
import time
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from sshmonitord import config
from sshmonitord.events import Action, Finding, Severity
from sshmonitord.respond import make_backend
from sshmonitord.respond.bans import (
    BanManager,
    BanRecord,
    BanRefused,
    NotCompleted,
    allowlisted,
    ban_seconds,
)
from sshmonitord.store import Store


def finding(net: str, rule: str = "bruteforce", action: Action = Action.BOTH) -> Finding:
    return Finding(rule, Severity.HIGH, net, (), action, "5 or more failures", ban_net=net)


def run(coro):
    return asyncio.run(coro)


async def _manager(tmp_path, backend=None, **resp) -> BanManager:
    store = Store(tmp_path / "state")
    await asyncio.to_thread(store.open)
    cfg = dataclasses.replace(config.ResponseConfig(), **resp)
    allow = (ipaddress.ip_network("192.0.2.0/24"),)
    m = BanManager(store, backend or make_backend("none"), cfg, allow)
    await m.start()
    return m


async def _plan(m: BanManager, findings: list[Finding]) -> list[BanRecord]:
    """The pipeline's order: decide, enforce (firewall), then record in the transaction."""
    recs = m.decide(findings, time.time())
    await m.enforce(recs)
    await _record(m, recs)
    return recs


async def _record(m: BanManager, recs: list[BanRecord]) -> None:
    def go(conn):
        with m.store.transaction():
            m.record(conn, recs)

    await m.store.run(go)
    m.committed(recs)


@contextlib.contextmanager
def store_refuses_writes(m: BanManager) -> Iterator[None]:
    conn = m.store.conn
    conn.execute("PRAGMA query_only = 1")
    try:
        yield
    finally:
        conn.execute("PRAGMA query_only = 0")


async def _rows(m: BanManager) -> list[tuple]:
    return await m.store.run(
        lambda c: [
            tuple(r)
            for r in c.execute(
                "SELECT net, offence, active, lifted_by, dry_run FROM bans ORDER BY id"
            )
        ]
    )


async def _close(m: BanManager) -> None:
    await m.stop()
    m.store.close()


def test_ban_seconds_escalate_and_cap():
    cfg = config.ResponseConfig()
    assert [ban_seconds(cfg, n) for n in (1, 2, 3, 4, 5, 6)] == [
        600,
        2400,
        9600,
        38400,
        153600,
        604800,
    ]


def test_allowlist_covers_loopback_and_configured():
    allow = [ipaddress.ip_network("192.0.2.0/24")]
    assert allowlisted(ipaddress.ip_network("127.0.0.5/32"), allow)
    assert allowlisted(ipaddress.ip_network("::1/128"), allow)
    assert allowlisted(ipaddress.ip_network("192.0.2.9/32"), allow)
    assert allowlisted(ipaddress.ip_network("192.0.0.0/16"), allow)  # would cover it
    assert allowlisted(ipaddress.ip_network("198.51.100.1/32"), allow) is None
    # Normalised first; a network covering an entry overlaps it too.
    lo = ipaddress.ip_network("127.0.0.0/8")
    assert allowlisted(ipaddress.ip_network("::ffff:127.0.0.1/128"), allow) == lo
    assert allowlisted(ipaddress.ip_network("::ffff:0:0/97"), allow) == lo  # 0.0.0.0/1
    assert allowlisted(ipaddress.ip_network("128.0.0.0/1"), allow) == allow[0]
    assert allowlisted(ipaddress.ip_network("::/1"), allow) == ipaddress.ip_network("::1/128")
    assert allowlisted(ipaddress.ip_network("8000::/1"), allow) is None
    assert allowlisted(ipaddress.ip_network("192.0.3.0/24"), allow) is None


def test_plan_enforce_list_and_backend(tmp_path):
    async def go():
        be = make_backend("none")
        m = await _manager(tmp_path, be)
        recs = await _plan(
            m,
            [
                finding("203.0.113.5/32"),
                finding("203.0.113.5/32"),
                finding("192.0.2.7/32"),
                finding("2001:db8:1::/64"),
                finding("198.51.100.1/32", action=Action.ALERT),
            ],
        )
        assert [r.net for r in recs] == ["203.0.113.5/32", "2001:db8:1::/64"]
        assert m.skipped_allowlisted == 1
        present = await be.list()
        assert set(map(str, present)) == {"203.0.113.5/32", "2001:db8:1::/64"}
        assert 590 < present[ipaddress.ip_network("203.0.113.5/32")] <= 600
        # Already banned: a second finding for it plans nothing.
        assert await _plan(m, [finding("203.0.113.5/32")]) == []
        await m.stop()
        m.store.close()

    run(go())


def test_a_ban_past_its_end_counts_as_ended_before_the_maintenance_round(tmp_path):
    """The policy judges "already banned" by the ban's end, not by its presence in memory:
    a finding after the end (the firewall let the address go) bans again, longer, even if
    the 30 s maintenance round has not yet moved the old ban out of ``active``."""

    async def go():
        m = await _manager(tmp_path)
        (r1,) = await _plan(m, [finding("203.0.113.5/32")])
        assert m.decide([finding("203.0.113.5/32")], r1.expires - 1) == []
        (r2,) = m.decide([finding("203.0.113.5/32")], r1.expires)
        assert (r2.offence, int(r2.expires - r2.created)) == (2, 2400)
        await m.enforce([r2])
        await _record(m, [r2])
        await m.persist()  # the old ban's end (replaced) goes in as a maintenance round would
        assert await _rows(m) == [
            ("203.0.113.5/32", 1, 0, "replaced", 0),
            ("203.0.113.5/32", 2, 1, None, 0),
        ]
        await _close(m)

    run(go())


def test_escalation_from_history_and_restore_after_restart(tmp_path):
    async def go():
        m = await _manager(tmp_path)
        (r1,) = await _plan(m, [finding("203.0.113.5/32")])
        assert r1.offence == 1 and int(r1.expires - r1.created) == 600
        assert await m.unban("203.0.113.5")
        (r2,) = await _plan(m, [finding("203.0.113.5/32")])
        assert r2.offence == 2 and int(r2.expires - r2.created) == 2400
        await m.stop()
        m.store.close()
        # A new daemon: the active ban comes back, into a fresh (empty) firewall.
        be = make_backend("none")
        m2 = await _manager(tmp_path, be)
        assert [b["net"] for b in m2.list_active()] == ["203.0.113.5/32"]
        remaining = (await be.list())[ipaddress.ip_network("203.0.113.5/32")]
        assert 2300 < remaining <= 2400
        await m2.stop()
        m2.store.close()

    run(go())


def test_expiry_and_operator_ban(tmp_path):
    async def go():
        m = await _manager(tmp_path)
        rec = await m.ban("198.51.100.0/24", 1, "manual")
        assert rec.net == "198.51.100.0/24" and rec.rule == "operator"
        with pytest.raises(BanRefused, match="allowlisted"):
            await m.ban("192.0.2.1", 60, "oops")
        await asyncio.sleep(1.2)
        assert await m.expire() == ["198.51.100.0/24"]
        assert m.list_active() == []
        rows = await m.store.run(
            lambda c: c.execute("SELECT active, lifted_by FROM bans").fetchall()
        )
        assert [tuple(r) for r in rows] == [(0, "expired")]
        await m.stop()
        m.store.close()

    run(go())


def test_dry_run_records_but_never_calls_the_backend(tmp_path):
    class Exploding:
        name = "exploding"
        expires = True

        async def setup(self):
            raise AssertionError("setup called in dry run")

        async def ban(self, items):
            raise AssertionError("ban called in dry run")

        async def unban(self, nets):
            raise AssertionError("unban called in dry run")

        async def list(self):
            return {}

        async def teardown(self):
            return None

    async def go():
        m = await _manager(tmp_path, Exploding(), dry_run=True)
        (rec,) = await _plan(m, [finding("203.0.113.5/32")])
        assert rec.dry_run and m.list_active()[0]["dry_run"] is True
        await m.stop()
        m.store.close()

    run(go())


# ---------------------------------------------------------------------------- decide / record


class NoStore:
    """Any use of the store is a test failure: decide() and enforce() must not need it."""

    def __getattr__(self, name):
        raise AssertionError(f"store.{name} used")


def test_decide_and_enforce_need_no_store(tmp_path):
    async def go():
        be = make_backend("none")
        m = await _manager(tmp_path, be)
        store, m.store = m.store, NoStore()
        recs = m.decide([finding("203.0.113.5/32"), finding("2001:db8:1::/64")], time.time())
        assert [(r.id, r.net, r.offence) for r in recs] == [
            (0, "203.0.113.5/32", 1),
            (0, "2001:db8:1::/64", 1),
        ]
        await m.enforce(recs)
        assert set(map(str, await be.list())) == {"203.0.113.5/32", "2001:db8:1::/64"}
        assert [b["stored"] for b in m.list_active()] == [False, False]
        m.store = store
        await _record(m, recs)
        assert await _rows(m) == [
            ("203.0.113.5/32", 1, 1, None, 0),
            ("2001:db8:1::/64", 1, 1, None, 0),
        ]
        assert [b["stored"] for b in m.list_active()] == [True, True]
        await _close(m)

    run(go())


def test_decide_normalises_before_every_check(tmp_path):
    """Item 6: ::ffff:127.0.0.1 is loopback, ::ffff:192.0.2.7 is allowlisted, ::ffff:0:0/97
    is 0.0.0.0/1 (too wide), and a link-local network is never a detected ban (item 7)."""

    async def go():
        be = make_backend("none")
        m = await _manager(tmp_path, be)
        recs = await _plan(
            m,
            [
                finding("::ffff:127.0.0.1/128"),
                finding("::ffff:192.0.2.7/128"),
                finding("::ffff:0:0/97"),
                finding("::/0"),
                finding("fe80::/64"),
                finding("::ffff:203.0.113.9/128"),
                finding("203.0.113.9/32"),  # the same address: one ban
            ],
        )
        assert [r.net for r in recs] == ["203.0.113.9/32"]
        assert m.skipped_allowlisted == 3 and m.skipped_refused == 2
        assert set(map(str, await be.list())) == {"203.0.113.9/32"}
        # A later finding in the other spelling is the same, already active ban.
        assert m.decide([finding("::ffff:203.0.113.9/128")], time.time()) == []
        await _close(m)

    run(go())


def test_offence_counts_from_history_and_every_decision(tmp_path):
    async def go():
        m = await _manager(tmp_path)
        old = time.time() - 86400

        def history(conn):
            with m.store.transaction():
                for i, dry in enumerate((0, 0, 1)):
                    conn.execute(
                        "INSERT INTO bans(net, rule, reason, offence, created, expires, active, "
                        "dry_run) VALUES ('203.0.113.5/32', 'r', 'x', 1, ?, ?, 0, ?)",
                        (old + i, old + i + 60, dry),
                    )

        await m.store.run(history)
        await _close(m)
        m = await _manager(tmp_path)  # counts are loaded at start (live bans only: 2)
        (r,) = await _plan(m, [finding("203.0.113.5/32")])
        assert r.offence == 3 and int(r.expires - r.created) == ban_seconds(m.cfg, 3)
        assert await m.unban("203.0.113.5")
        # Counted in memory at once, before any row is stored.
        (r,) = m.decide([finding("203.0.113.5/32")], time.time())
        assert r.offence == 4
        await m.enforce([r])
        assert (await m.ban("203.0.113.5", None, "again")).offence == 5  # replaces it
        (o,) = m.decide([finding("198.51.100.1/32")], time.time())
        assert o.offence == 1
        await m.enforce([o])
        await m.persist()
        rows = await _rows(m)
        assert [x[1] for x in rows if x[0] == "203.0.113.5/32" and not x[4]] == [1, 1, 3, 4, 5]
        assert [x[2] for x in rows if x[0] == "203.0.113.5/32"] == [0, 0, 0, 0, 0, 1]
        await _close(m)
        m = await _manager(tmp_path)
        assert [b["net"] for b in m.list_active()] == ["203.0.113.5/32", "198.51.100.1/32"]
        assert await m.unban("198.51.100.1")
        (r,) = await _plan(m, [finding("::ffff:198.51.100.1/128")])
        assert (r.net, r.offence) == ("198.51.100.1/32", 2)
        await _close(m)

    run(go())


def test_record_after_a_rolled_back_transaction(tmp_path):
    async def go():
        m = await _manager(tmp_path)
        recs = m.decide([finding("203.0.113.5/32")], time.time())
        await m.enforce(recs)

        def failing(conn):
            with m.store.transaction():
                m.record(conn, recs)
                raise sqlite3.OperationalError("database or disk is full")

        with pytest.raises(sqlite3.OperationalError):
            await m.store.run(failing)
        assert await _rows(m) == []  # rolled back: nothing may stick
        await _record(m, recs)
        await _record(m, recs)  # a second time (e.g. persist got there first): one row
        await m.persist()
        assert await _rows(m) == [("203.0.113.5/32", 1, 1, None, 0)]
        assert await m.unban("203.0.113.5")
        assert await _rows(m) == [("203.0.113.5/32", 1, 0, "operator", 0)]
        await _close(m)

    run(go())


def test_bans_hold_while_the_store_cannot_write(tmp_path):
    """Item 4's ban side: the firewall gets the ban while every write fails; the row comes
    when the store can write again, and a ban that ended meanwhile is written ended."""

    async def go():
        be = make_backend("none")
        m = await _manager(tmp_path, be, bantime=config.Duration(1))
        with store_refuses_writes(m):
            kept, lifted, expired = m.decide(
                [finding("203.0.113.5/32"), finding("203.0.113.6/32"), finding("203.0.113.7/32")],
                time.time(),
            )
            await m.enforce([kept, lifted, expired])
            with pytest.raises(sqlite3.OperationalError):
                await _record(m, [kept, lifted, expired])
            assert len(await be.list()) == 3
            with pytest.raises(NotCompleted, match=r"unbanned 203\.0\.113\.6/32 in the firewall"):
                await m.unban("203.0.113.6")
            assert ipaddress.ip_network("203.0.113.6/32") not in await be.list()
            await asyncio.sleep(1.1)
            errors = m.describe()["stats"]["store_errors"]
            assert await m.expire() == [kept.net, expired.net]  # counted, never raised
            assert m.describe()["stats"]["store_errors"] == errors + 1
            op = await asyncio.wait_for(_ban_expecting_store_error(m, "198.51.100.9"), 5)
            assert ipaddress.ip_network("198.51.100.9/32") in await be.list()
            assert m.describe()["stats"]["unsaved"] == 4
            assert m.describe()["warnings"]
        # The store writes again: the pipeline's retry and the maintenance round both store.
        await _record(m, [kept, lifted, expired])
        await m.persist()
        assert await _rows(m) == [
            ("203.0.113.5/32", 1, 0, "expired", 0),
            ("203.0.113.6/32", 1, 0, "operator", 0),
            ("203.0.113.7/32", 1, 0, "expired", 0),
            ("198.51.100.9/32", 1, 1, None, 0),
        ]
        assert m.describe()["stats"]["unsaved"] == 0 and m.describe()["warnings"] == []
        await _close(m)
        m2 = await _manager(tmp_path)  # only the operator ban comes back
        assert [b["net"] for b in m2.list_active()] == [op]
        await _close(m2)

    run(go())


async def _ban_expecting_store_error(m: BanManager, address: str) -> str:
    with pytest.raises(NotCompleted, match="in the firewall, but the store cannot record it"):
        await m.ban(address, 600, "manual")
    return f"{address}/32"


def test_operator_ban_refusals_and_force(tmp_path):
    async def go():
        be = make_backend("none")
        m = await _manager(tmp_path, be)
        for text, force, match in [
            ("not-an-ip", False, "not an IP address"),
            ("127.0.0.1", True, "allowlisted"),
            ("::ffff:127.0.0.1", True, "allowlisted"),
            ("::ffff:192.0.2.7", True, "allowlisted"),
            ("::ffff:200.0.0.0/104", False, "200.0.0.0/8 is wider than"),
            ("::ffff:0:0/97", True, "covers the allowlisted 127.0.0.0/8"),
            ("10.0.0.0/8", False, "max_ban_prefix.ipv4"),
            ("2001:db8::/31", False, "max_ban_prefix.ipv6"),
            ("fe80::/64", False, "link-local"),
            ("::/0", True, "never banned"),
            ("0.0.0.0/0", True, "never banned"),
            ("ff02::1", True, "multicast"),
        ]:
            with pytest.raises(BanRefused, match=match) as info:
                await m.ban(text, None, "test", force=force)
            assert info.value.usage and "\n" not in str(info.value), text
        assert await be.list() == {} and await _rows(m) == []
        r = await m.ban("10.1.2.3/8", 60, "test", force=True)
        assert r.net == "10.0.0.0/8"
        r = await m.ban("fe80::%eth0/64", 60, "test", force=True)
        assert r.net == "fe80::/64"
        r = await m.ban("fe80::1%eth0", 60, "test")
        assert r.net == "fe80::1/128"
        assert set(map(str, await be.list())) == {"10.0.0.0/8", "fe80::/64", "fe80::1/128"}
        with pytest.raises(BanRefused, match="at least 1s"):
            await m.ban("198.51.100.1", -5, "test")
        await _close(m)

    run(go())


def test_unban_normalises_and_says_when_nothing_was_banned(tmp_path):
    async def go():
        be = make_backend("none")
        m = await _manager(tmp_path, be)
        await m.ban("203.0.113.9", 600, "test")
        await m.ban("2001:db8:5::/64", 600, "test")
        with capture_logs() as logs:
            assert await m.unban("::ffff:203.0.113.9") is True
            assert await m.unban("198.51.100.77") is False
        assert set(map(str, await be.list())) == {"2001:db8:5::/64"}
        unbanned = [e for e in logs if e["event"] == "unbanned"]
        assert [e["net"] for e in unbanned] == ["203.0.113.9/32"]
        quiet = [e for e in logs if e.get("net") == "198.51.100.77/32"]
        assert quiet and all(e["log_level"] == "info" for e in quiet)
        assert m.covered_by("2001:db8:5::1") == "2001:db8:5::/64"
        assert m.covered_by("2001:db8:6::1") is None
        with pytest.raises(BanRefused, match="not an IP address"):
            await m.unban("not-an-ip")
        await _close(m)

    run(go())


def test_restore_normalises_stored_rows_and_rechecks_the_allowlist(tmp_path):
    """Rows an older version wrote in the mapped form come back as IPv4; one that is loopback
    or allowlisted (it was banned through the mapped-address bypass) is lifted."""

    async def go():
        m = await _manager(tmp_path)
        now = time.time()

        def old_rows(conn):
            with m.store.transaction():
                for net in (
                    "::ffff:203.0.113.9/128",
                    "::ffff:127.0.0.1/128",
                    "::ffff:192.0.2.5/128",
                    "::ffff:0:0/97",
                ):
                    conn.execute(
                        "INSERT INTO bans(net, rule, reason, offence, created, expires) "
                        "VALUES (?, 'bruteforce', 'x', 1, ?, ?)",
                        (net, now, now + 3600),
                    )

        await m.store.run(old_rows)
        await _close(m)
        be = make_backend("none")
        with capture_logs() as logs:
            m = await _manager(tmp_path, be)
        assert [b["net"] for b in m.list_active()] == ["203.0.113.9/32"]
        assert set(map(str, await be.list())) == {"203.0.113.9/32"}
        assert await _rows(m) == [
            ("203.0.113.9/32", 1, 1, None, 0),
            ("::ffff:127.0.0.1/128", 1, 0, "allowlisted", 0),
            ("::ffff:192.0.2.5/128", 1, 0, "allowlisted", 0),
            ("::ffff:0:0/97", 1, 0, "allowlisted", 0),
        ]
        assert sum(e["event"] == "lifting a stored ban" for e in logs) == 3
        # Its history counts under the normalised name.
        assert await m.unban("203.0.113.9")
        (r,) = await _plan(m, [finding("203.0.113.9/32")])
        assert r.offence == 2
        await _close(m)

    run(go())
