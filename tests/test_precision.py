"""Precision (issue #13): a high or critical finding means an attack, never routine use.

success_after_failures: critical means a credible compromise, never a user's own typos.

Each case is one of the shapes issue #13 found paging the operator (or one that must keep
paging): the engine is pure, so plain event lists are enough here; bench/detection.py
measures the same on labelled logs.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

from sshmonitord import config
from sshmonitord.detect.engine import Engine, History
from sshmonitord.events import Event, Finding, Kind

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
OFFICE = "192.0.2.10"  # the office NAT: 192.0.2.0/24 is every employee's usual network
ATTACKER = "203.0.113.66"


def ev(
    kind: Kind,
    ip: str,
    user: str,
    dt: float,
    method: str = "password",
    pid: int = 1,
    key_fp: str | None = None,
) -> Event:
    return Event(
        T0 + timedelta(seconds=dt),
        "h",
        "sshd",
        pid,
        kind,
        user,
        ipaddress.ip_address(ip),
        40000 + pid,
        method,
        key_fp,
        session=str(pid),
    )


def engine(users: tuple[str, ...] = ("alice", "bob", "carol", "dave", "erin", "frank")) -> Engine:
    history = History(
        sources={u: {"192.0.2.0/24"} for u in users},
        keys={},
        since=T0.timestamp() - 30 * 86400,
    )
    return Engine(config.DetectionConfig(), history, zone=UTC)


def compromise(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.rule == "success_after_failures"]


def paged(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity in ("high", "critical")]


def typos(e: Engine, ip: str, user: str, dt: float, n: int, pid: int) -> list[Finding]:
    out: list[Finding] = []
    for i in range(n):
        out += e.feed(ev(Kind.AUTH_FAILURE, ip, user, dt + i * 5, pid=pid))
    return out


def test_three_typos_on_one_connection_then_login_is_nothing() -> None:
    e = engine()
    out = typos(e, OFFICE, "alice", 0, 3, pid=100)  # one connection's three prompts
    out += e.feed(ev(Kind.AUTH_SUCCESS, OFFICE, "alice", 30, pid=101))
    assert out == []


def test_explained_failures_do_not_add_up_later() -> None:
    """4 typos, login; 4 more typos ten minutes later, login; again: never 5 failures."""
    e = engine()
    out: list[Finding] = []
    for round_ in range(4):
        t = round_ * 180
        out += typos(e, OFFICE, "alice", t, 4, pid=200 + round_)
        out += e.feed(ev(Kind.AUTH_SUCCESS, OFFICE, "alice", t + 60, pid=300 + round_))
    assert out == []  # not even bruteforce: 16 failures in 10 minutes, all explained


def test_office_nat_six_users_each_mistype_once_then_log_in() -> None:
    e = engine()
    users = ["alice", "bob", "carol", "dave", "erin", "frank"]
    out: list[Finding] = []
    # The worst order: every typo first, then every login, all inside ten minutes.
    for i, u in enumerate(users[:4]):
        out += e.feed(ev(Kind.AUTH_FAILURE, OFFICE, u, i * 20, pid=10 + i))
    for i, u in enumerate(users):
        out += e.feed(ev(Kind.AUTH_SUCCESS, OFFICE, u, 100 + i * 20, pid=20 + i))
    assert paged(out) == [] and compromise(out) == []


def test_clumsy_user_on_usual_network_is_recorded_not_paged() -> None:
    e = engine()
    out = typos(e, OFFICE, "alice", 0, 6, pid=1)
    out += e.feed(ev(Kind.AUTH_SUCCESS, OFFICE, "alice", 60, pid=2))
    [f] = compromise(out)
    assert f.severity == "info"
    assert "usual network" in f.summary and "own mistakes" in f.summary


def test_brute_force_then_password_success_is_critical_and_says_why() -> None:
    e = engine()
    for i in range(20):
        e.feed(ev(Kind.AUTH_FAILURE, ATTACKER, "alice", i * 3, pid=500 + i // 3))
    [f] = compromise(e.feed(ev(Kind.AUTH_SUCCESS, ATTACKER, "alice", 70, pid=600)))
    assert f.severity == "critical" and f.subject == f"{ATTACKER}/32"
    assert "20 failed attempts from 203.0.113.66/32 within 1h" in f.summary
    assert "alice had never logged in from 203.0.113.0/24" in f.summary
    assert f.summary.endswith("possible compromise")
    assert f.events[-1].kind is Kind.AUTH_SUCCESS


def test_dormant_account_without_history_is_critical() -> None:
    e = engine()
    for i in range(8):
        e.feed(ev(Kind.AUTH_FAILURE, ATTACKER, "test", i, pid=700))
    [f] = compromise(e.feed(ev(Kind.AUTH_SUCCESS, ATTACKER, "test", 20, pid=701)))
    assert f.severity == "critical" and "no earlier login on record" in f.summary


def test_key_login_after_failures_from_that_address_is_not_paged() -> None:
    e = engine()
    for i in range(8):
        e.feed(ev(Kind.AUTH_FAILURE, ATTACKER, "alice", i, pid=800))
    [f] = compromise(
        e.feed(
            ev(Kind.AUTH_SUCCESS, ATTACKER, "alice", 20, method="publickey", key_fp="SHA256:k")
        )
    )
    assert f.severity == "info" and "used a key" in f.summary


def test_spray_then_password_success_from_a_new_network_is_critical() -> None:
    e = engine()
    for i in range(12):  # a botnet: twelve addresses, one or two tries each
        e.feed(ev(Kind.AUTH_FAILURE, f"198.51.100.{i + 1}", "bob", i * 60, pid=900 + i))
    [f] = compromise(e.feed(ev(Kind.AUTH_SUCCESS, "198.51.100.5", "bob", 900, pid=950)))
    assert f.severity == "critical" and f.subject == "user bob"
    assert "12 addresses failed against bob within 1h, this one among them" in f.summary


def test_spray_then_login_from_the_usual_network_is_nothing() -> None:
    e = engine()
    for i in range(12):
        e.feed(ev(Kind.AUTH_FAILURE, f"198.51.100.{i + 1}", "bob", i * 60, pid=900 + i))
    assert compromise(e.feed(ev(Kind.AUTH_SUCCESS, OFFICE, "bob", 900, pid=950))) == []


def test_a_login_as_guest_never_clears_an_attack_on_root() -> None:
    e = engine(users=("alice",))
    for i in range(5):
        e.feed(ev(Kind.AUTH_FAILURE, ATTACKER, "root", i, pid=40))
    [guest] = compromise(e.feed(ev(Kind.AUTH_SUCCESS, ATTACKER, "guest", 10, pid=41)))
    assert guest.severity == "critical" and "all against other user names" in guest.summary
    e.feed(ev(Kind.AUTH_FAILURE, ATTACKER, "root", 20, pid=42))
    [root] = compromise(e.feed(ev(Kind.AUTH_SUCCESS, ATTACKER, "root", 30, pid=43)))
    assert root.severity == "critical" and "6 failed attempts" in root.summary


def test_an_attack_from_inside_the_usual_network_still_pages() -> None:
    e = engine()
    for i in range(6):  # names nobody logs in with from the office
        e.feed(ev(Kind.INVALID_USER, OFFICE, f"admin{i}", i, pid=60 + i))
    [f] = compromise(e.feed(ev(Kind.AUTH_SUCCESS, OFFICE, "alice", 20, pid=70)))
    assert f.severity == "critical" and "all against other user names" in f.summary


def test_typos_behind_the_nat_are_not_an_attackers_attempts() -> None:
    e = engine()
    for i, u in enumerate(["bob", "carol", "dave", "erin"]):
        e.feed(ev(Kind.AUTH_FAILURE, OFFICE, u, i, pid=80 + i))
    e.feed(ev(Kind.AUTH_FAILURE, OFFICE, "alice", 5, pid=90))
    assert compromise(e.feed(ev(Kind.AUTH_SUCCESS, OFFICE, "alice", 20, pid=91))) == []


def test_enumeration_and_bruteforce_on_one_line_headline_says_enumeration() -> None:
    """25 invalid names from one address: at the defaults the 5th reaches bruteforce and
    enumeration on the same line; the message's headline names the specific one."""
    from sshmonitord.notify import Alert, render

    e = engine()
    found: list[Finding] = []
    for i in range(25):
        found += e.feed(ev(Kind.INVALID_USER, ATTACKER, f"user{i}", i, pid=1000 + i))
    rules = [f.rule for f in found]
    assert rules[:2] == ["enumeration", "bruteforce"], rules
    alerts = [Alert.from_finding(f, "web1") for f in found[:2]]
    for pair in (alerts, alerts[::-1]):  # whatever order the queue hands them over
        subject = render(pair, "web1").subject
        assert "invalid user names" in subject.split("(", 1)[1], subject


