"""The report (notify/report.py): exact numbers over a hand-built store, the three formats,
escaping of attacker-controlled names, the sparkline, the CLI, and the daily scheduler on an
injected clock (a day passes in milliseconds)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import sqlite3
import time
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mailservers
import pytest
from mailservers import SmtpServer, free_port

from sshmonitord import config
from sshmonitord.notify.alert import DeliveryError, Message
from sshmonitord.notify.channels import BaseChannel
from sshmonitord.notify.queue import AlertQueue
from sshmonitord.notify.report import (
    ReportScheduler,
    build_report,
    chart_axis,
    parse_clock,
    parse_when,
    register,
    render_report,
    report_id,
    report_message,
    report_settings,
    sparkline,
)
from sshmonitord.notify.smtp import SmtpChannel
from sshmonitord.store import INSERT_EVENT, Store, connect

# Fixtures from mailservers.py (assigned, so pytest finds them in this module).
tls_cert = mailservers.tls_cert
smtp_servers = mailservers.smtp_servers

XSS_USER = "<script>alert(1)</script>"
XSS_ATTR = '"><img src=x>'
ESC_USER = "\x1b[31mred\x1b[0m\nfake line"

# The period: a local 07:00 to 07:00, whatever the machine's zone.
T0 = datetime(2026, 11, 23, 7, 0).timestamp()
T1 = datetime(2026, 11, 24, 7, 0).timestamp()
H = 3600.0

A = "203.0.113.5"
B = "198.51.100.7"
C = "2001:db8::1"
D = "192.0.2.9"


def ev(
    ts: float,
    kind: str,
    user: str | None = None,
    ip: str | None = None,
    port: int | None = None,
    method: str | None = None,
    count: int = 1,
    detail: dict | None = None,
    key_fp: str | None = None,
    session: str | None = None,
) -> tuple:
    """A row of the events table (the columns of store.INSERT_EVENT)."""
    return (
        ts,
        "web1",
        "sshd",
        int(session) if session else None,
        kind,
        user,
        ip,
        port,
        method,
        key_fp,
        count,
        session,
        json.dumps(detail) if detail else None,
        f"synthetic {kind} {user!r} {ip}",
    )


def ban(
    net: str,
    created: float,
    expires: float,
    *,
    active: int = 0,
    lifted: float | None = None,
    lifted_by: str | None = None,
    dry_run: int = 0,
    rule: str = "bruteforce",
    reason: str = "6 failures",
) -> tuple:
    return (net, rule, reason, 1, created, expires, active, lifted, lifted_by, dry_run)


def finding(ts: float, rule: str, severity: str, subject: str, summary: str) -> tuple:
    return (ts, rule, severity, subject, "alert", summary, "[]", ts)


# Invalid user names from B: the first 12 are followed by "Failed password for invalid user"
# on the same port (one attempt each), the last 3 are not (a scanner that left).
B_MATCHED = [XSS_USER] * 6 + [XSS_ATTR] * 3 + ["admin"] * 2 + ["test"]
B_UNMATCHED = ["admin", "admin", ESC_USER]


def known_rows() -> tuple[list[tuple], list[tuple], list[tuple]]:
    events: list[tuple] = []
    # A: 30 Failed password for root (10 per hour in hours 0-2), each restated by PAM (which
    # must not count), and one "message repeated 5 times" line in hour 3: 35 failures.
    for hour in range(3):
        for i in range(10):
            t = T0 + hour * H + i * 60 + 1
            events.append(ev(t, "auth_failure", "root", A, 40000 + i, "password"))
            events.append(ev(t, "auth_failure", "root", A, None, "pam"))
    events.append(ev(T0 + 3 * H + 5, "auth_failure", "root", A, 41000, "password", count=5))
    # B: 12 invalid-user attempts with their Failed line (hour 4), 3 without (hour 5).
    for i, name in enumerate(B_MATCHED):
        t = T0 + 4 * H + i * 10
        events.append(ev(t, "invalid_user", name, B, 50000 + i))
        events.append(
            ev(
                t + 2,
                "auth_failure",
                name,
                B,
                50000 + i,
                "password",
                detail={"invalid_user": True},
            )
        )
    for i, name in enumerate(B_UNMATCHED):
        events.append(ev(T0 + 5 * H + i * 10, "invalid_user", name, B, 51000 + i))
    events.append(ev(T0 + 5 * H + 100, "preauth_disconnect", "admin", B, 51000))
    # C: 5 failed publickey for git (hour 20).
    for i in range(5):
        events.append(ev(T0 + 20 * H + i, "auth_failure", "git", C, 60000 + i, "publickey"))
    # D: two invalid users logged without a port, no Failed line (hour 23).
    events.append(ev(T0 + 23 * H + 1, "invalid_user", "admin", D))
    events.append(ev(T0 + 23 * H + 2, "invalid_user", "admin", D))
    # Successful logins: deploy with a key twice, and root from B (after its failures).
    events.append(
        ev(
            T0 + 5 * H + 300,
            "auth_success",
            "deploy",
            "10.0.0.5",
            22,
            "publickey",
            key_fp="SHA256:abc",
        )
    )
    events.append(
        ev(
            T0 + 6 * H + 300,
            "auth_success",
            "deploy",
            "10.0.0.5",
            22,
            "publickey",
            key_fp="SHA256:abc",
        )
    )
    events.append(ev(T0 + 10 * H, "auth_success", "root", B, 52000, "password"))
    # Outside the period: never counted ([since, until) — until itself is out).
    for t in (T0 - 10, T1, T1 + 50):
        events.append(ev(t, "auth_failure", "root", A, 1, "password", count=100))
        events.append(ev(t, "invalid_user", "outside", A, 2))
        events.append(ev(t, "auth_success", "outside", A, 3, "password"))

    bans = [
        ban(f"{A}/32", T0 + 3 * H, T0 + 3 * H + 600, lifted=T0 + 3 * H + 600, lifted_by="expired"),
        ban(f"{B}/32", T0 + 10 * H, T0 + 10 * H + 2400, lifted=T0 + 10 * H + 100, lifted_by="operator"),
        ban("2001:db8::/64", T0 + 20 * H, T0 + 30 * H, active=1),
        # Placed before the period, expired in it, never marked (the daemon was down).
        ban("192.0.2.0/24", T0 - 2 * H, T0 + H, active=1, rule="enumeration", reason=XSS_USER),
        ban("192.0.2.77/32", T0 + 12 * H, T0 + 12 * H + 600, lifted_by="expired",
            lifted=T0 + 12 * H + 600, dry_run=1),
        ban("198.18.0.1/32", T0 - 10 * 86400, T0 - 9 * 86400, lifted=T0 - 9 * 86400, lifted_by="expired"),
    ]  # fmt: skip
    findings = [
        finding(T0 + 600, "bruteforce", "high", f"{A}/32", "5 failed logins within 10m"),
        finding(T0 + 3 * H, "bruteforce", "high", f"{A}/32", "5 failed logins within 10m"),
        finding(T0 + 4 * H, "bruteforce", "high", f"{B}/32", "5 failed logins within 10m"),
        finding(T0 + 4 * H, "enumeration", "high", f"{B}/32", "5 invalid user names"),
        finding(
            T0 + 10 * H,
            "success_after_failures",
            "critical",
            f"{B}/32",
            f"root logged in from {B} after 15 failures ({XSS_USER})",
        ),
        finding(T0 + 10 * H, "root_login", "high", "user root", f"root logged in from {B}"),
        finding(T0 - 60, "bruteforce", "high", f"{A}/32", "outside the period"),
    ]
    return events, bans, findings


def fill(store: Store, events: list[tuple], bans: list[tuple], findings: list[tuple]) -> None:
    conn = store.conn
    with store.transaction():
        conn.executemany(INSERT_EVENT, events)
        conn.executemany(
            "INSERT INTO bans(net, rule, reason, offence, created, expires, active, lifted, "
            "lifted_by, dry_run) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            bans,
        )
        conn.executemany(
            "INSERT INTO findings(ts, rule, severity, subject, action, summary, evidence, "
            "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            findings,
        )
        conn.executemany(
            "INSERT INTO alert_spool(channel, alert, created, next_attempt, attempts) "
            "VALUES (?, ?, ?, ?, ?)",
            [("smtp", "{}", T1 - 300, T1, 3), ("smtp", "{}", T1 - 200, T1, 1)],
        )


@pytest.fixture
def known_store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "state")
    store.open()
    fill(store, *known_rows())
    yield store
    store.close()


def ro(store: Store) -> sqlite3.Connection:
    return connect(store.path, readonly=True)


def expected_failure_chart() -> list[int]:
    chart = [0] * 24
    chart[0] = chart[1] = chart[2] = 10
    chart[3] = 5
    chart[4] = 12
    chart[5] = 3
    chart[20] = 5
    chart[23] = 2
    return chart


# =========================================================================== build_report


def test_build_report_numbers(known_store: Store) -> None:
    r = build_report(ro(known_store), T0, T1, top=3, now=T1 + 1)
    f = r["failures"]
    assert f["total"] == 57
    assert f["failed_lines"] == 35 + 12 + 5
    assert f["invalid_user_only"] == 3 + 2
    assert f["addresses"] == 4
    assert [(a["ip"], a["count"]) for a in f["top"]] == [(A, 35), (B, 15), (C, 5)]
    assert f["more"] == 1
    a, b, c = f["top"]
    assert a["first"] == T0 + 1 and a["last"] == T0 + 3 * H + 5
    assert b["first"] == T0 + 4 * H + 2 and b["last"] == T0 + 5 * H + 20
    assert a["users"] == 1 and b["users"] == 5 and c["users"] == 1
    assert a["banned"] and b["banned"] and c["banned"]  # C by the /64

    inv = r["invalid_users"]
    assert inv["total"] == 17 and inv["names"] == 5
    assert [(u["user"], u["count"]) for u in inv["top"]] == [
        (XSS_USER, 6),
        ("admin", 6),
        (XSS_ATTR, 3),
    ]
    assert inv["top"][1]["addresses"] == 2  # admin from B and D
    assert inv["more"] == 2

    acc = r["accounts"]
    assert [(u["user"], u["count"]) for u in acc["top"]] == [("root", 35), ("git", 5)]

    lg = r["logins"]
    assert lg["total"] == 3 and lg["users"] == 2 and lg["addresses"] == 2
    g0, g1 = lg["groups"]
    assert (g0["user"], g0["ip"], g0["method"], g0["count"]) == (
        "deploy",
        "10.0.0.5",
        "publickey",
        2,
    )
    assert g0["keys"] == ["SHA256:abc"] and g0["failures_from_ip"] == 0
    assert (g1["user"], g1["ip"], g1["failures_from_ip"]) == ("root", B, 15)

    bn = r["bans"]
    assert bn["placed"] == 4 and bn["placed_dry_run"] == 1
    assert bn["expired"] == 3  # A's, the unmarked /24, the dry run
    assert bn["lifted"] == 1 and bn["lifted_by"] == {"operator": 1}
    assert bn["active_at_end"] == 1
    assert bn["by_rule"] == {"bruteforce": 4}
    assert [x["net"] for x in bn["recent"]] == ["2001:db8::/64", "192.0.2.77/32", f"{B}/32"]
    assert bn["recent"][0]["state"] == "active"
    assert bn["recent"][2]["state"] == "lifted by operator"

    al = r["alerts"]
    assert al["total"] == 6
    assert al["by_severity"] == {"critical": 1, "high": 5}
    assert al["by_rule"][0] == {
        "rule": "success_after_failures",
        "severity": "critical",
        "count": 1,
        "subjects": 1,
    }
    assert {(x["rule"], x["count"], x["subjects"]) for x in al["by_rule"][1:]} == {
        ("bruteforce", 3, 2),
        ("enumeration", 1, 1),
        ("root_login", 1, 1),
    }
    assert {x["rule"] for x in al["notable"]} == {"success_after_failures", "root_login"}
    assert al["pending"] == [{"channel": "smtp", "count": 2, "oldest": T1 - 300, "attempts": 3}]

    ch = r["chart"]
    assert ch["origin"] == T0 and ch["bucket"] == H
    assert ch["failures"] == expected_failure_chart()
    assert sum(ch["failures"]) == f["total"]
    bans_chart = [0] * 24
    for hour in (3, 10, 12, 20):
        bans_chart[hour] = 1
    assert ch["bans"] == bans_chart

    has_sessions = "sessions" in {
        t for (t,) in known_store.conn.execute("SELECT name FROM sqlite_master")
    }
    assert r["sessions"]["available"] is has_sessions
    assert r["sessions"].get("total", 0) == 0
    assert r["events"]["auth_failure"] == 30 + 30 + 1 + 12 + 5
    json.dumps(r)  # plain data


def test_empty_period_and_empty_store(tmp_path: Path, known_store: Store) -> None:
    r = build_report(ro(known_store), T0 - 30 * 86400, T0 - 29 * 86400)
    assert r["failures"]["total"] == 0 and r["failures"]["top"] == []
    assert r["logins"]["total"] == 0 and r["bans"]["placed"] == 0
    assert set(r["chart"]["failures"]) == {0}
    for fmt in ("text", "html", "json"):
        assert render_report(r, "web1", fmt)
    # A database with none of the tables (an empty file): still a report, all zero.
    bare = sqlite3.connect(tmp_path / "bare.db")
    r = build_report(bare, T0, T1)
    assert r["failures"]["total"] == 0 and r["alerts"]["total"] == 0
    assert "none" in render_report(r, "web1", "text")


def test_top_n_and_ties(known_store: Store) -> None:
    r = build_report(ro(known_store), T0, T1, top=1)
    assert len(r["failures"]["top"]) == 1 and r["failures"]["more"] == 3
    assert len(r["invalid_users"]["top"]) == 1
    r = build_report(ro(known_store), T0, T1, top=100)
    assert [a["ip"] for a in r["failures"]["top"]] == [A, B, C, D]


def test_sessions_other_column_names(tmp_path: Path) -> None:
    """Columns are found by name: another layout of the audit-trail tables still reports."""
    db = sqlite3.connect(tmp_path / "s.db")
    db.executescript(
        "CREATE TABLE sessions (id INTEGER PRIMARY KEY, user TEXT, ip TEXT, started REAL, "
        "ended REAL, state TEXT);"
        "CREATE TABLE commands (id INTEGER PRIMARY KEY, ts REAL, kind TEXT);"
        "CREATE TABLE transfers (id INTEGER PRIMARY KEY, ts REAL, op TEXT, bytes_read INTEGER, "
        "bytes_written INTEGER);"
    )
    db.executemany(
        "INSERT INTO sessions(user, ip, started, ended, state) VALUES (?, ?, ?, ?, ?)",
        [
            ("alice", "10.0.0.5", T0 - 2 * H, T0 + H, "closed"),  # overlaps the start
            ("bob", "10.0.0.6", T0 + 2 * H, T0 + 2 * H + 600, "closed"),
            (XSS_USER, "10.0.0.7", T0 + 20 * H, None, "open"),  # still open
            ("carol", "10.0.0.8", T0 + 3 * H, T0 + 4 * H, "lost"),
            ("dave", "10.0.0.9", T0 - 3 * H, T0 - 2 * H, "closed"),  # before: not counted
        ],
    )
    db.executemany(
        "INSERT INTO commands(ts, kind) VALUES (?, ?)",
        [(T0 + 5, "sudo"), (T0 + 6, "sudo"), (T0 + 7, "su"), (T1, "sudo")],
    )
    db.executemany(
        "INSERT INTO transfers(ts, op, bytes_read, bytes_written) VALUES (?, ?, ?, ?)",
        [(T0 + 5, "upload", 0, 2048), (T0 + 6, "download", 100, 0), (T0 + 7, "remove", None, None)],
    )
    db.commit()
    r = build_report(db, T0, T1)
    s = r["sessions"]
    assert s["available"] is True
    assert (s["total"], s["started"], s["ended"], s["lost"], s["active_at_end"]) == (4, 3, 3, 1, 1)
    assert s["longest"][0]["user"] == XSS_USER and s["longest"][0]["duration"] == 4 * H
    assert r["activity"]["commands"] == {"total": 3, "by": {"sudo": 2, "su": 1}}
    assert r["activity"]["transfers"] == {
        "total": 3,
        "by": {"download": 1, "remove": 1, "upload": 1},
        "bytes_up": 2048,
        "bytes_down": 100,
    }
    text = render_report(r, "web1", "text")
    assert "Sessions (4 in the period)" in text
    assert "3 commands (sudo 2, su 1); 3 file operations" in text
    assert "2.0 KiB up and 100 B down" in text
    html = render_report(r, "web1", "html")
    assert XSS_USER not in html and "&lt;script&gt;" in html


def test_sessions_from_the_audit_trail(known_store: Store) -> None:
    """The store's own sessions table (schema 6), as sessions.py writes it."""
    cols = {r[1] for r in known_store.conn.execute("PRAGMA table_info(sessions)")}
    if not {"start", "end", "state", "last_seen", "user"} <= cols:
        pytest.skip("this store has no audit-trail sessions table")
    rows = [
        ("deploy", "10.0.0.5", T0 + 5 * H + 300, T0 + 5 * H + 900, "closed", 4, 1),
        (XSS_ATTR, B, T0 + 10 * H, None, "open", 0, 0),
        ("deploy", "10.0.0.5", T0 + 6 * H + 300, T0 + 7 * H, "lost", 0, 0),
    ]
    with known_store.transaction() as c:
        c.executemany(
            "INSERT INTO sessions(user, ip, start, end, state, last_seen, commands, transfers) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(u, a, s, e, st, e or s, nc, nt) for u, a, s, e, st, nc, nt in rows],
        )
    r = build_report(ro(known_store), T0, T1)
    s = r["sessions"]
    assert (s["total"], s["started"], s["ended"], s["lost"], s["active_at_end"]) == (3, 3, 2, 1, 1)
    assert s["longest"][0]["user"] == XSS_ATTR and s["longest"][0]["duration"] == 14 * H
    assert s["longest"][1]["commands"] == 0 and s["longest"][2]["commands"] == 4
    text = render_report(r, "web1", "text")
    assert "Sessions (3 in the period)" in text and "sshmonitor session ID" in text
    html = render_report(r, "web1", "html")
    assert XSS_ATTR not in html and "&quot;&gt;&lt;img src=x&gt;" in html


