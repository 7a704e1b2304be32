"""The running daemon, a real SMTP server (aiosmtpd) that is down at first, kill -9 in the
middle: every alert arrives once the server is up, and none arrives twice."""

from __future__ import annotations

import email
import itertools
import re
import signal
import socket
import time

from conftest import need

try:  # a real SMTP server: missing in CI is a failure, not a skip (conftest.need)
    import aiosmtpd.controller as aiosmtpd
except ImportError:  # pragma: no cover - the test dependency is installed by scripts/test
    aiosmtpd = None


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK queued"


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


LINES = [
    # Three brute-forcing addresses (bruteforce: alert + ban; bans are off in this test).
    *[
        f"Nov 24 12:00:{i:02d} web1 sshd[{100 + i}]: Failed password for root from "
        f"203.0.113.{1 + i // 5} port {4000 + i} ssh2"
        for i in range(15)
    ],
    # A root login: root_login alert.
    "Nov 24 12:01:00 web1 sshd[300]: Accepted publickey for root from 192.0.2.50 port 5000 "
    "ssh2: ED25519 SHA256:abcdefghijklmnop",
]


def test_outage_and_kill9_every_alert_once(tmp_path, daemon_factory):
    need(aiosmtpd is not None, "aiosmtpd is not installed (pip install aiosmtpd)")
    log = tmp_path / "auth.log"
    log.write_text("")
    port = free_port()
    conf = (
        f"sources: {{mode: file, files: [{log}], start_at: beginning, poll_interval: 200ms}}\n"
        "notify:\n  digest_window: 500ms\n  retry_initial: 300ms\n  retry_max: 1s\n"
        "  channels:\n"
        f"    - {{type: smtp, name: mail, host: 127.0.0.1, port: {port}, tls: none, "
        "sender: sshmonitor@example.org, to: [admin@example.org], min_severity: info}\n"
        "detection: {rules: {new_source: {enabled: false}, new_key: {enabled: false}}}\n"
    )
    d = daemon_factory(conf)
    d.wait_log("sshmonitord started")
    log.write_text("\n".join(LINES) + "\n")
    d.wait_log("alert delivery failed; will retry", timeout=15)  # the server is down
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(timeout=10)

    inbox = Inbox()
    ctl = aiosmtpd.Controller(inbox, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        d2 = daemon_factory(conf)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _alert_count(inbox) < 4:
            time.sleep(0.2)
        time.sleep(1.5)  # anything more would be a duplicate
        subjects = [str(m["Subject"]) for m in inbox.messages]
        ids = _alert_subjects(inbox)
        # root logged in with a key from an address that never failed: a root_login alert,
        # not a compromise (failures against "root" elsewhere cannot have produced a key).
        assert not any("success_after_failures" in t for t in _texts(inbox))
        assert sorted(ids) == sorted(set(ids)), f"duplicates: {ids}"
        assert set(ids) == {"203.0.113.1/32", "203.0.113.2/32", "203.0.113.3/32", "user root"}, (
            ids,
            subjects,
            d2.log_text(),
        )
        for m in inbox.messages:
            assert m["Date"] and m["Auto-Submitted"] == "auto-generated"
            # The stable id (tests/test_alert_ids.py): opaque hex, whatever the log said.
            assert re.fullmatch(r"<[0-9a-f]{32}@[A-Za-z0-9.-]+>", m["Message-ID"])
    finally:
        ctl.stop()


def _texts(inbox: Inbox) -> list[str]:
    out = []
    for m in inbox.messages:
        for part in m.walk():
            if part.get_content_type() == "text/plain":
                out.append(part.get_payload(decode=True).decode().replace("\r\n", "\n"))
    return out


def _alert_subjects(inbox: Inbox) -> list[str]:
    """The subject (address or user) of every alert in every message's text part."""
    found = []
    for text in _texts(inbox):
        found += re.findall(r"^\[\d+/\d+\] [A-Z]+ · (?:bruteforce|root_login) · (.+)$", text, re.M)
    return found


def _alert_count(inbox: Inbox) -> int:
    return len(_alert_subjects(inbox))


def test_forwardemail_retry_schedule_through_the_daemon(tmp_path, daemon_factory):
    import mailservers
    from mailservers import Reply, ScriptedHttpServer

    srv = ScriptedHttpServer(
        Reply(500, {"message": "Internal Server Error"}),
        Reply(429, {"message": "Too Many Requests"}, headers={"Retry-After": "2"}),
        Reply(200, {"id": "late"}, delay=3.0),  # longer than the channel's 1 s timeout
        Reply(200, {"id": "abc123", "status": "queued"}),
    )
    stamps: list[float] = []
    record = srv._record

    def timed(req):
        stamps.append(time.monotonic())
        return record(req)

    srv._record = timed  # type: ignore[method-assign]
    assert mailservers  # fixtures module present
    log = tmp_path / "auth.log"
    log.write_text("")
    key = tmp_path / "fe.key"
    key.write_text("fe-test-key\n")
    key.chmod(0o600)
    try:
        d = daemon_factory(
            f"sources: {{mode: file, files: [{log}], start_at: beginning, "
            "poll_interval: 200ms}\n"
            "notify:\n  digest_window: 200ms\n  retry_initial: 500ms\n  retry_max: 5s\n"
            "  channels:\n"
            f"    - {{type: forwardemail, api_key_file: {key}, base_url: '{srv.url}', "
            "sender: s@example.org, to: [a@example.org], timeout: 1s}\n"
        )
        d.wait_log("sshmonitord started")
        log.write_text(
            "Nov 24 12:01:00 web1 sshd[300]: Accepted password for root from "
            "192.0.2.50 port 5000 ssh2\n"
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not d.log_text().count("alert message delivered"):
            time.sleep(0.2)
        time.sleep(1.0)
        assert d.log_text().count("alert message delivered") == 1, d.log_text()
        assert len(srv.requests) == 4  # 500, 429, timeout, 200: delivered exactly once
        bodies = [r.json() for r in srv.requests]
        assert all("root logged in" in b["subject"] for b in bodies)
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        # retry 1 after ~0.5 s; retry 2 not before Retry-After (2 s); retry 3 ~2 s after the
        # timed-out try (1 s timeout + 0.5 s x 2^2 = 2 s, ±20 %).
        assert 0.35 < gaps[0] < 1.5, gaps
        assert gaps[1] >= 1.9, gaps
        assert 2.2 < gaps[2] < 4.5, gaps
    finally:
        srv.stop()
