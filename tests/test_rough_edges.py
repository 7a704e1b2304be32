"""Issue #16: the rough edges a new user met, each against the real components it involves
(a daemon subprocess, a real SMTP server, real files, a pseudo-terminal), with unit tests on
top. One section per item of the issue."""

from __future__ import annotations

import asyncio
import email
import email.policy
import gzip
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mailservers
import pytest
from conftest import NotifySocket, need
from mailservers import SmtpServer

from sshmonitord import config
from sshmonitord.events import Action, Event, Finding, Kind, Severity
from sshmonitord.notify import Alert, Message, render
from sshmonitord.notify.queue import AlertQueue
from sshmonitord.notify.render import ban_text, next_steps
from sshmonitord.notify.sendmail import SendmailChannel
from sshmonitord.notify.smtp import SmtpChannel, build_email
from sshmonitord.parse import Parser

assert mailservers  # its fixtures (smtp_servers, msmtp_wrapper) are used below
smtp_servers = mailservers.smtp_servers
msmtp_wrapper = mailservers.msmtp_wrapper

ID_RE = r"[0-9a-f]{32}"


def stamp(offset: float = 0.0) -> str:
    """A classic syslog time stamp for now (+offset), as rsyslog writes it ("Dec  6 …")."""
    return time.strftime("%b %e %H:%M:%S", time.localtime(time.time() + offset))


def failures(ip: str, n: int, pid: int = 1000, user: str = "root") -> str:
    return "".join(
        f"{stamp()} web1 sshd[{pid + i}]: Failed password for {user} from {ip} port "
        f"{40000 + i} ssh2\n"
        for i in range(n)
    )


def wait_for(pred: Callable[[], bool], timeout: float = 15.0, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def cli(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from sshmonitord.cli import main; sys.exit(main())",
         *args],
        capture_output=True, text=True, input=stdin, timeout=timeout,
    )  # fmt: skip


def lines_with(text: str, needle: str) -> list[str]:
    return [ln for ln in text.splitlines() if needle in ln]


# =========================================================================== 1. alert lines


def test_daemon_logs_one_alert_line_per_alert(tmp_path: Path, daemon_factory: Any) -> None:
    """docs/alerts.md promises `alert stage=alerts id=… rule=… …` in the journal for every
    alert; with no channel configured that is the only place alerts go."""
    log = tmp_path / "auth.log"
    log.write_text("")
    d = daemon_factory(f"sources: {{mode: file, files: [{log}], poll_interval: 100ms}}\n")
    d.wait_log("sshmonitord started")
    with log.open("a") as fh:
        fh.write(failures("198.51.100.7", 6, pid=1000) + failures("198.51.100.8", 6, pid=2000))
    assert wait_for(lambda: len(lines_with(d.log_text(), " alert stage=alerts ")) >= 2), (
        d.log_text()
    )
    time.sleep(0.5)  # a second line for the same alert would show by now
    alerts = lines_with(d.log_text(), " alert stage=alerts ")
    assert len(alerts) == 2, alerts
    for ip in ("198.51.100.7", "198.51.100.8"):
        (line,) = [a for a in alerts if f"subject={ip}/32" in a]
        # The documented fields, in the documented form (level warning for high).
        assert re.search(rf"WARNING +alert stage=alerts id={ID_RE} rule=bruteforce "
                         rf"severity=high subject={ip}/32 ", line), line  # fmt: skip
        assert f"ip={ip}" in line and "user=root" in line and "count=1" in line
        assert f"ban_net={ip}/32" in line and "ban_until=" in line and "ban_offence=1" in line
        assert 'summary="' in line and "evidence=" in line


def test_alert_lines_follow_a_listed_log_channels_filters(tmp_path: Path) -> None:
    """Listing `type: log` only sets the journal's filters (docs/configuration.md)."""
    from sshmonitord import log as slog
    from sshmonitord.notify.build import journal_channel

    cfg = config.parse_config(
        "notify:\n  channels:\n    - {type: log, min_severity: critical}\n"
    )
    journal = journal_channel(cfg.notify.channels, "web1")
    assert journal.min_severity == "critical"
    assert journal_channel((), "web1").min_severity == "info"  # none listed: every alert

    out = tmp_path / "log.txt"

    async def go() -> None:
        q = AlertQueue(_NoStore(), cfg.notify, [], "web1", journal=journal)
        await q.submit([_finding("high"), _finding("critical")])

    with out.open("w") as fh:
        slog.setup("info", "console", stream=fh)
        try:
            asyncio.run(go())
        finally:
            slog.setup("info", "console")
    got = lines_with(out.read_text(), " alert stage=alerts ")
    assert len(got) == 1 and "severity=critical" in got[0], got