def test_sessions_table_unrecognised_degrades(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "s.db")
    db.execute("CREATE TABLE sessions (pid INTEGER, what TEXT)")
    r = build_report(db, T0, T1)
    assert r["sessions"]["available"] is False
    assert "not recorded" in render_report(r, "web1", "text")


# =========================================================================== formats


class TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.add(tag)
        self.attrs.update(k for k, _v in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_escaped_and_self_contained(known_store: Store) -> None:
    r = build_report(ro(known_store), T0, T1, now=T1)
    html = render_report(r, "web1", "html")
    for raw in (XSS_USER, XSS_ATTR, "\x1b", "<img"):
        assert raw not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&quot;&gt;&lt;img src=x&gt;" in html
    assert "\\x1b[31mred\\x1b[0m\\nfake line" in html
    p = TagCollector()
    p.feed(html)
    allowed = {
        "html", "head", "meta", "title", "body", "div", "h1", "h2", "p", "table", "tr", "td",
        "th", "col", "span", "code", "ul", "li", "b", "br",
    }  # fmt: skip
    assert p.tags <= allowed, p.tags - allowed
    assert not {a for a in p.attrs if a.startswith("on")}
    assert not p.attrs & {"src", "href", "srcset", "background"}
    assert "url(" not in html and "@import" not in html and "http" not in html
    text = "".join(p.text)
    assert XSS_USER in text  # the browser shows the name as text
    assert "57 attempts from 4 addresses" in text


def test_text_format(known_store: Store) -> None:
    r = build_report(ro(known_store), T0, T1, now=T1)
    text = render_report(r, "web1", "text")
    assert "\x1b" not in text and "\\x1b[31mred" in text
    assert "fake line" in text and "\nfake line" not in text  # no forged line
    assert XSS_USER in text  # shown verbatim (a terminal does not run it)
    assert "57 attempts from 4 addresses" in text
    assert "5 names in 17 tries" in text
    assert "4 placed (1 dry run), 3 expired, 1 lifted, 1 active at the end" in text
    assert "6 (1 critical, 5 high)" in text
    assert "15 failures from this address" in text
    assert "2 waiting in the spool" in text
    spark = sparkline(expected_failure_chart())
    assert f"failures |{spark}| max 12/hour, total 57" in text
    assert "bans     |" in text and "max 1/hour, total 4" in text
    lines = text.splitlines()
    axis = lines[lines.index(next(x for x in lines if x.startswith("  failures |"))) + 2]
    assert axis.split()[0] == "07"  # the first bucket is 07:00 local
    rows = [x for x in lines if x.startswith(f"  {A}")]
    assert rows and "35" in rows[0] and rows[0].rstrip().endswith("yes")


def test_json_format(known_store: Store) -> None:
    r = build_report(ro(known_store), T0, T1, now=T1)
    out = render_report(r, "web1", "json")
    assert "\x1b" not in out and out.isascii()
    back = json.loads(out)
    assert back["host"] == "web1"
    assert back["failures"]["total"] == 57
    names = {u["user"] for u in back["invalid_users"]["top"]}
    assert XSS_USER in names
    with pytest.raises(ValueError):
        render_report(r, "web1", "pdf")


def test_report_message(known_store: Store) -> None:
    r = build_report(ro(known_store), T0, T1, now=T1)
    m = report_message(r, "web1")
    assert isinstance(m, Message) and m.alerts == [] and m.host == "web1"
    assert m.subject.startswith("[sshmonitor] report web1: 57 failures, 4 bans, 3 logins")
    assert "1 CRITICAL" in m.subject and "\n" not in m.subject
    assert m.text == render_report(r, "web1", "text")
    assert "<!DOCTYPE html>" in m.html


def test_sparkline() -> None:
    assert sparkline([0, 1, 2, 4, 8]) == " ▁▂▄█"
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == "▁▂▃▄▅▆▇█"
    assert sparkline([3], vmax=8) == "▃"
    assert sparkline([0, 0]) == "  "
    assert sparkline([]) == ""
    assert sparkline([1, 1000]) == "▁█"  # any non-zero value shows


def test_text_chart_wraps_by_day(known_store: Store) -> None:
    """A week: one line per day, both series on one scale for the whole period."""
    r = build_report(ro(known_store), T1 - 6 * 86400, T1 + 86400)
    assert len(r["chart"]["failures"]) == 168
    text = render_report(r, "web1", "text")
    lines = text.splitlines()
    start = lines.index(next(x for x in lines if x.startswith("Failures and bans per hour")))
    rows = lines[start + 2 : start + 9]
    assert all(x.count("|") == 4 for x in rows)
    assert rows[0].startswith("  11-18 07:00  |") and rows[5].startswith("  11-23 07:00  |")
    # 11-23 06:59:50 (101), the known day, then 11-24 07:00 and 07:00:50 (101 each)
    assert rows[4].split("|")[1] == " " * 23 + sparkline([101], vmax=202)
    day = rows[5].split("|")
    assert day[1] == sparkline(expected_failure_chart(), vmax=202)
    assert day[3].count("█") == 4  # the four bans, one per hour
    assert rows[6].split("|")[1] == "█" + " " * 23
    # bans: the four of the known day and the /24 placed two hours before it
    assert "failures: max 202/hour, total 360; bans: max 1/hour, total 5" in text


def test_chart_axis_long_periods() -> None:
    origin, bucket, n = chart_axis(T0 + 1234, T0 + 24 * H)
    assert origin == T0 and bucket == H and n == 24
    origin, bucket, n = chart_axis(T0, T0 + 30 * 86400)
    assert bucket == 5 * H and n == 144  # 720 hours in 5-hour columns


def test_parse_when_and_clock() -> None:
    now = T1
    assert parse_when("24h", now) == T0
    assert parse_when("now", now) == now
    assert parse_when("2026-11-23T07:00", now) == T0
    assert (
        parse_when("2026-11-23T07:00+00:00", now)
        == datetime.fromisoformat("2026-11-23T07:00+00:00").timestamp()
    )
    with pytest.raises(ValueError):
        parse_when("yesterday-ish", now)
    assert parse_clock("07:00") == (7, 0) and parse_clock("7:05") == (7, 5)
    assert parse_clock(1410) == (23, 30)  # YAML 1.1 reads an unquoted 23:30 as 1410
    for bad in ("24:00", "7", "07:60", "x", 1440, -1):
        with pytest.raises(ValueError):
            parse_clock(bad)


def test_settings_defaults_and_getattr() -> None:
    from sshmonitord import config

    s = report_settings(config.Config())
    assert (s.enabled, s.time, s.period, s.top, s.channels) == (False, "07:00", 86400.0, 10, ())
    cfg = SimpleNamespace(
        notify=SimpleNamespace(
            report=SimpleNamespace(enabled=True, time="06:30", period=3600, top=3, channels=["a"])
        )
    )
    s = report_settings(cfg)
    assert (s.enabled, s.time, s.period, s.top, s.channels) == (True, "06:30", 3600.0, 3, ("a",))
    assert report_settings({"enabled": True}).enabled
    import yaml

    raw = yaml.safe_load("time: 23:30")["time"]
    assert raw == 1410 and report_settings({"time": raw}).time == "23:30"
    assert report_settings({"time": "7:5x"}).time == "7:5x"  # kept; next_slot says invalid
    s = ReportScheduler("/x.db", {"enabled": True, "time": "7:5x"}, [], "web1")
    assert s.next_slot(T0) is None and "not a time of day" in s.describe()["summary"]


# =========================================================================== CLI


def test_cli_report(known_store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    register(sub)
    state = str(known_store.state_dir)
    since, until = "2026-11-23T07:00", "2026-11-24T07:00"
    args = p.parse_args(
        ["report", "--state-dir", state, "--since", since, "--until", until, "--format", "json"]
    )
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["failures"]["total"] == 57 and out["top"] == 10
    args = p.parse_args(["report", "--state-dir", state, "--since", since, "--until", until])
    assert args.func(args) == 0
    assert "57 attempts from 4 addresses" in capsys.readouterr().out
    args = p.parse_args(["report", "--state-dir", state, "--since", "soon"])
    assert args.func(args) == 2
    args = p.parse_args(["report", "--state-dir", state + "/nope"])
    assert args.func(args) == 1
    assert "no database" in capsys.readouterr().err


def test_cli_report_through_config(tmp_path: Path, known_store: Store, capsys) -> None:
    cfgfile = tmp_path / "sshmonitor.yaml"
    cfgfile.write_text(f"store:\n  dir: {known_store.state_dir}\n")
    import argparse

    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="command"))
    args = p.parse_args(
        ["report", "-c", str(cfgfile), "--since", "2026-11-23T07:00", "--until",
         "2026-11-24T07:00", "--format", "html", "--top", "2"]
    )  # fmt: skip
    assert args.func(args) == 0
    html = capsys.readouterr().out
    assert html.startswith("<!DOCTYPE html>") and XSS_USER not in html