def test_fresh_install_users_without_history_are_not_paged_for_typos() -> None:
    """While the login history is learning, "no history" is not evidence of anything."""
    e = Engine(config.DetectionConfig(), History(since=T0.timestamp() - 3600), zone=UTC)
    out = typos(e, OFFICE, "alice", 0, 4, pid=1)
    out += e.feed(ev(Kind.AUTH_SUCCESS, OFFICE, "alice", 60, pid=2))
    assert compromise(out) == []


def test_three_failures_then_a_password_login_from_a_network_never_used_pages() -> None:
    """Live, bruteforce bans at the 5th failure: a guessed password from outside shows as
    three or four failures, then the success, from a network the user never used."""
    e = engine()
    typos(e, ATTACKER, "alice", 0, 3, pid=1)
    [f] = compromise(e.feed(ev(Kind.AUTH_SUCCESS, ATTACKER, "alice", 60, pid=2)))
    assert f.severity == "critical" and "3 failed attempts" in f.summary


def test_a_health_check_every_five_minutes_is_never_a_brute_force() -> None:
    """A TCP probe that connects and closes without an SSH banner guesses nothing: 288 a
    day must not add up to slow_bruteforce (and a ban of the monitoring host)."""
    e = engine()
    out: list[Finding] = []
    for i in range(288):
        out += e.feed(ev(Kind.PREAUTH_DISCONNECT, "198.51.100.200", "", i * 300, pid=5000 + i))
    assert out == []