class _NoStore:
    """AlertQueue.submit never touches the store (the intake task does)."""


def _event(ip: str = "192.0.2.9", user: str = "root") -> Event:
    from datetime import UTC, datetime
    from ipaddress import ip_address

    return Event(
        datetime.now(UTC), "web1", "sshd", 1, Kind.AUTH_FAILURE, user, ip_address(ip), 22,
        "password", None, 1, "1", {}, f"web1 sshd[1]: Failed password for {user} from {ip}",
    )  # fmt: skip


def _finding(sev: str, ip: str = "192.0.2.9", action: Action = Action.BOTH) -> Finding:
    return Finding(
        "bruteforce", Severity(sev), f"{ip}/32", (_event(ip),), action,
        f"5 or more failures from {ip}", ban_net=f"{ip}/32",
    )  # fmt: skip


# =========================================================================== 2. sources: auto


def _auto(tmp_path: Path, files: list[Path]) -> str:
    # journalctl that cannot run: auto mode takes the files even where journald runs (CI).
    return (
        f"sources: {{mode: auto, files: [{', '.join(map(str, files))}], poll_interval: 100ms, "
        "journal: {journalctl: /nonexistent/journalctl}}\n"
    )


def test_auto_mode_follows_a_log_file_created_after_start(
    tmp_path: Path, daemon_factory: Any
) -> None:
    """One configured file exists (secure), the other (auth.log) appears later: both are
    followed, and lines written to the late one are read from its first line."""
    secure, auth = tmp_path / "secure", tmp_path / "auth.log"
    secure.write_text("")
    d = daemon_factory(_auto(tmp_path, [auth, secure]))
    d.wait_log("sshmonitord started")
    st = json.loads(d.cli("status", "--json", "--socket", str(d.socket_path)).stdout)
    assert not st["warnings"], st["warnings"]  # secure is open: lines can arrive
    auth.write_text(failures("198.51.100.20", 6))  # created after start
    d.wait_log("log file appeared", timeout=10)
    d.wait_log("rule=bruteforce", timeout=10)
    st = json.loads(d.cli("status", "--json", "--socket", str(d.socket_path)).stdout)
    pipeline = next(s for s in st["stages"] if s["name"] == "pipeline")
    assert pipeline["stats"]["events"] == 6
    tailer = next(s for s in st["stages"] if s["name"] == "tailer")
    assert tailer["summary"] == f"following {auth}; following {secure}"
    assert tailer["waiting_for"] == [] and tailer["open_files"] == 2


def test_status_says_when_nothing_can_arrive(
    tmp_path: Path, daemon_factory: Any, notify_socket: NotifySocket
) -> None:
    """No journal and none of the files: `sshmonitor status`, the systemd status line and the
    log say so; once a file appears, the warning goes."""
    auth, secure = tmp_path / "auth.log", tmp_path / "secure"
    d = daemon_factory(_auto(tmp_path, [auth, secure]), notify=notify_socket)
    ready = notify_socket.wait_for("READY", "1", timeout=15)
    assert ready["STATUS"].startswith("NOTHING CAN ARRIVE: waiting for"), ready
    text = d.wait_log("nothing to read")
    assert "no log source can deliver anything" in text
    r = d.cli("status", "--socket", str(d.socket_path))
    assert r.returncode == 0, r.stderr
    (warning,) = lines_with(r.stdout, "warning: no log source can deliver anything")
    assert str(auth) in warning and str(secure) in warning
    assert "as soon as it appears" in warning
    assert "NOTHING CAN ARRIVE" in r.stdout
    auth.write_text("")
    assert wait_for(
        lambda: "no log source" not in d.cli("status", "--socket", str(d.socket_path)).stdout,
        timeout=10,
    )


def test_choose_auto_keeps_missing_files() -> None:
    from sshmonitord.sources import choose

    cfg = config.parse_config(
        "sources: {mode: auto, files: [/nonexistent/a.log, /etc/hostname], "
        "journal: {journalctl: /nonexistent/journalctl}}"
    )
    assert choose(cfg, "/nonexistent/socket") == ("file", ["/nonexistent/a.log", "/etc/hostname"])