# =========================================================================== scheduler


class Recorder(BaseChannel):
    type = "recorder"

    def __init__(self, name: str = "rec", fail: list[DeliveryError] | None = None) -> None:
        super().__init__(name=name)
        self.messages: list[Message] = []
        self.calls = 0
        self.fail = list(fail or [])

    async def send(self, message: Message) -> str:
        self.calls += 1
        if self.fail:
            raise self.fail.pop(0)
        self.messages.append(message)
        return "250 ok"


class FakeTime:
    """A wall clock the test moves: sleepers advance it, but never past ``limit``."""

    def __init__(self, t: float) -> None:
        self.t = t
        self.limit = t
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        target = self.t + seconds
        while target > self.limit:
            self.t = max(self.t, self.limit)
            await asyncio.sleep(0.001)
        self.t = max(self.t, target)
        await asyncio.sleep(0)


def report_cfg(**kw: object) -> SimpleNamespace:
    base = {"enabled": True, "time": "07:00", "period": 86400.0, "top": 5, "channels": ()}
    base.update(kw)
    return SimpleNamespace(notify=SimpleNamespace(report=SimpleNamespace(**base)))


async def until_true(pred, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.005)
    return pred()


def notify_cfg(**kw: object) -> config.NotifyConfig:
    base: dict[str, object] = dict(
        throttle=config.Duration(3600),
        digest_window=config.Duration(0.3),
        hourly_cap=30,
        retry_initial=config.Duration(0.2),
        retry_max=config.Duration(1.0),
    )
    base.update(kw)
    return dataclasses.replace(config.NotifyConfig(), **base)


