"""Detection rules on plain event lists (the engine is pure: no clock, no I/O)."""

from __future__ import annotations

import dataclasses
import ipaddress
import resource
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sshmonitord import config
from sshmonitord.detect.engine import Engine, History
from sshmonitord.detect.windows import WindowCounter, addr_key, key_network
from sshmonitord.events import Event, Kind

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # a Tuesday, noon


def ev(
    kind: Kind,
    ip: str | None = "203.0.113.5",
    user: str | None = "root",
    dt: float = 0,
    count: int = 1,
    **kw,
) -> Event:
    return Event(
        T0 + timedelta(seconds=dt),
        "h",
        "sshd",
        1,
        kind,
        user,
        ipaddress.ip_address(ip) if ip else None,
        2222,
        kw.pop("method", "password"),
        count=count,
        **kw,
    )


def engine(**rules) -> Engine:
    cfg = config.DetectionConfig()
    if rules:
        r = cfg.rules
        for name, changes in rules.items():
            r = dataclasses.replace(r, **{name: dataclasses.replace(getattr(r, name), **changes)})
        cfg = dataclasses.replace(cfg, rules=r)
    return Engine(cfg, History(since=0.0), zone=UTC)


def rules_of(findings) -> list[str]:
    return [f.rule for f in findings]


def test_bruteforce_fires_on_the_fifth_failure_once():
    e = engine()
    out = [e.feed(ev(Kind.AUTH_FAILURE, dt=i * 10)) for i in range(7)]
    assert [rules_of(o) for o in out] == [[], [], [], [], ["bruteforce"], [], []]
    f = out[4][0]
    assert f.subject == "203.0.113.5/32" and f.ban_net == "203.0.113.5/32"
    assert f.action == "both" and f.severity == "high"
    assert len(f.events) == 5 and all(x.kind is Kind.AUTH_FAILURE for x in f.events)


def test_bruteforce_window_is_exact():
    e = engine()
    # 4 failures, then the 5th just outside 10 minutes of the first: no finding.
    for i in range(4):
        assert e.feed(ev(Kind.AUTH_FAILURE, dt=i)) == []
    assert e.feed(ev(Kind.AUTH_FAILURE, dt=600.5)) == []
    # ... but inside 10 minutes of the second it is the 5th.
    e2 = engine()
    for i in range(4):
        e2.feed(ev(Kind.AUTH_FAILURE, dt=i))
    assert rules_of(e2.feed(ev(Kind.AUTH_FAILURE, dt=599))) == ["bruteforce"]


def test_repeated_message_counts_its_repeats():
    e = engine()
    assert rules_of(e.feed(ev(Kind.AUTH_FAILURE, count=5))) == ["bruteforce"]


def test_slow_bruteforce_catches_pacing_under_findtime():
    e = engine()
    rules = []
    for i in range(20):  # one attempt every 3 minutes: never 5 in 10 minutes
        rules += rules_of(e.feed(ev(Kind.AUTH_FAILURE, dt=i * 180)))
    assert rules == ["slow_bruteforce"]


def test_scanner_disconnects_count_only_for_never_authenticated_addresses():
    e = engine()
    out = []
    for i in range(5):
        out += e.feed(ev(Kind.PREAUTH_DISCONNECT, user=None, dt=i))
    assert rules_of(out) == ["bruteforce"]
    e = engine(success_after_failures={"enabled": False})
    e.feed(ev(Kind.AUTH_SUCCESS, ip="198.51.100.9", user="alice"))
    out = []
    for i in range(10):
        out += e.feed(ev(Kind.PREAUTH_DISCONNECT, ip="198.51.100.9", user=None, dt=i))
    assert out == []


def test_weights_zero_disables_a_kind():
    cfg = config.DetectionConfig(failure_weights={**config.FAILURE_WEIGHTS, "protocol_error": 0})
    e = Engine(cfg, History(since=0.0))
    assert e.feed_all(ev(Kind.PROTOCOL_ERROR, dt=i) for i in range(10)) == []


def test_ipv6_is_aggregated_per_64():
    e = engine()
    out = []
    for i in range(5):
        out += e.feed(ev(Kind.AUTH_FAILURE, ip=f"2001:db8:1:2::{i + 1:x}", dt=i))
    assert rules_of(out) == ["bruteforce"]
    assert out[0].ban_net == "2001:db8:1:2::/64"
    # A different /64 is a different key.
    assert e.feed(ev(Kind.AUTH_FAILURE, ip="2001:db8:1:3::1", dt=9)) == []


