"""The proving ground, small (issue 8, "In CI"): a real attack on a real sshd, end to end.

Everything runs inside two network namespaces the test creates and deletes (``netns_pair``):

* ``srv``: a real OpenSSH (``RealSshd``, UsePAM no, auth.log through a private rsyslog), the
  real daemon (nftables backend in its own table ``smpg``, an SMTP channel) and a real SMTP
  server (aiosmtpd). The SMTP server runs *inside* srv, in its own process: the daemon's
  127.0.0.1 is srv's loopback, not the test process's. It writes every message it receives
  to a file in the test's temp dir, which the test reads.
* ``atk``: the clients (real ``ssh`` via ``sshpass``), one source address per actor:
  three brute-forcing attackers, one attacker who fails 4 times and then logs in with the
  right password (a compromise), and a legitimate user who logs in with a key throughout.

Asserted: every brute-forcing address ends up in the nft set; the compromise raises one
critical ``success_after_failures`` alert, which reaches the SMTP server exactly once; the
legitimate user is never banned and never alerted on (new_source/new_key are disabled so
that holds exactly); the daemon exits 0 on SIGTERM. The machine's own firewall is never
touched (the session fixture ``root_firewall_untouched`` checks that too).
"""

from __future__ import annotations

import email
import re
import signal
import subprocess
import sys
import threading
import time
from email.message import Message
from pathlib import Path

from conftest import need
from netns import NetnsPair, wait_line, wait_until
from realsshd import RealSshd

pytest_plugins = ["netns"]  # the netns_pair fixture

try:  # the SMTP server the daemon mails to (run inside srv): a real part, see need()
    import aiosmtpd.controller as _aiosmtpd
except ImportError:  # pragma: no cover - installed by scripts/test
    _aiosmtpd = None

TABLE = "smpg"
SMTP_PORT = 2525  # inside srv only: the namespace is the test's own, nothing else listens

# A tiny SMTP server for inside srv: each message is written to OUTDIR/msg-N.eml (atomically:
# a temp name, then rename), then READY is printed once it listens.
SMTP_SERVER = r"""
import os, sys, time, itertools
from aiosmtpd.controller import Controller
out, port = sys.argv[1], int(sys.argv[2])
seq = itertools.count(1)
class Handler:
    async def handle_DATA(self, server, session, envelope):
        n = next(seq)
        tmp = os.path.join(out, f".msg-{n}.tmp")
        with open(tmp, "wb") as f:
            f.write(envelope.content)
        os.rename(tmp, os.path.join(out, f"msg-{n}.eml"))
        return "250 OK queued"
ctl = Controller(Handler(), hostname="127.0.0.1", port=port)
ctl.start()
print("READY", flush=True)
try:
    while True:
        time.sleep(3600)
finally:
    ctl.stop()
"""


def members(pair: NetnsPair) -> set[str]:
    """The addresses in the daemon's nft sets inside srv right now."""
    return pair.nft_members(TABLE)


def read_inbox(box: Path) -> list[Message]:
    return [email.message_from_bytes(p.read_bytes()) for p in sorted(box.glob("msg-*.eml"))]


def texts(messages: list[Message]) -> list[str]:
    out = []
    for m in messages:
        for part in m.walk():
            if part.get_content_type() == "text/plain":
                out.append(part.get_payload(decode=True).decode().replace("\r\n", "\n"))
    return out


ALERT_LINE = re.compile(r"^(?:\[\d+/\d+\] )?([A-Z]+) · (\S+) · (.+)$", re.M)


def alerts(messages: list[Message]) -> list[tuple[str, str, str]]:
    """(severity, rule, subject) of every alert in every message's text part."""
    return [m.groups() for t in texts(messages) for m in ALERT_LINE.finditer(t)]


def try_password(sshd: RealSshd, pair: NetnsPair, src: str, password: str) -> int | None:
    """One password attempt from ``src``; None if it hung (its own ban cut it: expected)."""
    try:
        res = sshd.ssh_password(sshd.user, password, timeout=4, client_ns=pair.atk, source=src)
    except AssertionError as e:
        if "timed out" not in str(e):
            raise
        return None
    return res.returncode