async def spool_for(store: Store, channels: list, **kw: object) -> AlertQueue:
    """The alert queue the daemon runs, over the same store and channels as the report."""
    q = AlertQueue(store, notify_cfg(**kw), channels, "web1")
    await q.start()
    return q


def spool_rows(store: Store) -> list[tuple]:
    conn = ro(store)
    try:
        rows = conn.execute(
            "SELECT channel, kind, batch, attempts FROM alert_spool WHERE kind = 'message'"
        ).fetchall()
        return [tuple(r) for r in rows]
    finally:
        conn.close()


def test_scheduler_fires_daily(known_store: Store) -> None:
    async def go() -> None:
        clock = FakeTime(T1 - 60)  # 06:59, the day the period ends
        rec = Recorder()
        q = await spool_for(known_store, [rec])
        s = ReportScheduler(
            known_store, report_cfg(), [rec], "web1", queue=q, clock=clock, sleep=clock.sleep
        )
        await s.start()
        assert s.due == T1
        assert s.describe()["summary"] == "daily report at 07:00 over 1d to rec"
        clock.limit = T1 - 1  # not yet
        await asyncio.sleep(0.05)
        assert rec.messages == [] and s.healthy()
        clock.limit = T1 + 30
        assert await until_true(lambda: len(rec.messages) == 1)
        m = rec.messages[0]
        assert "57 failures, 4 bans, 3 logins" in m.subject
        assert "57 attempts from 4 addresses" in m.text
        assert XSS_USER not in m.html
        assert m.alerts == [] and m.id == report_id("web1", T0, T1)
        assert await until_true(lambda: known_store.get_meta("report.last_slot") == repr(T1))
        assert s.due == T1 + 86400
        # Next day: the next report, over the next 24 hours (the rows at T1 and T1 + 50).
        clock.limit = T1 + 86400 + 30
        assert await until_true(lambda: len(rec.messages) == 2)
        assert "202 failures, 0 bans, 2 logins" in rec.messages[1].subject
        assert rec.messages[1].id == report_id("web1", T1, T1 + 86400)
        assert await until_true(lambda: q.stats["messages_sent"] == 2)
        assert s.stats["reports"] == 2 and s.stats["spooled"] == 2
        await s.stop()
        assert not s.healthy()
        await q.stop()

    asyncio.run(go())