def test_a_scanner_hammering_still_reaches_bruteforce() -> None:
    e = engine()
    out: list[Finding] = []
    for i in range(5):
        out += e.feed(ev(Kind.PROTOCOL_ERROR, ATTACKER, "", i * 10, pid=5100 + i))
    assert [f.rule for f in out] == ["bruteforce"]


def test_slow_password_guessing_still_reaches_slow_bruteforce() -> None:
    e = engine()
    out: list[Finding] = []
    for i in range(24):  # one guess every 50 minutes: never 5 in 10 minutes
        out += e.feed(ev(Kind.AUTH_FAILURE, ATTACKER, "root", i * 3000, pid=5200 + i))
        out += e.feed(ev(Kind.PREAUTH_DISCONNECT, ATTACKER, "root", i * 3000 + 1, pid=5200 + i))
    assert [f.rule for f in out] == ["slow_bruteforce"]


def test_root_with_its_known_key_from_its_usual_network_is_recorded_not_paged() -> None:
    e = engine()
    e.history.sources["root"] = {"10.20.0.0/24"}
    e.history.keys["root"] = {"SHA256:bastion"}

    def root(ip: str, method: str = "publickey", fp: str | None = "SHA256:bastion") -> Finding:
        out = e.feed(ev(Kind.AUTH_SUCCESS, ip, "root", 0, method=method, key_fp=fp))
        return next(f for f in out if f.rule == "root_login")

    assert root("10.20.0.7").severity == "info"
    assert root("203.0.113.9").severity == "high"  # a new network
    assert root("10.20.0.7", fp="SHA256:other").severity == "high"  # a new key
    assert root("10.20.0.7", method="password", fp=None).severity == "high"


def _attempts(lines: list[str]) -> int:
    """How many failures the engine counts for 203.0.113.66 from these sshd lines."""
    from sshmonitord.detect.engine import addr_key
    from sshmonitord.parse import Parser

    p = Parser(zone=UTC)
    e = engine()
    for text in lines:
        event = p.parse_text(text)
        if event is not None:
            e.feed(event)
    k = addr_key(ipaddress.ip_address(ATTACKER))
    return e.by_ip.count(k, 0.0) + e.by_ip_scan.count(k, 0.0)


def test_one_attempt_written_twice_counts_once() -> None:
    """Pairs of lines sshd writes for one attempt (the parser helper measured 2 each)."""
    head = "Nov 24 12:00:0{} web1 sshd[4242]: "
    pairs = [
        # a user AllowUsers refuses: sshd then fails them as an invalid user
        [
            "User bob from 203.0.113.66 not allowed because not listed in AllowUsers",
            "Failed password for invalid user bob from 203.0.113.66 port 4000 ssh2",
        ],
        # <= 6.x: the address-less follow-up gets its address from the connection
        [
            "Invalid user oracle from 203.0.113.66 port 4000",
            "input_userauth_request: invalid user oracle [preauth]",
        ],
    ]
    for pair in pairs:
        lines = [head.format(i) + m for i, m in enumerate(pair)]
        assert _attempts(lines) == 1, pair