def test_journal_mode_without_journald_is_said_too(tmp_path: Path) -> None:
    """In journal mode, nothing new arrives where no journald writes the system journal."""
    from sshmonitord.daemon import Daemon
    from sshmonitord.sources.journal import JournalSource, journald_running

    async def emit(_batch: list[Any]) -> None:
        return None

    system = JournalSource(emit).describe()
    assert system["can_deliver"] is journald_running()
    assert JournalSource(emit, files=["/x.journal"]).describe()["can_deliver"] is True
    d = Daemon(config.parse_config("sources: {mode: journal}"), state_dir=str(tmp_path))
    said = d._silent_sources([{"name": "journal", "mode": "journal", "can_deliver": False}])
    assert said is not None and "journald is not running here" in said
    assert d._silent_sources([{"name": "journal", "mode": "journal", "can_deliver": True}]) is None
    # auditd's log carries no logins: it alone does not count as a source.
    waiting = {"name": "tailer", "mode": "file", "can_deliver": False, "waiting_for": ["/a"]}
    audit = {"name": "auditd", "mode": "file", "can_deliver": True}
    said = d._silent_sources([waiting, audit])
    assert said is not None and "none of /a exists" in said


# =========================================================================== 3. replay progress


def _big_log(path: Path, n: int) -> None:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(
                f"Dec  6 12:{i // 60 % 60:02d}:{i % 60:02d} web1 sshd[{1000 + i}]: Failed password "
                f"for root from 198.51.{i % 250}.{i % 200} port {i % 60000} ssh2\n"
            )


def test_replay_draws_a_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    plain, gz = tmp_path / "auth.log", tmp_path / "auth.log.2.gz"
    _big_log(plain, 30_000)
    with plain.open("rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from sshmonitord.cli import main; sys.exit(main())",
         "replay", "--timezone", "UTC", str(gz), str(plain)],
        stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(slave)
    seen = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    text = seen.decode(errors="replace")
    bars = re.findall(r"\r  \[[= >]+\] +(\d+)%  [\d.,]+ [kMG]?B of ([\d.,]+ [kMG]?B)  "
                      r"[\d,]+ lines, [\d,k]+ lines/s  ETA (?:\d+:)?\d+:\d\d", text)  # fmt: skip
    assert bars, text[:500]
    total = (gz.stat().st_size + plain.stat().st_size) / 1e6
    assert {b[1] for b in bars} == {f"{total:,.1f} MB"}
    percents = [int(p) for p, _ in bars]
    assert percents == sorted(percents) and percents[-1] <= 100
    assert text.endswith("\r\x1b[K"), repr(text[-80:])  # the bar is wiped at the end
    assert b"Replayed 2 file(s): 60,000 lines" in out


def test_replay_is_quiet_on_a_pipe(tmp_path: Path) -> None:
    plain = tmp_path / "auth.log"
    _big_log(plain, 20_000)
    r = cli("replay", "--timezone", "UTC", str(plain))
    assert r.returncode == 0
    assert r.stderr == ""  # no bar, no carriage return: stderr is not a terminal
    assert "Replayed 1 file(s): 20,000 lines" in r.stdout


