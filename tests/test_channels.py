"""Delivery channels against real servers on 127.0.0.1: aiosmtpd (plain, STARTTLS, implicit
TLS, AUTH), msmtp as the sendmail program, and a scripted HTTP server standing in for the
Forward Email API and for webhooks."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import mailservers
import pytest
import structlog
from mailservers import Reply, ScriptedHttpServer, SmtpServer, free_port, script

from sshmonitord import config, log
from sshmonitord.notify import Alert, DeliveryError, Message, make_channel, render
from sshmonitord.notify.forwardemail import ForwardEmailChannel
from sshmonitord.notify.logchannel import LogChannel
from sshmonitord.notify.sendmail import SendmailChannel
from sshmonitord.notify.smtp import SmtpChannel
from sshmonitord.notify.webhook import WebhookChannel

# Fixtures from mailservers.py (assigned, so pytest finds them in this module).
tls_cert = mailservers.tls_cert
smtp_servers = mailservers.smtp_servers
silent_listener = mailservers.silent_listener
http_server = mailservers.http_server
msmtp_wrapper = mailservers.msmtp_wrapper

SENDER = "sshmonitor@web1.example.org"
RCPT = ("ops@example.org", "oncall@example.org")
XSS_USER = "<script>alert(1)</script>"
XSS_ATTR = '"><img src=x>'
INJECTION = "evil\r\nBcc: victim@example.net\r\nX-Injected: yes\nSubject: forged"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def alerts() -> list[Alert]:
    now = time.time()
    critical = Alert(
        id="success_after_failures:203.0.113.7/32:1",
        rule="success_after_failures",
        severity="critical",
        subject="203.0.113.7/32",
        host="web1",
        summary=f"{XSS_USER} logged in from 203.0.113.7 after 14 failures within 1h: "
        "possible compromise",
        first_seen=now - 300,
        last_seen=now - 10,
        count=3,
        folded_since=now - 3600,
        evidence=[
            f"May  1 12:00:01 web1 sshd[411]: Failed password for {XSS_USER} from 203.0.113.7 port 4242 ssh2",
            f"May  1 12:00:09 web1 sshd[411]: Invalid user {XSS_ATTR} from 203.0.113.7 port 4243",
            f"May  1 12:00:30 web1 sshd[415]: Accepted password for {XSS_USER} from 203.0.113.7 port 4250 ssh2\x1b[2J",
        ],
        user=XSS_USER,
        ip="203.0.113.7",
    )
    injected = Alert(
        id="bruteforce:198.51.100.9/32:2",
        rule="bruteforce",
        severity="high",
        subject="198.51.100.9/32",
        host="web1",
        summary=f"5 failures for {INJECTION} within 10m",
        first_seen=now - 60,
        last_seen=now - 5,
        ban={"net": "198.51.100.9/32", "until": now + 600, "offence": 2},
        evidence=["sshd[9]: Failed password for x from 198.51.100.9 port 1 ssh2"],
        user=INJECTION,
        ip="198.51.100.9",
    )
    return [critical, injected]


def message() -> Message:
    return render(alerts(), "web1")


def assert_mime(data: bytes, msg: Any, rendered: Message) -> None:
    """The MIME message as the server got it: headers, both parts, escaping, no injection."""
    assert msg["From"] == SENDER
    assert [a.strip() for a in msg["To"].split(",")] == list(RCPT)
    assert msg["Subject"] == rendered.subject
    assert msg["Subject"].startswith("[sshmonitor] CRITICAL web1: 2 alerts (")
    assert msg["Date"] and msg["Date"].datetime is not None
    assert msg["Message-ID"].startswith("<") and msg["Message-ID"].endswith(">")
    assert msg["Auto-Submitted"] == "auto-generated"
    # CRLF injection from the summary/user name: no header of its own, anywhere.
    header_block = data.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in data else data.split(b"\n\n")[0]
    names = [
        line.split(b":", 1)[0].lower()
        for line in header_block.splitlines()
        if line and not line[:1].isspace()
    ]
    assert b"x-injected" not in names and b"bcc" not in names
    assert names.count(b"subject") == 1
    assert msg["X-Injected"] is None and msg["Bcc"] is None
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    # On the wire every line ends in CRLF; the content is ours line for line.
    text, html_part = (p.get_content().replace("\r\n", "\n") for p in parts)
    assert text == rendered.text
    assert html_part == rendered.html
    # Escaping: attacker strings only ever appear escaped in the HTML part...
    for raw in (XSS_USER, XSS_ATTR, "<img", "<script"):
        assert raw not in html_part
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_part
    assert "&quot;&gt;&lt;img src=x&gt;" in html_part
    # ... and control characters are visible escapes in the text part.
    assert "\x1b" not in text and "\r" not in text
    assert "\\x1b[2J" in text
    assert "\\r\\nBcc: victim@example.net" in text


# --------------------------------------------------------------------------- SMTP


def smtp_channel(port: int, **kw: Any) -> SmtpChannel:
    kw.setdefault("tls", "none")
    return SmtpChannel(
        host="127.0.0.1", port=port, sender=SENDER, to=RCPT, timeout=5, hostname="web1", **kw
    )


def test_smtp_plain_delivers_proper_mime(smtp_servers: Any) -> None:
    srv: SmtpServer = smtp_servers("plain")
    rendered = message()
    answer = run(smtp_channel(srv.port).send(rendered))
    assert answer.startswith("250 ") and "queued as TEST1" in answer
    (got,) = srv.wait_for(1)
    assert got.mail_from == SENDER
    assert got.rcpt_tos == list(RCPT)  # not victim@example.net from the injected "Bcc"
    assert not got.tls
    assert_mime(got.data, got.msg, rendered)
    assert got.msg["Message-ID"].endswith("@web1>")


def test_smtp_non_ascii_subject_is_encoded(smtp_servers: Any) -> None:
    srv = smtp_servers("plain")
    a = alerts()[0]
    a.summary = "Jürgen logged in from 203.0.113.7 — 🔑 after 3 failures"
    rendered = render([a], "web1")
    run(smtp_channel(srv.port).send(rendered))
    (got,) = srv.wait_for(1)
    raw_subject = [ln for ln in got.data.split(b"\r\n") if ln.lower().startswith(b"subject:")]
    assert raw_subject and raw_subject[0].isascii() and b"=?utf-8?" in raw_subject[0]
    assert got.msg["Subject"] == rendered.subject
    assert "Jürgen" in got.msg.get_body(("plain",)).get_content()


def test_smtp_starttls_with_auth(smtp_servers: Any, tls_cert: tuple[Path, Path]) -> None:
    srv = smtp_servers("starttls", users={"alerts": "s3cret-pass"})
    rendered = message()
    ch = smtp_channel(
        srv.port,
        tls="starttls",
        username="alerts",
        password="s3cret-pass",
        ca_file=str(tls_cert[0]),
    )
    answer = run(ch.send(rendered))
    assert answer.startswith("250 ")
    (got,) = srv.wait_for(1)
    assert got.tls and got.auth_user == "alerts"
    assert srv.auth_attempts == [("alerts", True)]
    assert_mime(got.data, got.msg, rendered)


def test_smtp_wrong_password_is_permanent(smtp_servers: Any, tls_cert: tuple[Path, Path]) -> None:
    srv = smtp_servers("starttls", users={"alerts": "s3cret-pass"})
    ch = smtp_channel(
        srv.port, tls="starttls", username="alerts", password="wrong", ca_file=str(tls_cert[0])
    )
    with pytest.raises(DeliveryError) as ei:
        run(ch.send(message()))
    assert ei.value.permanent
    assert "535" in str(ei.value)
    assert "wrong" not in str(ei.value)  # never the password
    assert srv.received == []


def test_smtp_untrusted_certificate_is_permanent(smtp_servers: Any) -> None:
    srv = smtp_servers("starttls")
    with pytest.raises(DeliveryError) as ei:
        run(smtp_channel(srv.port, tls="starttls").send(message()))  # system CA store only
    assert ei.value.permanent
    assert "certificate" in str(ei.value).lower()
    assert srv.received == []


def test_smtp_refuses_clear_text_when_starttls_missing(smtp_servers: Any) -> None:
    srv = smtp_servers("plain")
    with pytest.raises(DeliveryError) as ei:
        run(smtp_channel(srv.port, tls="starttls").send(message()))
    assert ei.value.permanent and "STARTTLS" in str(ei.value)
    assert srv.received == []


def test_smtp_implicit_tls(smtp_servers: Any, tls_cert: tuple[Path, Path]) -> None:
    srv = smtp_servers("implicit")
    answer = run(smtp_channel(srv.port, tls="implicit", ca_file=str(tls_cert[0])).send(message()))
    assert answer.startswith("250 ")
    (got,) = srv.wait_for(1)
    assert got.tls


def test_smtp_server_down_is_transient() -> None:
    with pytest.raises(DeliveryError) as ei:
        run(smtp_channel(free_port()).send(message()))
    assert not ei.value.permanent
    assert "refused" in str(ei.value).lower()


def test_smtp_silent_server_times_out_transient(silent_listener: int) -> None:
    ch = SmtpChannel(
        host="127.0.0.1", port=silent_listener, tls="none", sender=SENDER, to=RCPT, timeout=0.5
    )
    t0 = time.monotonic()
    with pytest.raises(DeliveryError) as ei:
        run(ch.send(message()))
    assert time.monotonic() - t0 < 3
    assert not ei.value.permanent and "timed out" in str(ei.value)


def test_smtp_reply_codes(smtp_servers: Any) -> None:
    srv = smtp_servers("plain")
    # Every recipient refused with 4xx: try again later.
    srv.rcpt_replies = {r: "450 4.2.0 mailbox busy" for r in RCPT}
    with pytest.raises(DeliveryError) as ei:
        run(smtp_channel(srv.port).send(message()))
    assert not ei.value.permanent and "450" in str(ei.value)
    # 5xx for a recipient: permanent, with what the server said.
    srv.rcpt_replies = {r: "550 5.1.1 no such user" for r in RCPT}
    with pytest.raises(DeliveryError) as ei:
        run(smtp_channel(srv.port).send(message()))
    assert ei.value.permanent and "no such user" in str(ei.value)
    # One recipient refused, the other took it: delivered (a retry would duplicate it).
    srv.rcpt_replies = {RCPT[1]: "550 5.1.1 no such user"}
    answer = run(smtp_channel(srv.port).send(message()))
    assert answer.startswith("250 ") and "refused" in answer and RCPT[1] in answer
    assert srv.wait_for(1)[0].rcpt_tos == [RCPT[0]]
    # DATA answered 451 / 554.
    srv.rcpt_replies = {}
    srv.data_reply = "451 4.3.0 try again later"
    with pytest.raises(DeliveryError) as ei:
        run(smtp_channel(srv.port).send(message()))
    assert not ei.value.permanent and "451" in str(ei.value)
    srv.data_reply = "554 5.7.1 rejected as spam"
    with pytest.raises(DeliveryError) as ei:
        run(smtp_channel(srv.port).send(message()))
    assert ei.value.permanent and "rejected as spam" in str(ei.value)


# --------------------------------------------------------------------------- sendmail


def test_sendmail_through_real_msmtp(smtp_servers: Any, msmtp_wrapper: Any) -> None:
    srv = smtp_servers("plain")
    rendered = message()
    ch = SendmailChannel(
        path=msmtp_wrapper(srv.port, SENDER), sender=SENDER, to=RCPT, hostname="web1"
    )
    answer = run(ch.send(rendered))
    assert "exited 0" in answer
    (got,) = srv.wait_for(1)
    assert sorted(got.rcpt_tos) == sorted(RCPT)  # msmtp -t: recipients from the To: header
    assert got.mail_from == SENDER
    assert_mime(got.data, got.msg, rendered)


def test_sendmail_msmtp_server_down_is_transient(msmtp_wrapper: Any) -> None:
    ch = SendmailChannel(path=msmtp_wrapper(free_port(), SENDER), sender=SENDER, to=RCPT)
    with pytest.raises(DeliveryError) as ei:
        run(ch.send(message()))
    assert not ei.value.permanent  # msmtp exits EX_TEMPFAIL (75)
    assert "exit status 75" in str(ei.value) and "refused" in str(ei.value).lower()


def test_sendmail_exit_codes(tmp_path: Path) -> None:
    seen = tmp_path / "argv"
    tempfail = script(tmp_path, "tempfail", f'echo "$@" > {seen}; cat >/dev/null; exit 75\n')
    with pytest.raises(DeliveryError) as ei:
        run(SendmailChannel(path=tempfail, sender=SENDER, to=RCPT).send(message()))
    assert not ei.value.permanent
    assert seen.read_text().split() == ["-t", "-oi"]

    failing = script(tmp_path, "failing", 'echo "sendmail: no such user here" >&2; exit 1\n')
    with pytest.raises(DeliveryError) as ei:
        run(SendmailChannel(path=failing, sender=SENDER, to=RCPT).send(message()))
    assert ei.value.permanent and "no such user here" in str(ei.value)

    with pytest.raises(DeliveryError) as ei:
        run(SendmailChannel(path=str(tmp_path / "absent"), sender=SENDER, to=RCPT).send(message()))
    assert ei.value.permanent and "cannot run" in str(ei.value)


def test_sendmail_time_limit_kills_it(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    slow = script(tmp_path, "slow", f"echo $$ > {pidfile}; exec sleep 30\n")
    ch = SendmailChannel(path=slow, sender=SENDER, to=RCPT, timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(DeliveryError) as ei:
        run(ch.send(message()))
    assert time.monotonic() - t0 < 5
    assert not ei.value.permanent and "killed" in str(ei.value)
    if not pidfile.exists():  # killed before the shell got that far (a very busy machine)
        return
    pid = int(pidfile.read_text())
    assert (
        not os.path.exists(f"/proc/{pid}")
        or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    )


# --------------------------------------------------------------------------- Forward Email


def forwardemail(srv: ScriptedHttpServer, timeout: float = 2.0) -> ForwardEmailChannel:
    return ForwardEmailChannel(
        api_key="fe-test-key", base_url=srv.url + "/", sender=SENDER, to=RCPT, timeout=timeout
    )


def test_forwardemail_request_shape(http_server: ScriptedHttpServer) -> None:
    rendered = message()
    ch = forwardemail(http_server)
    try:
        answer = run(ch.send(rendered))
    finally:
        run(ch.close())
    assert answer.startswith("HTTP 200") and "test-ok" in answer
    (req,) = http_server.requests
    assert req.method == "POST" and req.path == "/v1/emails"
    assert req.headers["authorization"] == "Basic " + base64.b64encode(b"fe-test-key:").decode()
    assert req.headers["content-type"].startswith("application/json")
    body = req.json()
    assert body["from"] == SENDER
    assert body["to"] == ", ".join(RCPT)
    assert body["subject"] == rendered.subject and "\n" not in body["subject"]
    assert body["text"] == rendered.text and body["html"] == rendered.html
    assert body["headers"]["Auto-Submitted"] == "auto-generated"


def test_forwardemail_retry_semantics(http_server: ScriptedHttpServer) -> None:
    http_server.script(
        Reply(500, {"message": "Internal Server Error"}),
        Reply(429, {"message": "Too Many Requests"}, headers={"Retry-After": "7"}),
        Reply(200, {"id": "late"}, delay=5.0),  # longer than the channel's timeout
        Reply(200, {"id": "abc123", "status": "queued"}),
    )
    ch = forwardemail(http_server, timeout=1.5)

    async def go() -> list[Any]:
        outcomes: list[Any] = []
        try:
            for _ in range(4):
                try:
                    outcomes.append(await ch.send(message()))
                except DeliveryError as exc:
                    outcomes.append(exc)
        finally:
            await ch.close()
        return outcomes

    t0 = time.monotonic()
    e500, e429, etimeout, ok = run(go())
    assert time.monotonic() - t0 < 8  # the timeout cut the 5 s wait short
    assert isinstance(e500, DeliveryError) and not e500.permanent and "HTTP 500" in str(e500)
    assert e500.retry_after is None
    assert isinstance(e429, DeliveryError) and not e429.permanent and e429.retry_after == 7
    assert isinstance(etimeout, DeliveryError) and not etimeout.permanent
    assert "no answer within 1.5s" in str(etimeout)
    assert isinstance(ok, str) and "abc123" in ok
    assert len(http_server.requests) == 4


def test_http_timeout_on_a_new_connection_is_a_delivery_error(
    http_server: ScriptedHttpServer,
) -> None:
    """No answer in time on a connection just opened (a new channel each time: no kept-alive
    connection to reuse), called the way the queue calls it (asyncio.wait_for). Under anyio < 4
    (Debian 12: httpx 0.23.3 over anyio 3.6.2) opening the connection left a stray cancel
    request on the calling task, and the timeout came out as CancelledError — to the queue,
    as if it had been cancelled — until the request got a task of its own (post_json)."""
    http_server.script(*[Reply(200, {"id": "late"}, delay=3.0) for _ in range(3)])

    async def go() -> tuple[list[Any], int]:
        outcomes: list[Any] = []
        for _ in range(3):
            ch = forwardemail(http_server, timeout=0.3)
            try:
                outcomes.append(await asyncio.wait_for(ch.send(message()), 30))
            except DeliveryError as exc:
                outcomes.append(exc)
            finally:
                await ch.close()
        task = asyncio.current_task()
        assert task is not None
        return outcomes, task.cancelling()

    outcomes, cancelling = run(go())
    for exc in outcomes:
        assert isinstance(exc, DeliveryError) and not exc.permanent, exc
        assert "no answer within 0.3s" in str(exc)
    assert cancelling == 0  # the caller's task is left as it was
    assert len(http_server.requests) == 3


def test_forwardemail_client_error_is_permanent(http_server: ScriptedHttpServer) -> None:
    http_server.script(
        Reply(400, {"statusCode": 400, "error": "Bad Request", "message": "Invalid recipients"})
    )
    ch = forwardemail(http_server)
    with pytest.raises(DeliveryError) as ei:
        run(ch.send(message()))
    run(ch.close())
    err = ei.value
    assert err.permanent and err.retry_after is None
    assert "HTTP 400" in str(err) and "Invalid recipients" in str(err)
    assert "fe-test-key" not in str(err)


def test_forwardemail_503_with_http_date(http_server: ScriptedHttpServer) -> None:
    from email.utils import formatdate

    http_server.script(
        Reply(503, "down", headers={"Retry-After": formatdate(time.time() + 120, usegmt=True)})
    )
    ch = forwardemail(http_server)
    with pytest.raises(DeliveryError) as ei:
        run(ch.send(message()))
    run(ch.close())
    assert not ei.value.permanent
    assert ei.value.retry_after is not None and 100 < ei.value.retry_after <= 120


def test_parse_retry_after() -> None:
    from sshmonitord.notify.channels import parse_retry_after

    now = 1_714_564_800.0  # Wed, 01 May 2024 12:00:00 GMT
    assert parse_retry_after("7") == 7.0 and parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("Wed, 01 May 2024 12:01:30 GMT", now=now) == 90.0
    assert parse_retry_after("Wed, 01 May 2024 12:01:30 -0000", now=now) == 90.0
    assert parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", now=now) == 0.0  # past: now
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None


def test_http_connection_refused_is_transient() -> None:
    ch = ForwardEmailChannel(
        api_key="k", base_url=f"http://127.0.0.1:{free_port()}", sender=SENDER, to=RCPT, timeout=2
    )
    with pytest.raises(DeliveryError) as ei:
        run(ch.send(message()))
    run(ch.close())
    assert not ei.value.permanent


# --------------------------------------------------------------------------- webhook


def test_webhook_json(http_server: ScriptedHttpServer) -> None:
    rendered = message()
    ch = WebhookChannel(
        url=http_server.url + "/hooks/ssh?token=in-query",
        token="wh-token",
        headers={"X-Team": "ops"},
        hostname="web1",
    )
    answer = run(ch.send(rendered))
    run(ch.close())
    assert answer.startswith("HTTP 200")
    (req,) = http_server.requests
    assert req.method == "POST" and req.path == "/hooks/ssh?token=in-query"
    assert req.headers["authorization"] == "Bearer wh-token"
    assert req.headers["x-team"] == "ops"
    body = req.json()
    assert set(body) == {"id", "host", "subject", "text", "alert_ids", "alerts", "suppressed"}
    assert body["id"] == rendered.id == req.headers["idempotency-key"]
    assert body["alert_ids"] == [a.id for a in rendered.alerts]
    assert body["host"] == "web1" and body["suppressed"] == 0
    assert body["subject"] == rendered.subject and body["text"] == rendered.text
    assert [Alert.from_dict(a) for a in body["alerts"]] == rendered.alerts
    assert body["alerts"][0]["severity"] == "critical"


def test_webhook_slack(http_server: ScriptedHttpServer) -> None:
    rendered = render(alerts(), "web1", suppressed=2)
    ch = WebhookChannel(url=http_server.url + "/slack", format="slack", token="t0k")
    run(ch.send(rendered))
    run(ch.close())
    (req,) = http_server.requests
    assert req.headers["authorization"] == "Bearer t0k"
    body = req.json()
    assert list(body) == ["text"]
    text = body["text"]
    first_line = text.split("\n", 1)[0]
    assert first_line.startswith("[sshmonitor] CRITICAL web1: 2 alerts")
    assert "<" not in text and ">" not in text  # no <!channel>, no <http://...|forged link>
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&quot;" not in text and '"&gt;&lt;img src=x&gt;' in text
    assert "2 more alerts suppressed" in text


def test_webhook_errors(http_server: ScriptedHttpServer) -> None:
    http_server.script(
        Reply(404, "no such hook"), Reply(502, "bad gateway"), Reply(408, "request timeout")
    )
    ch = WebhookChannel(url=http_server.url + "/x")

    async def go() -> list[DeliveryError]:
        errs = []
        for _ in range(3):
            with pytest.raises(DeliveryError) as ei:
                await ch.send(message())
            errs.append(ei.value)
        await ch.close()
        return errs

    e404, e502, e408 = run(go())
    assert e404.permanent and "no such hook" in str(e404)
    assert not e502.permanent and not e408.permanent


# --------------------------------------------------------------------------- log channel


def test_log_channel_levels() -> None:
    out = io.StringIO()
    log.setup(level="info", fmt="json", stream=out)
    try:
        a_crit, a_high = alerts()
        a_info = Alert.from_dict({**a_high.to_dict(), "id": "i", "severity": "info", "ban": None})
        rendered = render([a_crit, a_high, a_info], "web1", suppressed=3)
        answer = run(LogChannel().send(rendered))
    finally:
        structlog.reset_defaults()
    assert answer == "logged 3 alerts"
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert len(lines) == 4  # every line is one JSON object: no injected line
    by_id = {ln.get("id"): ln for ln in lines}
    assert by_id[a_crit.id]["level"] == "error"
    assert by_id[a_high.id]["level"] == "warning"
    assert by_id[a_info.id]["level"] == "info"
    assert by_id[a_high.id]["ban_net"] == "198.51.100.9/32"
    assert by_id[a_crit.id]["stage"] == "alerts" and by_id[a_crit.id]["event"] == "alert"
    assert lines[-1]["event"] == "alerts suppressed" and lines[-1]["count"] == 3


def test_log_channel_console_is_one_line_per_alert() -> None:
    out = io.StringIO()
    log.setup(level="info", fmt="console", stream=out)
    try:
        run(LogChannel().send(render(alerts(), "web1")))
    finally:
        structlog.reset_defaults()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert all("X-Injected" not in ln.split("summary=")[0] for ln in lines)
    assert not any(ln.startswith(("Bcc:", "X-Injected", "Subject:")) for ln in lines)


# --------------------------------------------------------------------------- factory + filters


CONFIG = """
notify:
  channels:
    - type: forwardemail
      name: fe
      api_key: fe-key
      sender: a@example.org
      to: [ops@example.org, b@example.org]
      min_severity: high
    - type: smtp
      host: mail.example.org
      port: 465
      tls: implicit
      username: u
      password: p
      sender: a@example.org
      to: ops@example.org
      include_rules: [success_after_failures, root_login]
    - type: sendmail
      path: /usr/sbin/sendmail
      sender: a@example.org
      to: ops@example.org
      exclude_rules: [new_source]
    - type: webhook
      url: https://hooks.example.org/x
      format: slack
      token: tok
      headers: {X-A: b}
    - type: log
      min_severity: info