def test_enumeration_distinct_invalid_names():
    e = engine(bruteforce={"enabled": False}, slow_bruteforce={"enabled": False})
    out = []
    for i, name in enumerate(["a", "b", "a", "c", "d", "e"]):
        out += e.feed(ev(Kind.INVALID_USER, user=name, dt=i))
    assert rules_of(out) == ["enumeration"]
    assert "5 invalid user names" in out[0].summary


def test_distributed_many_addresses_one_user():
    e = engine()
    out = []
    for i in range(12):
        out += e.feed(ev(Kind.AUTH_FAILURE, ip=f"192.0.2.{i + 1}", user="root", dt=i))
    assert rules_of(out) == ["distributed"]
    assert out[0].subject == "user root" and out[0].action == "alert"


def test_success_after_failures_is_critical_with_evidence():
    e = engine()
    for i in range(6):
        e.feed(ev(Kind.AUTH_FAILURE, user="alice", dt=i))
    out = e.feed(ev(Kind.AUTH_SUCCESS, user="alice", dt=10))
    f = next(x for x in out if x.rule == "success_after_failures")
    assert f.severity == "critical"
    assert [x.kind for x in f.events] == [Kind.AUTH_FAILURE] * 6 + [Kind.AUTH_SUCCESS]
    assert "possible compromise" in f.summary
    assert "6 failed attempts from 203.0.113.5/32" in f.summary


def test_success_after_failures_by_user_from_other_addresses():
    e = engine(distributed={"enabled": False})
    e.history.sources["bob"] = {"192.0.2.0/24"}
    for i in range(5):
        e.feed(ev(Kind.AUTH_FAILURE, ip=f"203.0.113.{i + 1}", user="bob", dt=i))
    out = e.feed(ev(Kind.AUTH_SUCCESS, ip="198.51.100.1", user="bob", dt=10))
    f = next(x for x in out if x.rule == "success_after_failures")
    assert f.severity == "critical" and f.subject == "user bob"
    assert "5 addresses failed against bob" in f.summary


def test_plain_success_raises_nothing():
    e = Engine(config.DetectionConfig(), History())  # learning starts with this login
    assert e.feed(ev(Kind.AUTH_SUCCESS, user="alice")) == []


def test_root_login():
    e = engine()
    assert "root_login" in rules_of(e.feed(ev(Kind.AUTH_SUCCESS, user="root")))


def test_off_hours_by_event_time():
    e = engine(off_hours={"enabled": True, "hours": "08:00-19:00"})
    assert "off_hours" not in rules_of(e.feed(ev(Kind.AUTH_SUCCESS, user="a")))  # Tue 12:00
    assert "off_hours" in rules_of(e.feed(ev(Kind.AUTH_SUCCESS, user="a", dt=10 * 3600)))
    assert "off_hours" in rules_of(e.feed(ev(Kind.AUTH_SUCCESS, user="a", dt=4 * 86400)))  # Sat


def test_new_source_and_new_key_after_learning():
    h = History(
        sources={"alice": {"192.0.2.0/24"}},
        keys={"alice": {"SHA256:old"}},
        since=T0.timestamp() - 30 * 86400,
    )
    e = Engine(config.DetectionConfig(), h)
    assert (
        e.feed(
            ev(
                Kind.AUTH_SUCCESS,
                ip="192.0.2.77",
                user="alice",
                key_fp="SHA256:old",
                method="publickey",
            )
        )
        == []
    )
    out = e.feed(
        ev(
            Kind.AUTH_SUCCESS,
            ip="198.51.100.7",
            user="alice",
            key_fp="SHA256:new",
            method="publickey",
            dt=5,
        )
    )
    assert sorted(rules_of(out)) == ["new_key", "new_source"]
    # Learned: the same again is quiet.
    assert (
        e.feed(
            ev(
                Kind.AUTH_SUCCESS,
                ip="198.51.100.8",
                user="alice",
                key_fp="SHA256:new",
                method="publickey",
                dt=9,
            )
        )
        == []
    )