def test_progress_counts_compressed_bytes_of_a_gz_file(tmp_path: Path) -> None:
    from sshmonitord.replay import open_counted

    plain, gz = tmp_path / "a.log", tmp_path / "a.log.gz"
    _big_log(plain, 5000)
    with plain.open("rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    log = open_counted(str(gz))
    try:
        assert log.size == gz.stat().st_size and log.consumed is not None
        first = next(iter(log.stream))
        assert first.startswith("Dec  6 12:00:00")
        assert 0 < log.consumed() <= log.size  # compressed bytes, not text characters
        for _ in log.stream:
            pass
        assert log.consumed() == log.size
    finally:
        log.close()


def test_progress_line_formats() -> None:
    from sshmonitord.replay import progress_line

    line = progress_line(1_234_567, 10.0, 5_000_000, 20_000_000, 120)
    assert line.startswith("  [") and " 25%  5.0 MB of 20.0 MB" in line and "ETA 0:30" in line
    assert len(line) <= 120
    assert progress_line(5000, 1.0, None, None) == "  5,000 lines, 5,000 lines/s ..."
    assert "ETA --:--" in progress_line(1, 1.0, 0, 100)
    assert "ETA 1:00:00" in progress_line(10, 3600.0, 50, 100)


# =========================================================================== 4. replay of journalctl


NO_HOST = (
    "Dec  6 12:00:0{i} sshd[12{i}]: Failed password for root from 198.51.100.9 port 4{i} ssh2"
)


def test_replay_stdin_lines_without_a_host_field() -> None:
    text = "\n".join(NO_HOST.format(i=i) for i in range(6)) + "\n"
    r = cli("replay", "--timezone", "UTC", "--format", "json", "--summary", "-", stdin=text)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["events"] == 6 and s["malformed"] == 0
    assert s["kinds"] == {"auth_failure": 6}
    assert s["findings_by_rule"] == {"bruteforce": 1}


def test_journalctl_notes_are_not_malformed_lines() -> None:
    """journalctl's own lines: "-- No entries --" explained 0 events and 1 malformed line."""
    r = cli("replay", "--timezone", "UTC", "-", stdin="-- No entries --\n")
    assert r.returncode == 0
    assert "malformed lines: 0" in r.stdout
    assert "journalctl said: -- No entries --" in r.stdout
    p = Parser()
    for note in ("-- No entries --", "-- Boot 0123456789abcdef0123456789abcdef --",
                 "-- Reboot --", "-- Logs begin at Mon 2026-11-30 10:00:00 UTC, end at "
                 "Sun 2026-12-06 12:00:00 UTC. --"):  # fmt: skip
        assert p.parse_text(note) is None
    assert p.stats.malformed == 0 and p.stats.journal_notes == 4
    # A log line is never taken for a note, nor a note-like line for a record.
    assert p.parse_text(NO_HOST.format(i=1)) is not None
    assert p.parse_text("-- not a note") is None and p.stats.malformed == 1


def test_replay_help_example_works_on_a_real_journal(tmp_path: Path) -> None:
    """The help's `journalctl -u ssh -u sshd -o short --no-hostname | sshmonitor replay -`,
    over a real journal file (written by systemd-journal-remote), finds the events."""
    remote = "/lib/systemd/systemd-journal-remote"
    need(Path(remote).exists(), "systemd-journal-remote missing")
    need(shutil.which("journalctl") is not None, "journalctl missing")
    help_text = cli("replay", "--help").stdout
    (example,) = [ln for ln in help_text.splitlines() if "| sshmonitor replay -" in ln]
    assert "needs a host column" not in help_text
    argv = example.split("|")[0].split()
    assert argv[:1] == ["journalctl"] and "--no-hostname" in argv and "short" in argv
    journal = tmp_path / "test.journal"
    records = []
    for n in range(6):
        records.append(
            f"__REALTIME_TIMESTAMP={1_765_000_000_000_000 + n * 1_000_000}\n"
            f"__MONOTONIC_TIMESTAMP={n * 1000}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n"
            "_TRANSPORT=syslog\nPRIORITY=6\nSYSLOG_IDENTIFIER=sshd\n_COMM=sshd\n"
            f"SYSLOG_PID={300 + n}\n_PID={300 + n}\n_UID=0\n_GID=0\n_EXE=/usr/sbin/sshd\n"
            "_HOSTNAME=jhost\n_SYSTEMD_UNIT=ssh.service\n"
            f"MESSAGE=Failed password for root from 198.51.100.9 port {4000 + n} ssh2\n"
        )
    w = subprocess.run([remote, "-o", str(journal), "-"], input=("\n".join(records) + "\n").encode(),
                       capture_output=True, timeout=30)  # fmt: skip
    assert w.returncode == 0, w.stderr
    shown = subprocess.run([*argv, "--file", str(journal)], capture_output=True, text=True,
                           timeout=30, env={**os.environ, "TZ": "UTC"})  # fmt: skip
    assert "Failed password" in shown.stdout, shown
    r = cli("replay", "--timezone", "UTC", "--format", "json", "--summary", "-",
            stdin=shown.stdout)  # fmt: skip
    s = json.loads(r.stdout)
    assert s["events"] == 6 and s["malformed"] == 0, s
    # A unit with no records: journalctl says so, and replay passes it on.
    other = subprocess.run(
        ["journalctl", "-u", "nothing-here", "-o", "short", "--no-hostname", "--file",
         str(journal)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    r = cli("replay", "--timezone", "UTC", "-", stdin=other.stdout)
    assert "malformed lines: 0" in r.stdout
    if "-- No entries --" in other.stdout:  # journalctl 252 says it; newer ones may not
        assert "journalctl said: -- No entries --" in r.stdout


# =========================================================================== 5. events


def test_events_help_and_output_agree(tmp_path: Path, daemon_factory: Any) -> None:
    top = cli("--help").stdout
    (line,) = [ln for ln in top.splitlines() if re.match(r"\s+events\s", ln)]
    assert "table" in line and "--json" in line, line
    assert "table for\npeople by default" in cli("events", "--help").stdout
    log = tmp_path / "auth.log"
    log.write_text("")
    d = daemon_factory(f"sources: {{mode: file, files: [{log}], poll_interval: 100ms}}\n")
    d.wait_log("sshmonitord started")
    log.write_text(failures("198.51.100.30", 2))
    state = str(d.state_dir)
    assert wait_for(lambda: cli("events", "--state-dir", state).stdout.count("198.51.100.30") == 2)
    table = cli("events", "--state-dir", state).stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(table.splitlines()[0])
    rows = [json.loads(ln) for ln in cli("events", "--state-dir", state, "--json").stdout.split("\n")
            if ln]  # fmt: skip
    assert [r["ip"] for r in rows] == ["198.51.100.30"] * 2 and rows[0]["kind"] == "auth_failure"


# =========================================================================== 6. alert_allowlisted


def _mail_daemon(
    tmp_path: Path, daemon_factory: Any, srv: SmtpServer, extra: str = ""
) -> tuple[Any, Path]:
    log = tmp_path / "auth.log"
    log.write_text("")
    d = daemon_factory(
        f"sources: {{mode: file, files: [{log}], poll_interval: 100ms}}\n"
        "allowlist: [192.0.2.0/24]\n"
        f"{extra}"
        "notify:\n  digest_window: 200ms\n  channels:\n"
        f"    - {{type: smtp, host: 127.0.0.1, port: {srv.port}, tls: none, "
        "sender: s@example.org, to: [a@example.org], min_severity: info}\n"
    )
    d.wait_log("sshmonitord started")
    return d, log


def _texts(srv: SmtpServer) -> str:
    out = []
    for r in srv.received:
        for part in r.msg.walk():
            if part.get_content_type() == "text/plain":
                out.append(part.get_content())
    return "\n".join(out)


def test_alert_about_an_allowlisted_address_says_so(
    tmp_path: Path, daemon_factory: Any, smtp_servers: Any
) -> None:
    srv = smtp_servers()
    d, log = _mail_daemon(tmp_path, daemon_factory, srv)
    log.write_text(failures("192.0.2.9", 6))
    srv.wait_for(1, timeout=20)
    text = _texts(srv)
    assert "bruteforce · 192.0.2.9/32" in text
    assert "Done:          not banned: 192.0.2.9/32 is allowlisted (192.0.2.0/24, in the " \
        "allowlist)" in text, text  # fmt: skip
    assert "sshmonitor ban 192.0.2.9" not in text  # it would be refused
    assert "remove it from `allowlist`" in text
    (line,) = lines_with(d.log_text(), " alert stage=alerts ")
    assert 'allowlisted="192.0.2.9/32 is allowlisted' in line and "ban_net" not in line


def test_alert_allowlisted_false_sends_no_alert_for_it(
    tmp_path: Path, daemon_factory: Any, smtp_servers: Any
) -> None:
    srv = smtp_servers()
    d, log = _mail_daemon(
        tmp_path, daemon_factory, srv, "response: {backend: none, alert_allowlisted: false}\n"
    )
    log.write_text(failures("192.0.2.9", 6, pid=1000))
    d.wait_log("not banning", timeout=10)  # detected, and kept from a ban by the allowlist
    with log.open("a") as fh:  # then an address that is banned, to know the mail went out
        fh.write(failures("198.51.100.40", 6, pid=2000))
    srv.wait_for(1, timeout=20)
    time.sleep(0.5)
    text = _texts(srv)
    assert "198.51.100.40/32" in text and "192.0.2.9" not in text, text
    assert len(lines_with(d.log_text(), " finding stage=daemon ")) == 2  # both still logged
    alerts = lines_with(d.log_text(), " alert stage=alerts ")
    assert len(alerts) == 1 and "198.51.100.40" in alerts[0]


def test_allowlisted_ban_text_and_steps() -> None:
    a = Alert.from_finding(
        _finding("high"), "web1", {"net": "192.0.2.9/32", "allowlisted": "192.0.2.9/32 is "
                                   "allowlisted (192.0.2.0/24, in the allowlist)"}
    )  # fmt: skip
    assert ban_text(a) == "not banned: 192.0.2.9/32 is allowlisted (192.0.2.0/24, in the allowlist)"
    cmds = [c for c, _why in next_steps(a)]
    assert not any(c.split()[:2] in (["sshmonitor", "ban"], ["sshmonitor", "unban"]) for c in cmds)
    # Round trip through the spool keeps it.
    assert Alert.from_dict(json.loads(json.dumps(a.to_dict()))).ban == a.ban


def test_ban_manager_names_the_allowlist_only_when_it_stopped_a_ban() -> None:
    from sshmonitord.respond.backend import NoneBackend
    from sshmonitord.respond.bans import BanManager

    cfg = config.parse_config("allowlist: [192.0.2.0/24]")
    bm = BanManager(None, NoneBackend(), cfg.response, cfg.allowlist)
    info = bm.alert_info([
        _finding("high"),  # allowlisted
        _finding("high", "198.51.100.1"),  # would be banned: not placed here, so nothing
        _finding("high", "192.0.2.10", action=Action.ALERT),  # asks for no ban
    ])  # fmt: skip
    assert info == {
        "192.0.2.9/32": {
            "net": "192.0.2.9/32",
            "allowlisted": "192.0.2.9/32 is allowlisted (192.0.2.0/24, in the allowlist)",
        }
    }


# =========================================================================== 7. report, dry run


def test_report_counts_dry_run_bans_as_active(tmp_path: Path, daemon_factory: Any) -> None:
    log = tmp_path / "auth.log"
    log.write_text("")
    d = daemon_factory(
        f"sources: {{mode: file, files: [{log}], poll_interval: 100ms}}\n", args=["--dry-run"]
    )
    d.wait_log("sshmonitord started")
    log.write_text(failures("198.51.100.50", 6, pid=1000) + failures("198.51.100.51", 6, pid=2000))
    assert wait_for(lambda: len(lines_with(d.log_text(), "DRY RUN: would ban stage=bans")) == 2)
    state = str(d.state_dir)

    def report(*more: str) -> str:
        return cli("report", "--state-dir", state, "--until", "now", *more).stdout

    assert wait_for(lambda: "2 placed (2 dry run)" in report(), timeout=10), report()
    text = report()
    assert "2 placed (2 dry run), 0 expired, 0 lifted, 2 active at the end (dry run)" in text
    assert "0 active" not in text
    bans = json.loads(report("--format", "json"))["bans"]
    assert bans["active_at_end"] == 0 and bans["active_dry_run_at_end"] == 2
    assert "2 active at the end (dry run)" in report("--format", "html")


def test_active_text_mixed() -> None:
    from sshmonitord.notify.report.render import active_text

    assert active_text({"active_at_end": 3}) == "3 active at the end"
    assert active_text({"active_at_end": 0, "active_dry_run_at_end": 2}) == (
        "2 active at the end (dry run)"
    )
    assert active_text({"active_at_end": 3, "active_dry_run_at_end": 1}) == (
        "3 active at the end (+1 dry run)"
    )


# =========================================================================== 8. Subject folding

SUBJECTS = [
    # 70-77 characters: the length the email package folded as "Subject:\n <text>".
    "[sshmonitor] WARNING vm: 10 failed attempts from 198.51.100.7/32 within 10m",
    "[sshmonitor] report web1: 57 failures, 4 bans, 3 logins, 1 CRITICAL (1d t",
    "[sshmonitor] HIGH web1: short",
    # Long: must still fold, between words, every line at most 78 characters.
    "[sshmonitor] CRITICAL web1: deploy logged in from 203.0.113.7 (password) after 14 failed "
    "attempts from 203.0.113.7/32 within 1h; deploy had never logged in from 203.0.113.0/24: "
    "possible compromise",
    # Not ASCII, and a word longer than a line.
    "[sshmonitor] WARNING web1: 12 addresses failing against user 'jürgen' within 1h",
    "[sshmonitor] WARNING web1: user " + "x" * 120 + " failed",
    "[sshmonitor] HIGH web1: user 名前 \U0001f600 and ‮evil",
]
# Attacker-controlled user names that try to add a header: raw CR/LF (render escapes them,
# build_email must hold even without), and RFC 2047 encoded words, which the email package
# decodes into a raw CR LF when it parses a header value.
INJECTIONS = [
    "[sshmonitor] WARNING web1: user x\r\nBcc: evil@example.net failed",
    "[sshmonitor] WARNING web1: 12 addresses failing against user "
    "'=?utf-8?q?a=0D=0ABcc:_evil@example.net?=' within 1h",
    "[sshmonitor] CRITICAL web1: =?utf-8?b?YQ0KQmNjOiBldmlsQGV4YW1wbGUubmV0?= logged in",
    "[sshmonitor] WARNING web1: user =?utf-8?q?=0ABcc:evil@example.net?=\n\rX-Evil: 1",
]


def _header_lines(raw: bytes, name: bytes) -> list[bytes]:
    head = raw.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n")
    lines = head.split(b"\n")
    start = next(i for i, ln in enumerate(lines) if ln.lower().startswith(name.lower() + b":"))
    out = [lines[start]]
    for ln in lines[start + 1 :]:
        if ln[:1] not in (b" ", b"\t"):
            break
        out.append(ln)
    return out


def _check_subject(raw: bytes, subject: str) -> None:
    lines = _header_lines(raw, b"Subject")
    assert lines[0].startswith(b"Subject: ") and lines[0] != b"Subject: ", lines
    assert all(len(ln) <= 78 for ln in lines), lines
    assert all(32 <= c < 127 for ln in lines for c in ln), lines  # ASCII, no control char
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert str(msg["Subject"]) == " ".join(subject.replace("\0", " ").split())
    names = [k.lower() for k in msg]
    assert "bcc" not in names and "x-evil" not in names, names
    assert names.count("subject") == 1


def _msg(subject: str, alerts: int = 1) -> Message:
    found = [_finding("high", f"198.51.100.{i + 1}") for i in range(alerts)]
    m = render([Alert.from_finding(f, "web1") for f in found], "web1")
    return Message(m.subject if subject == "" else subject, m.text, m.html, m.alerts, 0, "web1")


@pytest.mark.parametrize("subject", SUBJECTS + INJECTIONS)
def test_smtp_subject_header_bytes(smtp_servers: Any, subject: str) -> None:
    srv = smtp_servers()
    ch = SmtpChannel(host="127.0.0.1", port=srv.port, tls="none", sender="s@example.org",
                     to=["a@example.org"], hostname="web1")  # fmt: skip
    asyncio.run(ch.send(_msg(subject)))
    (got,) = srv.wait_for(1)
    _check_subject(got.data, subject)
    assert got.rcpt_tos == ["a@example.org"]


def test_sendmail_subject_header_bytes(smtp_servers: Any, msmtp_wrapper: Any) -> None:
    """sendmail -t takes the recipients from the headers: a forged Bcc would have mailed the
    attacker a copy of every alert."""
    srv = smtp_servers()
    ch = SendmailChannel(path=msmtp_wrapper(srv.port, "s@example.org"), sender="s@example.org",
                         to=["a@example.org"], hostname="web1")  # fmt: skip
    for i, subject in enumerate([SUBJECTS[0], SUBJECTS[3], *INJECTIONS]):
        asyncio.run(ch.send(_msg(subject)))
        got = srv.wait_for(i + 1)[i]
        _check_subject(got.data, subject)
        assert got.rcpt_tos == ["a@example.org"], got.rcpt_tos


def test_alert_ids_header_of_a_digest_starts_on_its_first_line(smtp_servers: Any) -> None:
    srv = smtp_servers()
    ch = SmtpChannel(host="127.0.0.1", port=srv.port, tls="none", sender="s@example.org",
                     to=["a@example.org"], hostname="web1")  # fmt: skip
    msg = _msg("", alerts=2)  # two ids: 65 characters, a line of their own
    asyncio.run(ch.send(msg))
    (got,) = srv.wait_for(1)
    lines = _header_lines(got.data, b"X-Sshmonitor-Alert-Ids")
    assert re.match(rb"X-Sshmonitor-Alert-Ids: [0-9a-f]{32}", lines[0]), lines
    assert all(len(ln) <= 78 for ln in lines)
    ids = email.message_from_bytes(got.data, policy=email.policy.default)["X-Sshmonitor-Alert-Ids"]
    assert str(ids).split() == msg.alert_ids


def test_fold_header_unit() -> None:
    from sshmonitord.notify.smtp import fold_header

    assert fold_header("Subject", "") == ["Subject:"]
    assert fold_header("Subject", "a b") == ["Subject: a b"]
    lines = fold_header("Subject", "w " * 60)
    assert lines[0].startswith("Subject: w") and all(len(x) <= 78 for x in lines)
    # An encoded-word look-alike is itself encoded, so it is shown, never decoded.
    (line,) = fold_header("Subject", "=?utf-8?q?x?=")
    assert line == "Subject: =?utf-8?q?=3D=3Futf-8=3Fq=3Fx=3F=3D?="
    e = build_email(_msg("x " * 50), "s@example.org", ["a@example.org"], "web1")
    assert str(e["Subject"]) == " ".join(["x"] * 50)


# =========================================================================== 9. log order


def test_finding_is_logged_before_the_ban_it_causes(tmp_path: Path, daemon_factory: Any) -> None:
    log = tmp_path / "auth.log"
    log.write_text("")
    d = daemon_factory(
        f"sources: {{mode: file, files: [{log}], poll_interval: 100ms}}\n"
        "allowlist: [192.0.2.0/24]\n"
    )
    d.wait_log("sshmonitord started")
    with log.open("a") as fh:
        fh.write(failures("198.51.100.60", 6, pid=1000) + failures("192.0.2.60", 6, pid=2000))
    d.wait_log("banning stage=bans net=198.51.100.60/32", timeout=10)
    d.wait_log("not banning stage=bans net=192.0.2.60/32", timeout=10)
    assert wait_for(lambda: len(lines_with(d.log_text(), " finding stage=daemon ")) == 2)
    lines = d.log_text().splitlines()

    def at(*needles: str) -> int:
        return next(i for i, ln in enumerate(lines) if all(n in ln for n in needles))

    banned = at(" finding stage=daemon ", "subject=198.51.100.60/32")
    assert banned < at(" banning stage=bans ", "net=198.51.100.60/32")
    allowed = at(" finding stage=daemon ", "subject=192.0.2.60/32")
    assert allowed < at(" not banning stage=bans ", "net=192.0.2.60/32")
    # The alert, which says what was done, comes after the ban.
    assert wait_for(lambda: " alert stage=alerts " in d.log_text())
    lines = d.log_text().splitlines()
    assert at(" banning stage=bans ", "net=198.51.100.60/32") < at(
        " alert stage=alerts ", "subject=198.51.100.60/32"
    )


# =========================================================================== 10. ban width


def test_ban_wider_than_the_limit_is_refused_with_one_line(
    tmp_path: Path, daemon_factory: Any
) -> None:
    d = daemon_factory("")
    d.wait_log("sshmonitord started")
    sock = str(d.socket_path)
    r = d.cli("ban", "10.0.0.0/8", "--socket", sock)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1, r.stderr
    assert "10.0.0.0/8 is wider than response.max_ban_prefix.ipv4 (/16)" in r.stderr
    assert "--force" in r.stderr
    assert json.loads(d.cli("bans", "--json", "--socket", sock).stdout)["bans"] == []
    r = d.cli("ban", "10.0.0.0/8", "--force", "--socket", sock)
    assert r.returncode == 0 and r.stdout.startswith("banned 10.0.0.0/8 for "), r
    assert [b["net"] for b in json.loads(d.cli("bans", "--json", "--socket", sock).stdout)
            ["bans"]] == ["10.0.0.0/8"]  # fmt: skip
    d.signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0


# ----------------------------------------------------------------------------- review pass


def test_replay_of_a_damaged_gz_says_so_and_keeps_what_it_read(tmp_path: Path) -> None:
    """A cut-off or damaged .gz (EOFError / zlib.error from gzip) was a traceback with no
    summary; now one line naming the error, and the summary of what was read before it."""
    lines = "".join(
        f"Dec  6 12:00:{i % 60:02d} web1 sshd[{100 + i}]: Failed password for root from "
        f"203.0.113.{1 + i % 200} port {4000 + i} ssh2\n"
        for i in range(3000)
    ).encode()
    whole = gzip.compress(lines)
    cut = tmp_path / "auth.log.2.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    magic = tmp_path / "auth.log.3.gz"
    magic.write_bytes(b"\x1f\x8b")
    for path in (cut, magic):
        r = subprocess.run(
            [sys.executable, "-m", "sshmonitord.cli", "replay", str(path)],
            capture_output=True, text=True, timeout=60,
        )
        assert r.returncode == 1, r.stderr
        assert "Traceback" not in r.stderr, r.stderr
        assert "sshmonitor replay: " in r.stderr and "stopped there" in r.stderr, r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "sshmonitord.cli", "replay", str(cut)],
        capture_output=True, text=True, timeout=60,
    )
    assert re.search(r"[1-9][\d,]* lines", r.stderr), r.stderr  # what came before the damage


def test_progress_of_a_file_that_grows_while_replayed_stays_sane() -> None:
    from sshmonitord.replay import progress_line

    line = progress_line(5000, 2.0, done=129_000_000, total=18_600_000)
    assert "100%" in line and "ETA 0:00" in line and "-" not in line.split("ETA")[1], line