"""


def test_make_channel_from_config() -> None:
    cfg = config.parse_config(CONFIG)
    chans = [make_channel(c, "web1") for c in cfg.notify.channels]
    fe, smtp, sm, wh, lg = chans
    assert [c.type for c in chans] == ["forwardemail", "smtp", "sendmail", "webhook", "log"]
    assert [c.name for c in chans] == ["fe", "smtp", "sendmail", "webhook", "log"]
    assert (
        isinstance(fe, ForwardEmailChannel) and fe.url == "https://api.forwardemail.net/v1/emails"
    )
    assert fe.to == ("ops@example.org", "b@example.org")
    assert isinstance(smtp, SmtpChannel) and (smtp.port, smtp.tls, smtp.hostname) == (
        465,
        "implicit",
        "web1",
    )
    assert isinstance(sm, SendmailChannel) and sm.argv() == ["/usr/sbin/sendmail", "-t", "-oi"]
    assert isinstance(wh, WebhookChannel) and wh.format == "slack"
    assert isinstance(lg, LogChannel)
    for c in chans:  # secrets never in a repr
        for secret in ("fe-key", "tok", "'p'"):
            assert secret not in repr(c)

    crit, high = alerts()
    info = Alert.from_dict({**high.to_dict(), "severity": "info"})
    new_source = Alert.from_dict({**high.to_dict(), "rule": "new_source", "severity": "warning"})
    assert fe.accepts(crit) and fe.accepts(high) and not fe.accepts(info)
    assert smtp.accepts(crit) and not smtp.accepts(high)  # include_rules
    assert sm.accepts(high) and not sm.accepts(new_source) and not sm.accepts(info)
    assert wh.accepts(new_source) and not wh.accepts(info)  # default min_severity: warning
    assert lg.accepts(info)


def test_make_channel_passes_tls_knobs() -> None:
    fields = {f.name for f in dataclasses.fields(config.SmtpChannel)}
    if not {"ca_file", "tls_verify"} <= fields:
        pytest.skip("this config has no smtp ca_file/tls_verify keys")
    cfg = config.SmtpChannel(sender="a@example.org", to=("b@example.org",))
    cfg = dataclasses.replace(cfg, ca_file="/etc/ssl/private-ca.pem", tls_verify=False)  # type: ignore[call-arg]
    ch = make_channel(cfg, "web1")
    assert isinstance(ch, SmtpChannel)
    assert (ch.ca_file, ch.tls_verify) == ("/etc/ssl/private-ca.pem", False)


def test_bad_configured_header_values_are_refused() -> None:
    with pytest.raises(ValueError):
        SmtpChannel(sender="a@example.org\r\nBcc: x@y", to=["b@example.org"])
    with pytest.raises(ValueError):
        WebhookChannel(url="http://127.0.0.1/", token="t\r\nX-Evil: 1")
