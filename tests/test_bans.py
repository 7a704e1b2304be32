"""BanManager with a real store and the in-memory backend: escalation, allowlist, dry run,
persistence across restarts, expiry. (Real nftables/ipset in namespaces: test_backends.py and
test_ban_e2e.py.)"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import time

import pytest

from sshmonitord import config
from sshmonitord.events import Action, Finding, Severity
from sshmonitord.respond.backend import make_backend
from sshmonitord.respond.bans import BanManager, allowlisted, ban_seconds
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


async def _plan(m: BanManager, findings: list[Finding]):
    def go(conn):
        with m.store.transaction():
            return m.plan(conn, findings, time.time())

    recs = await m.store.run(go)
    await m.enforce(recs)
    return recs


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
        with pytest.raises(ValueError, match="allowlisted"):
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
