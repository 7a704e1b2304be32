"""Rendering alerts into a message: order, subject hygiene, folded counts, bans, escaping."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from ipaddress import ip_address

import pytest

from sshmonitord.events import Action, Event, Finding, Kind, Severity
from sshmonitord.notify import Alert, Message, render, test_message
from sshmonitord.notify.render import (
    MAX_SUBJECT,
    fmt_time,
    one_line,
    ordinal,
    visible,
)

NOW = 1_714_564_800.0  # 2024-05-01 12:00:00 UTC
XSS_USER = "<script>alert(1)</script>"
XSS_ATTR = '"><img src=x>'


def alert(rule: str = "bruteforce", severity: str = "high", **kw: object) -> Alert:
    base: dict[str, object] = {
        "id": f"{rule}:203.0.113.5/32:{int(NOW)}",
        "rule": rule,
        "severity": severity,
        "subject": "203.0.113.5/32",
        "host": "web1",
        "summary": "6 failed logins within 10m",
        "first_seen": NOW - 120,
        "last_seen": NOW - 5,
        "evidence": ["sshd[42]: Failed password for root from 203.0.113.5 port 5000 ssh2"],
        "ip": "203.0.113.5",
    }
    base.update(kw)
    return Alert(**base)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- order + subject


def test_worst_severity_first() -> None:
    info = alert("new_key", "info", summary="deploy logged in with a new key", first_seen=NOW - 900)
    crit = alert(
        "success_after_failures",
        "critical",
        summary="login as deploy from 203.0.113.7 after 14 failures",
    )
    high = alert("bruteforce", "high", first_seen=NOW - 1000)
    warn = alert("distributed", "warning")
    high2 = alert("enumeration", "high", first_seen=NOW - 10, summary="5 invalid user names")
    m = render([info, high2, warn, crit, high], "web1", now=NOW)
    assert [a.rule for a in m.alerts] == [
        "success_after_failures",
        "bruteforce",  # same severity: the earlier first
        "enumeration",
        "distributed",
        "new_key",
    ]
    assert m.subject == (
        "[sshmonitor] CRITICAL web1: 5 alerts "
        "(login as deploy from 203.0.113.7 after 14 failures; +4 more)"
    )
    # The bodies follow the same order.
    pos = [
        m.text.index(s)
        for s in ("CRITICAL ·", "HIGH · bruteforce", "HIGH · enumeration", "WARNING ·", "INFO ·")
    ]
    assert pos == sorted(pos)
    hpos = [m.html.index(f">{s}</span>") for s in ("CRITICAL", "HIGH", "WARNING", "INFO")]
    assert hpos == sorted(hpos)


def test_subject_single_alert() -> None:
    a = alert(
        "success_after_failures",
        "critical",
        summary="login as deploy from 203.0.113.7 after 14 failures",
    )
    m = render([a], "web1", now=NOW)
    assert (
        m.subject
        == "[sshmonitor] CRITICAL web1: login as deploy from 203.0.113.7 after 14 failures"
    )
    assert isinstance(m, Message) and m.alerts == [a] and m.host == "web1" and m.suppressed == 0


@pytest.mark.parametrize(
    "hostile",
    [
        "deploy\r\nBcc: victim@example.net",
        "deploy\nX-Injected: 1",
        "deploy\rX",
        "deploy\x1b[31mred\x1b[0m",
        "deploy\u2028Bcc: x\u2029y\x85z",
        "deploy\u202egnp.exe",  # right-to-left override
        "deploy\x00\x07\x08\x0b\x0c\x7f",
        "a\udcff",  # a lone surrogate (undecodable byte)
    ],
)
def test_subject_never_carries_control_characters(hostile: str) -> None:
    m = render([alert(summary=f"login as {hostile} from 203.0.113.7")], "web1", now=NOW)
    assert m.subject.isprintable(), repr(m.subject)
    assert "\n" not in m.subject and "\r" not in m.subject
    m.subject.encode("utf-8")  # encodable: no surrogates left
    # The attempt is visible, not silently dropped.
    assert "\\" in m.subject


def test_subject_is_capped() -> None:
    long = "x" * 5000
    one = render([alert(summary=long)], "web1", now=NOW)
    many = render([alert(summary=long), alert("enumeration", summary=long)], "web1", now=NOW)
    for m in (one, many):
        assert len(m.subject) <= MAX_SUBJECT
        assert m.subject.startswith("[sshmonitor] HIGH web1: ")
    assert many.subject.endswith("…; +1 more)")


def test_subject_without_alerts() -> None:
    assert (
        render([], "web1", suppressed=7, now=NOW).subject
        == "[sshmonitor] web1: 7 alerts suppressed"
    )


# --------------------------------------------------------------------------- body content


def test_folded_count_ban_and_next_steps() -> None:
    a = alert(
        count=5,
        folded_since=NOW - 3600,
        ban={"net": "203.0.113.5/32", "until": NOW + 2400, "offence": 2},
    )
    m = render([a], "web1", now=NOW)
    for part in (m.text, m.html):
        assert f"5 (4 more since {fmt_time(NOW - 3600)})" in part
        assert f"banned 203.0.113.5/32 until {fmt_time(NOW + 2400)} (2nd ban)" in part
        assert "sshmonitor unban 203.0.113.5/32" in part
        assert fmt_time(a.first_seen) in part and fmt_time(a.last_seen) in part
        assert "Failed password for root" in part
    assert "Occurrences:   5 (4 more since" in m.text


def test_unfolded_and_unbanned() -> None:
    m = render([alert(count=1)], "web1", now=NOW)
    assert "Occurrences:   1\n" in m.text
    assert "no ban (alert only)" in m.text
    assert "sshmonitor ban 203.0.113.5" in m.text  # the way to act on it
    dry = render(
        [alert(ban={"net": "203.0.113.5/32", "until": NOW + 60, "offence": 1, "dry_run": True})],
        "web1",
    )
    assert "would have banned 203.0.113.5/32" in dry.text and "dry run" in dry.text
    assert "(1st ban)" in dry.text


def test_login_alert_suggests_session_review_with_quoted_user() -> None:
    a = alert("success_after_failures", "critical", user="$(reboot)", subject="user $(reboot)")
    m = render([a], "web1", now=NOW)
    assert "sshmonitor session --user '$(reboot)'" in m.text
    assert "usermod -L '$(reboot)'" in m.text
    assert "sshmonitor ban 203.0.113.5" in m.text


def test_suppressed_count() -> None:
    m = render([alert()], "web1", suppressed=12, now=NOW)
    assert "12 more alerts suppressed by the hourly cap" in m.text
    assert "12 more alerts suppressed by the hourly cap" in m.html
    assert "1 more alert suppressed" in render([alert()], "web1", suppressed=1).text


def test_ordinals() -> None:
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 101, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "101st", "111th",
    ]  # fmt: skip


# --------------------------------------------------------------------------- escaping


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.update(name for name, _ in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def hostile_alert() -> Alert:
    return alert(
        "success_after_failures",
        "critical",
        subject=f"user {XSS_USER}",
        summary=f"{XSS_USER} logged in from 203.0.113.7 after 3 failures",
        user=XSS_USER,
        evidence=[
            f"sshd[1]: Invalid user {XSS_ATTR} from 203.0.113.7 port 1",
            f"sshd[2]: Failed password for {XSS_USER} from 203.0.113.7 port 2 ssh2\x1b]0;pwned\x07",
            "sshd[3]: forged\r\nMay  1 12:00:00 web1 sshd[4]: Accepted password for root",
        ],
    )


def test_html_escapes_attacker_strings() -> None:
    m = render([hostile_alert()], "web1", now=NOW)
    for raw in (XSS_USER, XSS_ATTR, "<script", "<img"):
        assert raw not in m.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in m.html
    assert "&quot;&gt;&lt;img src=x&gt;" in m.html
    p = _Tags()
    p.feed(m.html)
    # Only our own markup: no script, no img, no link/style, no external resources.
    assert set(p.tags) <= {
        "html", "head", "meta", "title", "body", "div", "h1", "span", "p", "table", "tr", "td",
        "ul", "li", "code", "pre",
    }  # fmt: skip
    assert p.attrs <= {"style", "charset", "name", "content"}
    text = "".join(p.text)
    assert XSS_USER in text and XSS_ATTR in text  # shown to the reader, as text


def test_html_loads_nothing_external() -> None:
    m = render([hostile_alert(), alert()], "web1", suppressed=3, now=NOW)
    lowered = m.html.lower()
    for needle in ("<link", "<style", "<img", "<script", 'src="', "href=", "url(", "@import"):
        assert needle not in lowered


def test_text_makes_control_characters_visible() -> None:
    m = render([hostile_alert()], "web1", now=NOW)
    assert "\x1b" not in m.text and "\x07" not in m.text and "\r" not in m.text
    assert "\\x1b]0;pwned\\x07" in m.text
    # The forged second line stays inside its own evidence line.
    assert (
        "  | sshd[3]: forged\\r\\nMay  1 12:00:00 web1 sshd[4]: Accepted password for root"
        in m.text
    )
    assert not any(line.startswith("May  1") for line in m.text.splitlines())
    assert all(line.isprintable() for line in m.text.splitlines())
    assert all(line.isprintable() for line in m.html.splitlines() if line != "<!DOCTYPE html>")


def test_visible_and_one_line() -> None:
    assert visible("plain text, ünïcode ✓") == "plain text, ünïcode ✓"
    assert visible("a\tb\nc\rd\x1be\x7f\u200bf\u2028") == "a\\tb\\nc\\rd\\x1be\\x7f\\u200bf\\u2028"
    assert one_line("  a \n  b  ", 10) == "a \\n b"
    assert one_line("abcdefghijkl", 5) == "abcd…"


# --------------------------------------------------------------------------- Alert


def test_alert_from_finding_and_round_trip() -> None:
    t0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

    def ev(i: int, kind: Kind, user: str) -> Event:
        return Event(
            ts=t0 + timedelta(seconds=10 * i),
            host="web1",
            program="sshd",
            pid=100 + i,
            kind=kind,
            user=user,
            ip=ip_address("203.0.113.7"),
            raw=f"line {i} for {user}",
        )

    events = (
        *(ev(i, Kind.AUTH_FAILURE, "deploy") for i in range(3)),
        ev(3, Kind.AUTH_SUCCESS, "deploy"),
    )
    f = Finding(
        "success_after_failures",
        Severity.CRITICAL,
        "203.0.113.7/32",
        events,
        Action.ALERT,
        "deploy logged in from 203.0.113.7 after 3 failures within 1h: possible compromise",
    )
    ban = {"net": "203.0.113.7/32", "until": t0.timestamp() + 600, "offence": 1}
    a = Alert.from_finding(f, "web1", ban=ban)
    # Opaque (tests/test_alert_ids.py has the rest): no rule, address or user in it.
    assert re.fullmatch(r"[0-9a-f]{32}", a.id)
    assert a.severity == "critical" and a.rule == "success_after_failures"
    assert a.first_seen == t0.timestamp() and a.last_seen == t0.timestamp() + 30
    assert a.user == "deploy" and a.ip == "203.0.113.7" and a.count == 1
    assert a.evidence == [f"line {i} for deploy" for i in range(4)]
    assert a.ban == ban and a.ban is not ban
    d = json.loads(json.dumps(a.to_dict()))
    assert Alert.from_dict(d) == a
    assert Alert.from_dict({**d, "from_the_future": 1}) == a


def test_test_message() -> None:
    m = test_message("web1", now=NOW)
    assert (
        m.subject
        == "[sshmonitor] INFO web1: test message from sshmonitor test-alert: this channel works"
    )
    assert m.alerts[0].rule == "test" and "sshmonitord on web1" in m.text