def test_burst_compromise_and_legitimate_user(netns_pair, daemon_factory, tmp_path):
    pair: NetnsPair = netns_pair
    need(subprocess.run(["which", "nft"], capture_output=True).returncode == 0, "nft missing")
    need(_aiosmtpd is not None, "aiosmtpd is not installed (pip install aiosmtpd)")
    n = pair.n
    # atk has 10.N.0.2 and .3; add .4-.6: three brute-forcers, a compromiser, a legit user.
    for host in (4, 5, 6):
        pair.run_in(
            pair.atk, ["ip", "addr", "add", f"10.{n}.0.{host}/24", "dev", pair.veth_atk],
            check=True,
        )  # fmt: skip
    burst = [f"10.{n}.0.2", f"10.{n}.0.4", f"10.{n}.0.5"]
    compromiser = f"10.{n}.0.6"
    legit = f"10.{n}.0.3"

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    smtp = pair.popen_in(pair.srv, [sys.executable, "-c", SMTP_SERVER, str(inbox), str(SMTP_PORT)])
    wait_line(smtp, "READY", timeout=15)

    with RealSshd(netns=pair.srv, listen=pair.srv4, use_pam=False) as sshd:
        conf = (
            f"sources: {{mode: file, files: [{sshd.auth_log}], poll_interval: 200ms}}\n"
            f"response: {{backend: nftables, nft_table: {TABLE}, bantime: 10m}}\n"
            # Every address here is in 10.N.0.0/24: judge "a network never used" per address.
            "detection: {rules: {new_source: {enabled: false, ipv4_prefix: 32},"
            " new_key: {enabled: false}}}\n"
            "notify:\n  digest_window: 1s\n  retry_initial: 300ms\n  retry_max: 2s\n"
            "  channels:\n"
            f"    - {{type: smtp, name: mail, host: 127.0.0.1, port: {SMTP_PORT}, tls: none, "
            "sender: sshmonitor@example.org, to: [admin@example.org], min_severity: info}\n"
        )
        d = daemon_factory(conf, wrap=pair.wrapper(pair.srv))
        d.wait_log("sshmonitord started", timeout=20)

        # The legitimate user logs in with the key before, during and after the attack.
        legit_logins = 0
        stop_legit = threading.Event()
        legit_errors: list[str] = []

        def legit_user() -> None:
            nonlocal legit_logins
            while not stop_legit.is_set() and legit_logins < 20:
                try:
                    sshd.login_key("true", client_ns=pair.atk, source=legit)
                    legit_logins += 1
                except AssertionError as e:
                    legit_errors.append(str(e)[:500])
                    return
                stop_legit.wait(0.5)

        sshd.login_key("true", client_ns=pair.atk, source=legit)
        legit_logins += 1
        legit_thread = threading.Thread(target=legit_user, daemon=True)
        legit_thread.start()

        # Burst: each attacker tries wrong passwords until its address is in the set.
        tries: dict[str, int] = {}

        def attacker(src: str) -> None:
            for i in range(1, 11):
                try_password(sshd, pair, src, "wrong")
                if wait_until(lambda: src in members(pair), 0.3, step=0.1):
                    tries[src] = i
                    return

        threads = [threading.Thread(target=attacker, args=(a,), daemon=True) for a in burst]
        for t in threads:
            t.start()

        # Compromise: four failures, then the right password.
        for _ in range(4):
            assert try_password(sshd, pair, compromiser, "wrong") not in (0, None)
        sshd.wait_for_count(r"Failed password for sshmtest from " + re.escape(compromiser), 4)
        assert try_password(sshd, pair, compromiser, sshd.password) == 0, sshd.auth_text()

        for t in threads:
            t.join(timeout=60)
        assert all(not t.is_alive() for t in threads)
        assert wait_until(lambda: set(burst) <= members(pair), 5), (tries, d.log_text())
        assert sorted(tries) == sorted(burst), tries

        # The critical alert reaches the SMTP server; then wait past the digest window and a
        # retry or two: anything more would be a duplicate.
        def crit() -> list[tuple[str, str, str]]:
            return [a for a in alerts(read_inbox(inbox)) if a[1] == "success_after_failures"]

        assert wait_until(lambda: any(compromiser in a[2] for a in crit()), 20), (
            texts(read_inbox(inbox)),
            d.log_text(),
        )
        sshd.login_key("true", client_ns=pair.atk, source=legit)  # once more, after it all
        stop_legit.set()
        legit_thread.join(timeout=30)
        assert not legit_errors, legit_errors
        time.sleep(3)

        every = alerts(read_inbox(inbox))
        subjects = [a[2] for a in every]
        assert len(subjects) == len(set(subjects)), f"duplicate alerts: {every}"
        # The compromise: one critical alert on the compromiser's address, delivered once.
        mine = [a for a in crit() if compromiser in a[2]]
        assert mine == [("CRITICAL", "success_after_failures", f"{compromiser}/32")], every
        # Only what the attack explains: bruteforce on the three, the compromise.
        assert {a[1] for a in every} <= {"bruteforce", "success_after_failures"}, every
        assert {a[2] for a in every if a[1] == "bruteforce"} == {f"{a}/32" for a in burst}, every

        # The legitimate user: never banned.
        assert legit_logins >= 3
        assert legit not in members(pair)
        bans = d.cli("bans", "--socket", str(d.socket_path))
        assert bans.returncode == 0, bans.stderr
        for a in burst:
            assert a in bans.stdout, bans.stdout
        assert legit not in bans.stdout, bans.stdout

        d.signal(signal.SIGTERM)
        assert d.proc.wait(timeout=15) == 0, d.log_text()

        # ... and never alerted on: no alert names it, no message mentions it. (A key login
        # of a user whom others failed to log in as must not be a "possible compromise".)
        print(f"attempts before ban: {tries}; legit logins: {legit_logins}; alerts: {every}")
        about_legit = [t for t in texts(read_inbox(inbox)) if legit in t]
        assert not about_legit, "the legitimate user was alerted on:\n" + "\n=====\n".join(
            about_legit
        )
