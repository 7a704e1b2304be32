"""Stable, opaque alert and message ids (issue #11 item 10): delivery is at least once, so a
duplicate must be recognisable — the same Message-ID, Idempotency-Key and JSON ``id`` every
time the same alerts are delivered, whatever the attacker put in the log line.

Real parts: the parser and detection engine on sshd lines, aiosmtpd, msmtp as sendmail, a local
HTTP server for webhooks and the Forward Email API, and the daemon killed with SIGKILL while
the webhook server holds its POST open.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import signal
import time
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from typing import Any

import mailservers
import pytest
from mailservers import Reply, ScriptedHttpServer, SmtpServer

from sshmonitord import config
from sshmonitord.detect.engine import Engine, History
from sshmonitord.events import Action, Event, Finding, Kind, Line, Severity
from sshmonitord.notify import Alert, Message, render
from sshmonitord.notify.alert import message_id
from sshmonitord.notify.forwardemail import ForwardEmailChannel
from sshmonitord.notify.sendmail import SendmailChannel
from sshmonitord.notify.smtp import SmtpChannel
from sshmonitord.notify.webhook import WebhookChannel
from sshmonitord.parse import Parser

smtp_servers = mailservers.smtp_servers
http_server = mailservers.http_server
msmtp_wrapper = mailservers.msmtp_wrapper

ID = re.compile(r"[0-9a-f]{32}")
# RFC 5322 msg-id with dot-atom-text on both sides (what a strict parser accepts).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
MSG_ID = re.compile(rf"<{_ATEXT}(?:\.{_ATEXT})*@{_ATEXT}(?:\.{_ATEXT})*>")
EVIL = "evil\r\nBcc: victim@example.net <x@y>\n@>"
SENDER = "sshmonitor@web1.example.org"
RCPT = ("ops@example.org",)
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# --------------------------------------------------------------------------- detection


def sshd_lines() -> list[str]:
    fails = [
        f"Nov 24 12:00:{i:02d} web1 sshd[{100 + i}]: Failed password for deploy from "
        f"203.0.113.7 port {4000 + i} ssh2"
        for i in range(6)
    ]
    return [
        *fails,
        "Nov 24 12:00:30 web1 sshd[200]: Accepted password for deploy from 203.0.113.7 port "
        "4100 ssh2",
        "Nov 24 12:01:00 web1 sshd[300]: Accepted publickey for root from 192.0.2.50 port 5000 "
        "ssh2: ED25519 SHA256:abcdefghijklmnop",
    ]


def detect(lines: list[str], host: str = "web1") -> list[Alert]:
    """A fresh parser and engine, as after a restart: the windows start empty."""
    parser = Parser(reference=T0 + timedelta(days=1))
    engine = Engine(config.DetectionConfig(), History(since=0.0), zone=UTC)
    alerts: list[Alert] = []
    for text in lines:
        ev = parser.parse_line(Line(text, "file:/var/log/auth.log"))
        if ev is not None and ev.kind is not Kind.IGNORED:
            alerts += [Alert.from_finding(f, host) for f in engine.feed(ev)]
    return alerts


def by_rule(alerts: list[Alert]) -> dict[str, Alert]:
    return {a.rule: a for a in alerts}


def test_redetection_after_a_restart_gives_the_same_ids() -> None:
    lines = sshd_lines()
    first = by_rule(detect(lines))
    assert {"bruteforce", "success_after_failures", "root_login"} <= set(first)
    assert all(ID.fullmatch(a.id) for a in first.values())
    # The same lines read again by a fresh engine: every id is the same.
    again = by_rule(detect(lines))
    assert {r: a.id for r, a in again.items()} == {r: a.id for r, a in first.items()}
    # Only the uncommitted tail re-read (3 of the 6 failures, then the logins): the windows
    # hold less evidence, so the compromise alert starts later — and still has the same id,
    # because the id is about the event that completed it.
    tail = by_rule(detect(lines[3:]))
    saf, saf_tail = first["success_after_failures"], tail["success_after_failures"]
    assert len(saf_tail.evidence) < len(saf.evidence) and saf_tail.first_seen > saf.first_seen
    assert saf_tail.id == saf.id
    assert tail["root_login"].id == first["root_login"].id
    # Another host's identical log is another alert.
    other = by_rule(detect(lines, host="web2"))
    assert other["root_login"].id != first["root_login"].id
    # Different findings never share an id.
    ids = [a.id for a in detect(lines)]
    assert len(ids) == len(set(ids))


def finding(user: str, raw: str, rule: str = "new_source", dt: float = 0.0) -> Finding:
    ev = Event(
        ts=T0 + timedelta(seconds=dt),
        host="web1",
        program="sshd",
        pid=1,
        kind=Kind.AUTH_SUCCESS,
        user=user,
        ip=ip_address("203.0.113.9"),
        raw=raw,
    )
    return Finding(rule, Severity.HIGH, f"user {user}", (ev,), Action.ALERT, f"{user} logged in")


def test_id_is_opaque_and_each_part_of_the_content_counts() -> None:
    raw = f"sshd[7]: Accepted password for {EVIL} from 203.0.113.9 port 1 ssh2"
    a = Alert.from_finding(finding(EVIL, raw), "web1")
    assert ID.fullmatch(a.id)  # no user name, address, rule or time in it
    assert a.id == Alert.from_finding(finding(EVIL, raw), "web1").id
    others = {
        Alert.from_finding(finding(EVIL, raw, rule="new_key"), "web1").id,  # same event
        Alert.from_finding(finding(EVIL, raw, dt=1e-6), "web1").id,  # a microsecond later
        Alert.from_finding(finding(EVIL, raw + " "), "web1").id,  # another line
        Alert.from_finding(finding("evil", raw), "web1").id,  # another subject
        Alert.from_finding(finding(EVIL, raw), "web2").id,  # another host
    }
    assert a.id not in others and len(others) == 5


def test_id_survives_the_spool_and_old_rows_get_one() -> None:
    a = detect(sshd_lines())[0]
    doc = json.dumps(a.to_dict(), ensure_ascii=False)  # what the queue stores
    assert Alert.from_dict(json.loads(doc)).id == a.id
    # Throttle folding changes the count, not the id.
    assert dataclasses.replace(a, count=7, folded_since=1.0).id == a.id
    # A row spooled by an older version: its id held attacker text.
    old = {**a.to_dict(), "id": f"new_source:user {EVIL}:1795521600"}
    got = Alert.from_dict(json.loads(json.dumps(old)))
    assert ID.fullmatch(got.id)
    assert Alert.from_dict(json.loads(json.dumps(old))).id == got.id  # every load alike
    other = Alert.from_dict({**old, "id": f"new_source:user {EVIL}:1795521601"})
    assert other.id != got.id
    no_id = {k: v for k, v in a.to_dict().items() if k != "id"}
    assert ID.fullmatch(Alert.from_dict(no_id).id)


# --------------------------------------------------------------------------- messages


def test_message_id_one_alert_a_digest_and_retries() -> None:
    a, b, c = detect(sshd_lines())[:3]
    single = render([a], "web1", now=1.0)
    assert single.id == a.id and f"message id {a.id}" in single.text
    assert f"message id {a.id}" in single.html
    digest = render([a, b], "web1", now=1.0)
    # A retry: other order, later, with a suppressed count — the same alerts, the same id.
    retry = render([b, a], "web1", suppressed=4, now=5000.0)
    assert digest.id == retry.id == message_id([b.id, a.id])
    assert ID.fullmatch(digest.id) and digest.id not in (a.id, b.id)
    assert digest.text != retry.text  # what changed is only presentation
    assert render([a, c], "web1").id != digest.id
    assert render([a, b, c], "web1").id != digest.id
    # A message built by hand (the daily report has no alerts): still an opaque id, fixed
    # by its content.
    report = Message("[sshmonitor] report", "text", "<p>html</p>", [], host="web1")
    assert ID.fullmatch(report.id)
    assert Message("[sshmonitor] report", "text", "<p>html</p>", [], host="web1").id == report.id
    assert ID.fullmatch(Message("s", "t", "h", [], id=f"x\r\n{EVIL}").id)


def spooled(*alerts: Alert) -> list[str]:
    return [json.dumps(a.to_dict(), ensure_ascii=False) for a in alerts]


def redeliver(docs: list[str], suppressed: int, now: float) -> Message:
    """What the queue does with pending spool rows after a restart."""
    return render([Alert.from_dict(json.loads(d)) for d in docs], "web1", suppressed, now)


def evil_alerts() -> list[Alert]:
    """Alerts about an attacker-chosen user name with CR/LF, <, > and @."""
    raw = f"sshd[7]: Accepted password for {EVIL} from 203.0.113.9 port 1 ssh2"
    a = Alert.from_finding(finding(EVIL, raw), "web1")
    b = Alert.from_finding(finding(EVIL, raw, rule="root_login"), "web1")
    return [a, b]


def header_lines(data: bytes, name: bytes) -> list[bytes]:
    head = re.split(rb"\r?\n\r?\n", data, maxsplit=1)[0]
    return [ln for ln in re.split(rb"\r?\n", head) if ln.lower().startswith(name.lower() + b":")]


def check_mail_pair(first: Any, second: Any, expected: Message) -> None:
    ids = [m.msg["Message-ID"] for m in (first, second)]
    assert ids[0] == ids[1] == f"<{expected.id}@web1>"
    assert MSG_ID.fullmatch(ids[0])
    for m in (first, second):
        assert len(header_lines(m.data, b"Message-ID")) == 1
        assert header_lines(m.data, b"Bcc") == []
        assert m.msg["X-Sshmonitor-Alert-Ids"].split() == expected.alert_ids
        assert m.rcpt_tos == list(RCPT)


def test_smtp_redelivery_carries_the_same_message_id(smtp_servers: Any) -> None:
    srv: SmtpServer = smtp_servers("plain")
    ch = SmtpChannel(
        host="127.0.0.1", port=srv.port, tls="none", sender=SENDER, to=RCPT, hostname="web1"
    )
    docs = spooled(*evil_alerts())
    first = redeliver(docs, 0, 1000.0)
    run(ch.send(first))
    run(ch.send(redeliver(docs, 2, 2000.0)))
    run(ch.send(render(detect(sshd_lines())[:1], "web1")))  # other alerts
    a, b, c = srv.wait_for(3)
    check_mail_pair(a, b, first)
    assert c.msg["Message-ID"] != a.msg["Message-ID"] and MSG_ID.fullmatch(c.msg["Message-ID"])


def test_smtp_message_id_host_is_sanitised(smtp_servers: Any) -> None:
    srv: SmtpServer = smtp_servers("plain")
    msg = render(evil_alerts(), "web1")
    for bad in ("web1\r\nBcc: x@y", "a..b", "-web1", "w@b", "<web1>", "x" * 254):
        ch = SmtpChannel(
            host="127.0.0.1", port=srv.port, tls="none", sender=SENDER, to=RCPT, hostname=bad
        )
        run(ch.send(msg))
    got = srv.wait_for(6)
    assert {m.msg["Message-ID"] for m in got} == {f"<{msg.id}@localhost>"}


def test_sendmail_redelivery_carries_the_same_message_id(
    smtp_servers: Any, msmtp_wrapper: Any
) -> None:
    srv: SmtpServer = smtp_servers("plain")
    ch = SendmailChannel(
        path=msmtp_wrapper(srv.port, SENDER), sender=SENDER, to=RCPT, hostname="web1"
    )
    docs = spooled(*evil_alerts())
    first = redeliver(docs, 0, 1000.0)
    run(ch.send(first))
    run(ch.send(redeliver(docs, 5, 3000.0)))
    a, b = srv.wait_for(2)
    check_mail_pair(a, b, first)


def test_webhook_redelivery_carries_the_same_key_and_id(http_server: ScriptedHttpServer) -> None:
    # A configured header of the same name must not pin every message to one key.
    ch = WebhookChannel(url=http_server.url + "/hook", headers={"idempotency-key": "fixed"})
    slack = WebhookChannel(url=http_server.url + "/slack", format="slack")
    docs = spooled(*evil_alerts())
    first = redeliver(docs, 0, 1000.0)

    async def go() -> None:
        try:
            await ch.send(first)
            await ch.send(redeliver(docs, 3, 2000.0))
            await ch.send(render(detect(sshd_lines())[:1], "web1"))
            await slack.send(first)
            await slack.send(redeliver(docs, 1, 4000.0))
        finally:
            await ch.close()
            await slack.close()

    run(go())
    r1, r2, r3, s1, s2 = http_server.requests
    for r in (r1, r2):
        assert r.headers["idempotency-key"] == first.id
        body = r.json()
        assert body["id"] == first.id and body["alert_ids"] == first.alert_ids
        assert [a["id"] for a in body["alerts"]] == first.alert_ids
    assert r3.headers["idempotency-key"] != first.id and ID.fullmatch(r3.headers["idempotency-key"])
    assert r3.json()["id"] == r3.headers["idempotency-key"]
    # Slack: the payload is Slack's (text only); the key is a header, the id in the text.
    for s in (s1, s2):
        assert s.headers["idempotency-key"] == first.id
        assert list(s.json()) == ["text"] and f"message id {first.id}" in s.json()["text"]


def test_forwardemail_redelivery_carries_the_same_message_id(
    http_server: ScriptedHttpServer,
) -> None:
    ch = ForwardEmailChannel(
        api_key="fe-test-key", base_url=http_server.url, sender=SENDER, to=RCPT, hostname="web1"
    )
    docs = spooled(*evil_alerts())
    first = redeliver(docs, 0, 1000.0)

    async def go() -> None:
        try:
            await ch.send(first)
            await ch.send(redeliver(docs, 2, 2000.0))
            await ch.send(render(detect(sshd_lines())[:1], "web1"))
        finally:
            await ch.close()

    run(go())
    r1, r2, r3 = http_server.requests
    for r in (r1, r2):
        assert r.path == "/v1/emails"
        assert r.headers["idempotency-key"] == first.id
        body = r.json()
        assert body["messageId"] == f"<{first.id}@web1>" and MSG_ID.fullmatch(body["messageId"])
        assert body["headers"]["X-Sshmonitor-Alert-Ids"].split() == first.alert_ids
        assert "\r" not in json.dumps(body["headers"]) and "\n" not in body["messageId"]
    assert r3.json()["messageId"] != r1.json()["messageId"]
    assert r3.headers["idempotency-key"] != first.id


# --------------------------------------------------------------------------- end to end


def test_kill9_during_the_post_redelivers_with_the_same_id(tmp_path: Any, daemon_factory: Any):
    """The webhook server holds the first POST open; the daemon is killed with SIGKILL
    meanwhile (the alert is still in its spool); after the restart the same alert is posted
    again, with the same Idempotency-Key, id and alert ids."""
    srv = ScriptedHttpServer(Reply(200, {"ok": True}, delay=60.0))
    log = tmp_path / "auth.log"
    log.write_text("")
    conf = (
        f"sources: {{mode: file, files: [{log}], start_at: beginning, poll_interval: 200ms}}\n"
        "notify:\n  digest_window: 200ms\n  retry_initial: 300ms\n  retry_max: 1s\n"
        "  channels:\n"
        f"    - {{type: webhook, url: '{srv.url}/hook', timeout: 90s, min_severity: info}}\n"
        "detection: {rules: {new_source: {enabled: false}, new_key: {enabled: false}}}\n"
    )
    try:
        d = daemon_factory(conf)
        d.wait_log("sshmonitord started")
        log.write_text(
            "Nov 24 12:01:00 web1 sshd[300]: Accepted publickey for root from 192.0.2.50 "
            "port 5000 ssh2: ED25519 SHA256:abcdefghijklmnop\n"
        )
        wait_for(lambda: len(srv.requests) >= 1, 15, d)
        d.proc.send_signal(signal.SIGKILL)  # the POST is still open: no answer yet
        d.proc.wait(timeout=10)
        assert "alert message delivered" not in d.log_text()

        d2 = daemon_factory(conf)
        wait_for(lambda: len(srv.requests) >= 2, 20, d2)
        d2.wait_log("alert message delivered", timeout=10)
        time.sleep(1.0)  # nothing more may come: the second delivery was accepted
        assert len(srv.requests) == 2, [r.json() for r in srv.requests]
        first, second = srv.requests
        key = first.headers["idempotency-key"]
        assert ID.fullmatch(key) and second.headers["idempotency-key"] == key
        b1, b2 = first.json(), second.json()
        assert b1["id"] == b2["id"] == key
        assert b1["alert_ids"] == b2["alert_ids"] and len(b1["alert_ids"]) == 1
        assert [a["rule"] for a in b1["alerts"]] == ["root_login"]
        assert b1["alerts"][0]["id"] == b2["alerts"][0]["id"] == key
    finally:
        srv.stop()


def wait_for(cond: Any, timeout: float, d: Any) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out; daemon log:\n{d.log_text()}")
        time.sleep(0.05)