def test_a_report_that_fails_is_retried_by_the_spool(known_store: Store) -> None:
    """The spool's retries, not a loop of the scheduler's own: a transient failure is retried
    with the spool's backoff (at least Retry-After, within retry_max) as the same message; a
    permanent one is dropped and counted."""

    async def go() -> None:
        clock = FakeTime(T1 - 10)
        flaky = Recorder(
            "flaky",
            fail=[
                DeliveryError("HTTP 503", retry_after=0.5),
                DeliveryError("connection refused"),
            ],
        )
        dead = Recorder("dead", fail=[DeliveryError("HTTP 401 bad key", permanent=True)])
        q = await spool_for(known_store, [flaky, dead])
        s = ReportScheduler(
            known_store, report_cfg(), [flaky, dead], "web1", queue=q, clock=clock,
            sleep=clock.sleep,
        )  # fmt: skip
        await s.start()
        clock.limit = T1 + 1000
        assert await until_true(lambda: len(flaky.messages) == 1)
        assert flaky.calls == 3 and dead.calls == 1 and dead.messages == []
        assert flaky.messages[0].id == report_id("web1", T0, T1)
        assert await until_true(lambda: q.stats["dropped_permanent"] == 1)
        # The recorder holds the message as soon as it is sent; the queue deletes its spool
        # row and counts it after a store round trip (a race CI lost once).
        assert await until_true(lambda: q.stats["messages_sent"] >= 1)
        assert q.stats["delivery_failures"] == 3 and q.stats["messages_sent"] == 1
        assert "401" in q.describe()["last_error"]["dead"]
        assert spool_rows(known_store) == []  # delivered or dropped: nothing left
        assert s.stats["spooled"] == 2 and s.describe()["last_error"] == {}
        await s.stop()
        await q.stop()

    asyncio.run(go())