def test_new_source_quiet_while_learning():
    e = Engine(config.DetectionConfig(), History())
    assert e.feed(ev(Kind.AUTH_SUCCESS, ip="192.0.2.1", user="alice")) == []
    assert e.feed(ev(Kind.AUTH_SUCCESS, ip="198.51.100.1", user="alice", dt=86400)) == []
    out = e.feed(ev(Kind.AUTH_SUCCESS, ip="203.0.113.1", user="alice", dt=8 * 86400))
    assert rules_of(out) == ["new_source"]


def test_injected_user_name_never_counts_against_another_address():
    from sshmonitord.parse import Parser

    p = Parser(reference=datetime(2026, 11, 25, tzinfo=UTC))
    e = engine()
    out = []
    for i in range(6):
        line = (
            f"Nov 24 12:00:0{i} h sshd[1]: Failed password for invalid user x from "
            f"6.6.6.6 port 1 ssh2 from 203.0.113.9 port {1000 + i} ssh2"
        )
        out += e.feed(p.parse_text(line))
    assert [f.ban_net for f in out if f.ban_net] == ["203.0.113.9/32"]
    assert addr_key(ipaddress.ip_address("6.6.6.6")) not in e.by_ip.data


def test_keys_round_trip():
    for a in ["203.0.113.5", "2001:db8:1:2:3:4:5:6"]:
        k = addr_key(ipaddress.ip_address(a))
        assert ipaddress.ip_address(a) in key_network(k)


def test_window_counter_cap_evicts_least_recent():
    w = WindowCounter(keep=5, horizon=600, max_keys=1000)
    for i in range(1000):
        w.add(i, float(i))
    w.add(0, 2000.0)  # key 0 seen again: now the most recent
    w.add(5000, 2001.0)  # over the cap: evict a tenth, least recently seen first
    assert len(w) == 901 and w.evicted == 100
    assert 0 in w.data and 1 not in w.data and 100 not in w.data and 101 in w.data


def test_window_counter_sweep_expires_idle_keys():
    w = WindowCounter(keep=5, horizon=600)
    w.add("a", 0.0)
    w.add("b", 1000.0)
    assert w.sweep(1200.0) == 1 and "a" not in w.data and "b" in w.data


def test_a_million_addresses_stay_bounded():
    # Unit-scale check of the bound the benchmark measures in full (bench/detect.py).
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    e = engine()
    base = int(ipaddress.ip_address("10.0.0.0"))
    for i in range(200_000):
        e.feed(
            Event(
                T0,
                "h",
                "sshd",
                1,
                Kind.AUTH_FAILURE,
                "root",
                ipaddress.IPv4Address(base + i),
                22,
                "password",
            )
        )
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert len(e.by_ip) == 200_000
    assert grown_kb < 200_000 * 1.5  # well under 1.5 KB per address


def _attempts(lines: list[str]) -> list:
    from sshmonitord.parse import Parser

    p = Parser(reference=datetime(2026, 11, 25, tzinfo=UTC))
    e = engine()
    out = []
    for line in lines:
        out += e.feed(p.parse_text(line))
    return out


def test_one_attempt_counts_once_however_many_lines_sshd_writes():
    # What a real OpenSSH 9.2 with UsePAM yes writes for one failed password per connection
    # (tests/test_real_sshd.py shows the same lines from a real sshd): 4 attempts = 4 counts.
    lines = []
    for i in range(4):
        pid = 100 + i
        lines += [
            f"Nov 24 12:00:0{i} h sshd[{pid}]: pam_unix(sshd:auth): authentication failure; "
            "logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.9  user=bob",
            f"Nov 24 12:00:0{i} h sshd[{pid}]: Failed password for bob from 203.0.113.9 port "
            f"{4000 + i} ssh2",
            f"Nov 24 12:00:0{i} h sshd[{pid}]: Connection closed by authenticating user bob "
            f"203.0.113.9 port {4000 + i} [preauth]",
        ]
    assert _attempts(lines) == []
    # Invalid users: "Invalid user" + "Failed password for invalid user" is one attempt.
    lines = []
    for i in range(4):
        pid = 200 + i
        lines += [
            f"Nov 24 12:00:0{i} h sshd[{pid}]: Invalid user u{i} from 203.0.113.9 port {5000 + i}",
            f"Nov 24 12:00:0{i} h sshd[{pid}]: Failed password for invalid user u{i} from "
            f"203.0.113.9 port {5000 + i} ssh2",
            f"Nov 24 12:00:0{i} h sshd[{pid}]: Connection closed by invalid user u{i} "
            f"203.0.113.9 port {5000 + i} [preauth]",
        ]
    assert _attempts(lines) == []
    # ... and the fifth attempt bans.
    more = [
        *lines,
        "Nov 24 12:00:09 h sshd[300]: Failed password for root from 203.0.113.9 port 6000 ssh2",
    ]
    assert [f.rule for f in _attempts(more)] == ["bruteforce"]