def test_a_report_undelivered_for_max_age_is_dropped_and_the_schedule_goes_on(
    known_store: Store,
) -> None:
    async def go() -> None:
        clock = FakeTime(T1 - 10)
        down = Recorder("down", fail=[DeliveryError("timeout")] * 1000)
        q = await spool_for(known_store, [down], max_age=config.Duration(1.0))
        s = ReportScheduler(
            known_store, report_cfg(), [down], "web1", queue=q, clock=clock, sleep=clock.sleep
        )
        await s.start()
        clock.limit = T1 + 100
        # Retried until notify.max_age, then dropped (the two stale alert rows of the known
        # store are dropped too: 3).
        assert await until_true(lambda: q.stats["dropped_too_old"] == 3)
        assert down.calls >= 2 and spool_rows(known_store) == []
        assert await until_true(lambda: s.due == T1 + 86400)  # the schedule goes on
        assert s.healthy()
        await s.stop()
        await q.stop()

    asyncio.run(go())


def test_scheduler_channel_selection_and_config_reload(known_store: Store) -> None:
    async def go() -> None:
        clock = FakeTime(T1 - 10)
        a, b = Recorder("a"), Recorder("b")
        q = await spool_for(known_store, [a, b])
        s = ReportScheduler(
            known_store, report_cfg(enabled=False), [a, b], "web1", queue=q, clock=clock,
            sleep=clock.sleep,
        )  # fmt: skip
        await s.start()
        assert s.due is None and s.describe()["summary"] == "daily report off"
        s.apply_config(report_cfg(channels=["b"], time="07:00"))
        clock.limit = T1 + 100
        assert await until_true(lambda: len(b.messages) == 1)
        assert a.messages == []
        # A new time of day takes effect at once.
        s.apply_config(report_cfg(time="08:30"))
        clock.limit = T1 + 200
        assert await until_true(lambda: s.due == T1 + 1.5 * H)
        await s.stop()
        await q.stop()

    asyncio.run(go())