def test_max_auth_exceeded_restates_the_failures_of_its_connection():
    lines = [
        "Nov 24 12:00:00 h sshd[7]: Failed password for root from 203.0.113.9 port 1 ssh2",
        "Nov 24 12:00:00 h sshd[7]: Failed password for root from 203.0.113.9 port 1 ssh2",
        "Nov 24 12:00:00 h sshd[7]: Failed password for root from 203.0.113.9 port 1 ssh2",
        "Nov 24 12:00:00 h sshd[7]: Failed password for root from 203.0.113.9 port 1 ssh2",
        "Nov 24 12:00:00 h sshd[7]: error: maximum authentication attempts exceeded for root "
        "from 203.0.113.9 port 1 ssh2 [preauth]",
        "Nov 24 12:00:00 h sshd[7]: Disconnecting authenticating user root 203.0.113.9 port 1: "
        "Too many authentication failures [preauth]",
    ]
    assert _attempts(lines) == []


def test_a_scanner_that_only_connects_is_counted():
    lines = [
        f"Nov 24 12:00:0{i} h sshd[{40 + i}]: Connection closed by 203.0.113.9 port {i + 1} "
        "[preauth]"
        for i in range(5)
    ]
    assert [f.rule for f in _attempts(lines)] == ["bruteforce"]


def test_user_under_attack_logging_in_with_a_key_is_not_a_compromise():
    # A botnet sprays "deploy" from many addresses; the real deploy user logs in with a key.
    e = engine(distributed={"enabled": False})
    for i in range(5):
        e.feed(ev(Kind.AUTH_FAILURE, ip=f"192.0.2.{i + 1}", user="deploy", dt=i))
    out = e.feed(
        ev(
            Kind.AUTH_SUCCESS,
            ip="198.51.100.7",
            user="deploy",
            dt=10,
            method="publickey",
            key_fp="SHA256:k",
        )
    )
    assert "success_after_failures" not in rules_of(out)
    # ... or with a password from a network they always use.
    h = History(sources={"deploy": {"198.51.100.0/24"}}, since=0.0)
    e2 = Engine(config.DetectionConfig(), h)
    for i in range(5):
        e2.feed(ev(Kind.AUTH_FAILURE, ip=f"192.0.2.{i + 1}", user="deploy", dt=i))
    assert "success_after_failures" not in rules_of(
        e2.feed(ev(Kind.AUTH_SUCCESS, ip="198.51.100.7", user="deploy", dt=10))
    )
    # A password login from a new network after the spray is what a compromise looks like.
    assert "success_after_failures" in rules_of(
        e2.feed(ev(Kind.AUTH_SUCCESS, ip="203.0.113.66", user="deploy", dt=11))
    )


def test_login_history_round_trips_through_the_store(tmp_path):
    """The engine's side is pure (detect.engine.logins), the SQL is the store's
    (store/history.py); a restart sees the same sources, keys and start."""
    from sshmonitord.detect.engine import History, logins
    from sshmonitord.store import Store
    from sshmonitord.store import history as history_store

    e = engine()
    evs = [
        ev(Kind.AUTH_SUCCESS, ip="192.0.2.77", user="alice", key_fp="SHA256:k1", dt=10),
        ev(Kind.AUTH_SUCCESS, ip="2001:db8:5:6::1", user="alice", dt=20),
        ev(Kind.AUTH_SUCCESS, ip=None, user="bob", key_fp="SHA256:k2", dt=30),
        ev(Kind.AUTH_FAILURE, ip="198.51.100.1", user="mallory", dt=40),
    ]
    assert [(x.user, x.prefix, x.key_fp) for x in logins(evs, e)] == [
        ("alice", "192.0.2.0/24", "SHA256:k1"),
        ("alice", "2001:db8:5::/48", None),
        ("bob", None, "SHA256:k2"),
    ]
    store = Store(tmp_path / "state")
    store.open()
    try:
        with store.transaction():
            history_store.save(store.conn, logins(evs, e))
            history_store.save(store.conn, logins(evs[:1], e))  # again: first_seen stays
        h = History(*history_store.load(store.conn))
    finally:
        store.close()
    assert h.sources == {"alice": {"192.0.2.0/24", "2001:db8:5::/48"}}
    assert h.keys == {"alice": {"SHA256:k1"}, "bob": {"SHA256:k2"}}
    assert h.since == (T0 + timedelta(seconds=10)).timestamp()