def test_scheduler_catches_up_a_missed_report(known_store: Store) -> None:
    async def go() -> None:
        known_store.set_meta("report.last_slot", repr(T0))  # yesterday's was sent
        clock = FakeTime(T1 + 2 * H)  # started at 09:00: today's 07:00 was missed
        rec = Recorder()
        q = await spool_for(known_store, [rec])
        s = ReportScheduler(
            known_store, report_cfg(), [rec], "web1", queue=q, clock=clock, sleep=clock.sleep
        )
        await s.start()
        assert s.due == T1
        clock.limit = T1 + 2 * H + 60
        assert await until_true(lambda: len(rec.messages) == 1)
        assert "57 failures" in rec.messages[0].subject  # the period that ended at 07:00
        await s.stop()
        await q.stop()

    asyncio.run(go())


def test_scheduler_journal_only_and_dry_run(known_store: Store) -> None:
    async def go() -> None:
        clock = FakeTime(T1 - 10)
        s = ReportScheduler(known_store, report_cfg(), [], "web1", clock=clock, sleep=clock.sleep)
        assert s.describe()["summary"].endswith("to journal only")
        assert await s.run_once(T1) == {}
        rec = Recorder()
        q = await spool_for(known_store, [rec])
        s = ReportScheduler(
            known_store, report_cfg(), [rec], "web1", queue=q, dry_run=True, clock=clock,
            sleep=clock.sleep,
        )  # fmt: skip
        assert await s.run_once(T1) == {}
        await asyncio.sleep(0.3)
        assert rec.calls == 0 and spool_rows(known_store) == []
        await q.stop()

    asyncio.run(go())


def test_a_spooled_report_survives_a_restart_and_is_sent_once(
    tmp_path: Path, smtp_servers: Any
) -> None:
    """The mail server is down when the report is due; the daemon stops. The report is in the
    store: the next process sends it, once, to a real SMTP server, with the slot's id."""
    state = tmp_path / "state"

    async def first() -> str:
        store = Store(state)
        await asyncio.to_thread(store.open)
        await asyncio.to_thread(fill, store, *known_rows())
        down = SmtpChannel(
            host="127.0.0.1", port=free_port(), sender="m@example.org", to=["o@example.org"],
            timeout=2, hostname="web1", tls="none",
        )  # fmt: skip
        q = await spool_for(store, [down], retry_initial=config.Duration(30))
        clock = FakeTime(T1 + 10)
        s = ReportScheduler(
            store, report_cfg(), [down], "web1", queue=q, clock=clock, sleep=clock.sleep
        )
        answers = await s.run_once(T1)
        assert list(answers) == ["smtp"]
        assert await until_true(lambda: q.stats["delivery_failures"] >= 1)
        rows = spool_rows(store)
        assert [(r[0], r[1], r[3]) for r in rows] == [("smtp", "message", 1)]
        await q.stop()
        await asyncio.to_thread(store.close)
        return str(rows[0][2])

    async def second(srv: SmtpServer) -> AlertQueue:
        store = Store(state)
        await asyncio.to_thread(store.open)
        up = SmtpChannel(
            host="127.0.0.1", port=srv.port, sender="m@example.org", to=["o@example.org"],
            timeout=5, hostname="web1", tls="none",
        )  # fmt: skip
        q = await spool_for(store, [up])  # a restart retries pending rows at once
        assert await until_true(lambda: q.stats["messages_sent"] == 1)
        await asyncio.sleep(0.5)
        await q.stop()
        assert spool_rows(store) == []
        await asyncio.to_thread(store.close)
        return q

    batch = asyncio.run(first())
    assert batch == report_id("web1", T0, T1)
    srv: SmtpServer = smtp_servers("plain")
    q = asyncio.run(second(srv))
    (got,) = srv.wait_for(1)
    assert len(srv.received) == 1 and q.stats["messages_sent"] == 1
    assert "57 failures, 4 bans, 3 logins" in str(got.msg["Subject"])
    assert batch in str(got.msg["Message-ID"])
    body = got.msg.get_body(("plain",))
    assert body is not None and "57 attempts from 4 addresses" in body.get_content()