def test_distinct_counter_limit_stops_counting_but_answers_at_least() -> None:
    from sshmonitord.detect.windows import DistinctCounter

    c = DistinctCounter(100, 3600)
    for i in range(50):
        c.add("root", i, float(i))
    assert c.count("root", 0.0) == 50
    assert c.count("root", 0.0, 10) == 10
    assert c.count("root", 45.0, 10) == 5  # fewer than the limit inside the window
    assert c.count("root", 100.0, 10) == 0


def test_the_same_sshd_pid_on_two_hosts_is_two_connections():
    """A follow-up line restates a counted failure only on its own connection: the same pid
    on another host (a relay's log) is another connection, whichever host came first."""
    for first in ("h", "web2"):
        e = engine(bruteforce={"threshold": 4})
        other = "web2" if first == "h" else "h"
        found = []
        for i in range(2):
            pid = str(7 + i)
            a = ev(Kind.AUTH_FAILURE, dt=i * 3, session=pid)
            a.host = first
            found += e.feed(a)
            # The same pid on the other host: its own scanner connection, counted.
            b = ev(Kind.PREAUTH_DISCONNECT, user=None, dt=i * 3 + 1, session=pid)
            b.host = other
            found += e.feed(b)
            # On the first host it restates the failure above: not counted.
            c = ev(Kind.PREAUTH_DISCONNECT, user=None, dt=i * 3 + 2, session=pid)
            c.host = first
            found += e.feed(c)
        assert rules_of(found) == ["bruteforce"], first  # 2 failures + 2 on the other host
        assert e.by_ip.count(addr_key(ipaddress.ip_address("203.0.113.5")), 0) == 2


def _old_source_prefix(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, v4: int, v6: int) -> str:
    """source_prefix as it was: the address spelt, parsed back as a network."""
    bits = v4 if ip.version == 4 else v6
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


@given(
    v=st.integers(0, 2**128 - 1),
    v4=st.integers(0, 32),
    v6=st.integers(0, 128),
    sparse=st.lists(st.sampled_from([0, 0, 1, 0xFFFF, 0x2001]), min_size=8, max_size=8),
)
def test_source_prefix_is_ipaddress_own_network(
    v: int, v4: int, v6: int, sparse: list[int]
) -> None:
    from sshmonitord.detect.engine import source_prefix

    zeros = 0
    for h in sparse:
        zeros = zeros << 16 | h
    for ip in (
        ipaddress.IPv4Address(v >> 96),
        ipaddress.IPv6Address(v),
        ipaddress.IPv6Address(zeros),
    ):
        assert source_prefix(ip, v4, v6) == _old_source_prefix(ip, v4, v6)


def test_source_prefix_edges() -> None:
    from sshmonitord.detect.engine import source_prefix

    for text in ("0.0.0.0", "255.255.255.255", "203.0.113.77", "::", "::1", "::ffff:1.2.3.4",
                 "::1.2.3.4", "2001:db8::1", "fe80::1%eth0", "fe80::1%9"):  # fmt: skip
        ip = ipaddress.ip_address(text)
        for v4, v6 in ((24, 48), (32, 128), (0, 0), (8, 16)):
            assert source_prefix(ip, v4, v6) == _old_source_prefix(ip, v4, v6), (text, v4, v6)
    # A prefix the config would refuse: the same error as before.
    for bits in (33, -1):
        with pytest.raises(ValueError):
            source_prefix(ipaddress.IPv4Address("192.0.2.1"), bits, 48)
        with pytest.raises(ValueError):
            _old_source_prefix(ipaddress.IPv4Address("192.0.2.1"), bits, 48)