def test_without_a_queue_the_report_is_spooled_for_the_daemons_queue(known_store: Store) -> None:
    """A scheduler not wired to the alert queue still writes the report into the spool; the
    queue delivers it (here: started afterwards, as after a restart)."""

    async def go() -> None:
        rec = Recorder()
        clock = FakeTime(T1 + 10)
        s = ReportScheduler(
            known_store, report_cfg(), [rec], "web1", clock=clock, sleep=clock.sleep
        )
        assert await s.run_once(T1) == {"rec": f"spooled as {report_id('web1', T0, T1)}"}
        assert spool_rows(known_store) == [("rec", "message", report_id("web1", T0, T1), 0)]
        q = await spool_for(known_store, [rec])
        assert await until_true(lambda: len(rec.messages) == 1)
        assert rec.messages[0].id == report_id("web1", T0, T1)
        await q.stop()

    asyncio.run(go())


# =========================================================================== scale


def synthetic_events(
    n: int, since: float, until: float, seed: int = 1, addresses: int = 20_000
) -> list[tuple]:
    """``n`` events spread over [since, until) shaped like a public SSH server's log: most of
    them failures from a long-tailed set of attacking addresses, a few logins."""
    rnd = random.Random(seed)
    names = ["root", "admin", "ubuntu", "test", "oracle", "postgres", "git", "user", "pi"]
    names += [f"user{i}" for i in range(2000)]
    ips = [
        f"{10 + i // 65536}.{(i // 256) % 256}.{i % 256}.{1 + i % 200}" for i in range(addresses)
    ]
    span = until - since
    out: list[tuple] = []
    port = 1024
    while len(out) < n:
        ts = since + rnd.random() * span
        ip = ips[
            min(int(rnd.paretovariate(1.2)) - 1, addresses - 1)
            if rnd.random() < 0.7
            else rnd.randrange(addresses)
        ]
        user = names[min(int(rnd.expovariate(0.05)), len(names) - 1)]
        port = port + 1 if port < 65000 else 1024
        r = rnd.random()
        if r < 0.35:
            out.append(ev(ts, "invalid_user", user, ip, port))
            out.append(
                ev(
                    ts + 1,
                    "auth_failure",
                    user,
                    ip,
                    port,
                    "password",
                    detail={"invalid_user": True},
                )
            )
            out.append(ev(ts + 2, "preauth_disconnect", user, ip, port))
        elif r < 0.75:
            out.append(ev(ts, "auth_failure", "root", ip, port, "password"))
            out.append(ev(ts, "auth_failure", "root", ip, None, "pam"))
        elif r < 0.95:
            out.append(ev(ts, "protocol_error", None, ip, port))
        elif r < 0.99:
            out.append(ev(ts, "invalid_user", user, ip, port))  # a scanner that left
        else:
            out.append(
                ev(ts, "auth_success", "deploy", "10.255.0.5", port, "publickey", key_fp="SHA256:k")
            )
    return out[:n]


def synthetic_store(state_dir: Path, n: int, since: float, until: float) -> Store:
    store = Store(state_dir)
    store.open()
    rows = synthetic_events(n, since, until)
    rows.sort(key=lambda r: r[0])  # a live store is written in time order
    conn = store.conn
    for i in range(0, len(rows), 50_000):
        with store.transaction():
            conn.executemany(INSERT_EVENT, rows[i : i + 50_000])
    rnd = random.Random(2)
    bans = []
    for i in range(max(1, n // 200)):
        t = since + rnd.random() * (until - since)
        bans.append(
            ban(
                f"10.{i // 256 % 256}.{i % 256}.1/32",
                t,
                t + 600,
                lifted=t + 600,
                lifted_by="expired",
            )
        )
    with store.transaction():
        conn.executemany(
            "INSERT INTO bans(net, rule, reason, offence, created, expires, active, lifted, "
            "lifted_by, dry_run) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            bans,
        )
    conn.execute("ANALYZE")
    return store


def test_large_store_report(tmp_path: Path) -> None:
    """Not a timed assertion: prints how long the report takes (SSHMONITOR_REPORT_EVENTS=1000000
    for the 1M-event figure in docs/alerts.md)."""
    n = int(os.environ.get("SSHMONITOR_REPORT_EVENTS", "50000"))
    days = 30
    since_all = T1 - days * 86400
    store = synthetic_store(tmp_path / "big", n, since_all, T1)
    try:
        conn = ro(store)
        t = time.perf_counter()
        day = build_report(conn, T1 - 86400, T1)
        t_day = time.perf_counter() - t
        t = time.perf_counter()
        month = build_report(conn, since_all, T1)
        t_month = time.perf_counter() - t
        assert month["failures"]["total"] > day["failures"]["total"] > 0
        assert sum(month["chart"]["failures"]) == month["failures"]["total"]
        for fmt in ("text", "html", "json"):
            render_report(month, "web1", fmt)
        print(
            f"\n{n} events over {days} days: 24h report {t_day:.3f}s, {days}d report {t_month:.3f}s"
        )
    finally:
        store.close()


def test_dst_safe_slots() -> None:
    s = ReportScheduler("/nonexistent.db", report_cfg(time="02:30"), [], "web1")
    t = T0
    for _ in range(400):  # a year and more of slots: always the local time asked for
        nxt = s.next_slot(t)
        assert nxt is not None and nxt > t
        local = datetime.fromtimestamp(nxt)
        assert (local.hour, local.minute) in ((2, 30), (3, 30))  # 03:30 only in a DST gap
        assert nxt - t <= 86400 + 3600 or t == T0
        t = nxt
    assert s.prev_slot(t) == t
    assert s.prev_slot(t + 1) == t
    assert s.prev_slot(t - 1) < t - 86400 + 3601
