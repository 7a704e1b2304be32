"""Forged journal records never count (issue #11 item 1).

``logger -t sshd 'Failed password for root from X port 22 ssh2'`` makes a journal record whose
SYSLOG_IDENTIFIER (and, with a copy of any program named sshd, _COMM) says sshd. Only the
fields journald fills in from the kernel's credentials tell who sent it: _UID, _PID, _EXE.
The journal files here are real ones, written by systemd-journal-remote from export-format
input, which lets a test set those fields as journald would for genuine and forged senders
(the values are the ones a real journald 252 recorded on Debian 12 for sshd, sudo, su,
internal-sftp, logger and systemd-cat; see the report of this change).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from conftest import need

from sshmonitord.config import Config, JournalTrustConfig, SourcesConfig
from sshmonitord.events import Line
from sshmonitord.sources import build, choose, journal_start_time
from sshmonitord.sources.journal import (
    FULL_TRUST,
    JournalSource,
    Trust,
    TrustRules,
    build_command,
    journald_running,
    judge,
    printable,
    uid_name,
)

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
BOOT = uuid.uuid4().hex
RULES = TrustRules.from_config(JournalTrustConfig())
USERS = {1000: "alice", 1001: "bob"}


def _user(uid: int) -> str:
    return USERS.get(uid, str(uid))


def _need_tools() -> None:
    need(
        Path(JOURNAL_REMOTE).exists(),
        "systemd-journal-remote missing (apt-get install systemd-journal-remote)",
    )
    need(shutil.which("journalctl") is not None, "journalctl missing")


# --------------------------------------------------------------------- senders, as journald
# sees them


def sshd(msg: str, pid: int = 700, **over: str) -> dict[str, str]:
    """sshd's monitor (root): what journald records for its syslog() calls."""
    rec = {
        "_TRANSPORT": "syslog",
        "SYSLOG_IDENTIFIER": "sshd",
        "SYSLOG_PID": str(pid),
        "_PID": str(pid),
        "_COMM": "sshd",
        "_EXE": "/usr/sbin/sshd",
        "_UID": "0",
        "_GID": "0",
        "_SYSTEMD_UNIT": "ssh.service",
        "_HOSTNAME": "jhost",
        "MESSAGE": msg,
    }
    rec.update(over)
    return rec


def logger(msg: str, uid: int = 1000, **over: str) -> dict[str, str]:
    """``logger -t sshd MSG`` run by a local user: logger has exited by the time journald
    looks at /proc, so there is no _EXE (seen on a real journald)."""
    rec = {
        "_TRANSPORT": "syslog",
        "SYSLOG_IDENTIFIER": "sshd",
        "SYSLOG_PID": "700",
        "_PID": "9000",
        "_COMM": "logger",
        "_UID": str(uid),
        "_GID": str(uid),
        "_SYSTEMD_UNIT": "session-4.scope",
        "_HOSTNAME": "jhost",
        "MESSAGE": msg,
    }
    rec.update(over)
    return rec


FAIL = "Failed password for root from {ip} port {port} ssh2"


# --------------------------------------------------------------------------- the decision


def test_genuine_sshd_record_counts_fully():
    assert judge(sshd("Failed password for root from 192.0.2.7 port 1 ssh2"), RULES) == FULL_TRUST
    # sshd-session/sshd-auth (OpenSSH 9.8+), Debian's path
    rec = sshd("x", SYSLOG_IDENTIFIER="sshd-session", _EXE="/usr/lib/openssh/sshd-session")
    assert judge(rec, RULES) == FULL_TRUST


def test_forged_identifier_is_refused():
    """logger -t sshd: the identifier says sshd, nothing journald knows does."""
    assert judge(logger(FAIL), RULES) == Trust(False, reason="missing_exe")
    # Caught while still alive, logger's binary shows.
    assert judge(logger(FAIL, _EXE="/usr/bin/logger"), RULES).reason == "untrusted_exe"
    # Even root's logger is not sshd.
    assert judge(logger(FAIL, uid=0, _EXE="/usr/bin/logger"), RULES).reason == "untrusted_exe"


def test_forged_comm_is_refused():
    """A copy of python (or anything) named sshd: _COMM=sshd, but _EXE is the copy."""
    for exe in ("/home/alice/bin/sshd", "/usr/bin/python3.11", "/tmp/usr/sbin/sshd"):
        rec = logger(FAIL, _COMM="sshd", _EXE=exe)
        assert judge(rec, RULES) == Trust(False, reason="untrusted_exe"), exe


def test_sshd_binary_as_a_user_speaks_only_for_that_user():
    """sshd's per-user process after login runs as the user, in the user's session scope.
    So does a user's own sshd on a high port: neither may count toward a ban."""
    rec = sshd("Received disconnect from 192.0.2.7 port 1:11: bye", pid=801)
    rec.update(_UID="1000", _GID="1000", _SYSTEMD_UNIT="session-4.scope")
    assert judge(rec, RULES, _user) == Trust(True, audit_user="alice")
    forged = sshd(FAIL.format(ip="192.0.2.99", port=22), _UID="1001")
    assert judge(forged, RULES, _user) == Trust(True, audit_user="bob")
    # internal-sftp runs inside that process
    sftp = sshd('opendir "/"', SYSLOG_IDENTIFIER="internal-sftp", _UID="1001")
    assert judge(sftp, RULES, _user) == Trust(True, audit_user="bob")
    # A uid without a passwd entry: the number stands for the name.
    assert judge(sshd("x", _UID="4000123"), RULES).audit_user == "4000123"


def test_sudo_and_su():
    sudo = {
        **sshd("alice : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/usr/bin/id"),
        "SYSLOG_IDENTIFIER": "sudo",
        "_COMM": "sudo",
        "_EXE": "/usr/bin/sudo",
    }
    del sudo["SYSLOG_PID"]
    assert judge(sudo, RULES, _user) == FULL_TRUST  # run as root
    # Run by alice, sudo logs with alice's real uid (journald: _UID=1001 on Debian 12, for
    # "user NOT in sudoers" and for the COMMAND line alike): only alice's own sessions.
    assert judge({**sudo, "_UID": "1000"}, RULES, _user) == Trust(True, audit_user="alice")
    su_fail = {**sudo, "_EXE": "/usr/bin/su", "SYSLOG_IDENTIFIER": "su", "_UID": "1000"}
    assert judge(su_fail, RULES, _user) == Trust(True, audit_user="alice")
    # A program that is neither: refused whatever it calls itself.
    assert judge({**sudo, "_EXE": "/usr/bin/perl"}, RULES).reason == "untrusted_exe"


def test_missing_or_wrong_trusted_fields_are_refused():
    base = sshd(FAIL.format(ip="192.0.2.99", port=22), _UID="1000")
    for key, reason in (
        ("_EXE", "missing_exe"),
        ("_UID", "missing_credentials"),
        ("_PID", "missing_credentials"),
        ("_TRANSPORT", "untrusted_transport"),
    ):
        rec = dict(base)
        del rec[key]
        assert judge(rec, RULES) == Trust(False, reason=reason), key
    assert judge({**base, "_UID": "x0"}, RULES).reason == "missing_credentials"
    assert judge({**base, "_UID": "٠"}, RULES).reason == "missing_credentials"  # not ASCII
    for transport in ("kernel", "audit", "driver"):
        assert judge({**base, "_TRANSPORT": transport}, RULES).reason == "untrusted_transport"
    root = {**base, "_UID": "0"}
    assert judge({**root, "_TRANSPORT": "stdout"}, RULES) == FULL_TRUST  # sshd -e


def test_sshd_last_words_without_exe():
    """sshd's per-connection process often exits before journald reads /proc/PID/exe (seen
    on a real journald: "Connection closed by 127.0.0.1 port N [preauth]", _UID=0, _COMM=sshd,
    no _EXE). Sent as root by a process named sshd it still counts; anything else does not."""
    last = sshd("Connection closed by 192.0.2.7 port 1 [preauth]")
    del last["_EXE"]
    assert judge(last, RULES) == FULL_TRUST
    assert judge({**last, "_COMM": "sshd-session"}, RULES) == FULL_TRUST
    strict = TrustRules.from_config(JournalTrustConfig(sshd_exited=False))
    assert judge(last, strict) == Trust(False, reason="missing_exe")
    # root's logger, a user's process named sshd: _EXE is required.
    assert judge({**last, "_COMM": "logger"}, RULES).reason == "missing_exe"
    assert judge({**last, "_UID": "1000"}, RULES).reason == "missing_exe"
    units = TrustRules.from_config(JournalTrustConfig(sshd_units=("ssh.service",)))
    assert judge({**last, "_SYSTEMD_UNIT": "x.service"}, units).reason == "untrusted_unit"


def test_binary_replaced_by_an_upgrade_still_counts():
    assert judge(sshd("x", _EXE="/usr/sbin/sshd (deleted)"), RULES) == FULL_TRUST


def test_rules_from_config_users_units_and_warnings():
    cfg = JournalTrustConfig(sshd_users=("root", "4242", "nosuchuser-x"), transports=("syslog",))
    rules = TrustRules.from_config(cfg)
    assert rules.sshd_uids == {0, 4242}
    assert rules.warnings == (
        "sources.journal.trusted.sshd_users: no user 'nosuchuser-x' on this host",
    )
    assert judge(sshd("x", _UID="4242"), rules) == FULL_TRUST
    assert judge(sshd("x", _TRANSPORT="stdout"), rules).reason == "untrusted_transport"
    # The privilege-separation user of this host, when it has one.
    try:
        import pwd

        privsep = pwd.getpwnam("sshd").pw_uid
    except KeyError:
        privsep = None
    if privsep is not None:
        assert judge(sshd("x", _UID=str(privsep)), RULES) == FULL_TRUST

    units = TrustRules.from_config(JournalTrustConfig(sshd_units=("ssh.service", "ssh@*.service")))
    assert judge(sshd("x"), units) == FULL_TRUST
    assert judge(sshd("x", _SYSTEMD_UNIT="ssh@3-192.0.2.1:22.service"), units) == FULL_TRUST
    assert judge(sshd("x", _SYSTEMD_UNIT="debug.service"), units).reason == "untrusted_unit"

    empty = TrustRules.from_config(JournalTrustConfig(sshd_exe=(), transports=("syslog", "tcp")))
    assert empty.warnings == (
        "sources.journal.trusted: no sshd binary or user is trusted, so nothing can count",
        "sources.journal.trusted.transports: journald has no transport 'tcp'",
    )
    assert RULES.warnings == ()


def test_uid_name_and_printable():
    assert uid_name(0) == "root"
    assert uid_name(4_000_000_123) == "4000000123"
    assert printable("a\x1b[31mb\nc\u202ed") == "a\\x1b[31mb\\x0ac\\u202ed"
    assert len(printable("x" * 1000)) == 200


# ------------------------------------------------------------------- real journal files


def _export(records: list[dict[str, str]], start: float) -> bytes:
    out = []
    for n, rec in enumerate(records):
        head = (
            f"__REALTIME_TIMESTAMP={int((start + n * 0.01) * 1_000_000)}\n"
            f"__MONOTONIC_TIMESTAMP={1_000_000 + n * 1000}\n"
            f"_BOOT_ID={BOOT}\nPRIORITY=6\n"
        )
        out.append(head + "".join(f"{k}={v}\n" for k, v in rec.items()))
    return "\n".join(out).encode() + b"\n"


def _write(journal: Path, records: list[dict[str, str]], start: float) -> None:
    r = subprocess.run(
        [JOURNAL_REMOTE, "-o", str(journal), "-"],
        input=_export(records, start),
        capture_output=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr


def _attack(n: int = 6) -> list[dict[str, str]]:
    """Forged failures for 192.0.2.99 every way a local user can make them, interleaved with
    sshd's genuine ones for 192.0.2.77."""
    msg = FAIL.format
    forged = [logger(msg(ip="192.0.2.99", port=1000 + i), _EXE="/usr/bin/logger") for i in range(n)]
    forged += [logger(msg(ip="192.0.2.99", port=2000 + i)) for i in range(n)]  # no _EXE
    forged += [
        logger(msg(ip="192.0.2.99", port=3000 + i), _COMM="sshd", _EXE="/usr/bin/python3.11")
        for i in range(n)
    ]
    genuine = [sshd(msg(ip="192.0.2.77", port=4000 + i), pid=900 + i) for i in range(n)]
    out: list[dict[str, str]] = []
    for i in range(n):
        out += [forged[i], forged[n + i], genuine[i], forged[2 * n + i]]
    return out


def _run_source(src: JournalSource, want: int, timeout: float = 10) -> list[Line]:
    got: list[Line] = []

    async def emit(batch: list[Line]) -> None:
        got.extend(batch)

    async def go() -> None:
        src.emit = emit
        await src.start()
        deadline = time.monotonic() + timeout
        while len(got) < want and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # anything beyond `want` would show now
        await src.stop()

    asyncio.run(go())
    return got


def test_source_drops_forged_records_counts_and_samples_them(tmp_path):
    _need_tools()
    j = tmp_path / "mixed.journal"
    records = _attack()
    # A logged-in user's sshd process, and the same user's sudo: their own sessions only.
    records.append(sshd("Disconnected from user alice 192.0.2.5 port 5", pid=950, _UID="1000"))
    records.append(
        logger(
            "alice : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/usr/bin/id",
            SYSLOG_IDENTIFIER="sudo",
            _COMM="sudo",
            _EXE="/usr/bin/sudo",
        )
    )
    # Forged SYSLOG_PID naming another process: journald's _PID wins.
    records.append(sshd("Accepted publickey for bob from 192.0.2.6 port 6 ssh2", pid=960))
    records[-1]["SYSLOG_PID"] = "1"
    # Terminal escapes in a forged record must not reach a terminal through `status`.
    records.append(logger("evil \x1b]0;pwned\x07 line", _EXE="/usr/bin/logger"))
    _write(j, records, time.time() - 60)

    src = JournalSource(
        lambda b: None, matches=["SYSLOG_IDENTIFIER=sshd", "SYSLOG_IDENTIFIER=sudo"],
        start_at="beginning", files=[str(j)],
    )  # fmt: skip
    got = _run_source(src, 9)
    texts = [ln.text for ln in got]
    assert [t for t in texts if "192.0.2.99" in t] == []
    assert [t for t in texts if "192.0.2.77" in t] == [
        FAIL.format(ip="192.0.2.77", port=4000 + i) for i in range(6)
    ]
    assert [ln.audit_user for ln in got] == [None] * 6 + [uid_name(1000)] * 2 + [None]
    assert got[-1].fields is not None and "SYSLOG_PID" not in got[-1].fields
    assert got[-1].fields["_PID"] == "960"

    d = src.describe()
    assert d["mode"] == "journal" and d["forgeable"] is False
    assert d["rejected"] == {"untrusted_exe": 13, "missing_exe": 6}
    assert d["stats"]["rejected"] == 19 and d["stats"]["trusted"] == 7
    assert d["stats"]["user_sessions_only"] == 2
    assert len(d["rejected_samples"]) == 5
    assert d["rejected_samples"][-1] == (
        "untrusted_exe: sshd (_COMM=logger _EXE=/usr/bin/logger _UID=1000): "
        "evil \\x1b]0;pwned\\x07 line"
    )
    assert all("\x1b" not in s and "\n" not in s for s in d["rejected_samples"])


def _db_rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return []
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def test_daemon_bans_the_genuine_attacker_never_the_forged_address(tmp_path, daemon_factory):
    """The end-to-end proof: the real daemon follows a real journal file holding ≥5 forged
    failures per forging method for 192.0.2.99 and 6 genuine ones for 192.0.2.77."""
    _need_tools()
    j = tmp_path / "attack.journal"
    # Plus the hardest forgery: a user's process that sends, then execs /usr/sbin/sshd before
    # journald reads /proc/PID/exe (or a user's own sshd on a high port, or any binary
    # bind-mounted at /usr/sbin/sshd in a user namespace): _EXE is sshd's, _UID the user's.
    exec_race = [
        sshd(FAIL.format(ip="192.0.2.99", port=5000 + i), pid=990 + i, _UID="1000")
        for i in range(6)
    ]
    _write(j, _attack() + exec_race, time.time() - 60)
    d = daemon_factory(
        "sources:\n  mode: journal\n  start_at: beginning\n"
        f"  journal:\n    files: [{j}]\nresponse:\n  backend: none\n"
    )
    db = d.state_dir / "sshmonitor.db"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        st = json.loads(d.cli("status", "--socket", str(d.socket_path), "--json").stdout or "{}")
        stage = next((s for s in st.get("stages", []) if s["name"] == "journal"), {})
        if stage.get("stats", {}).get("records") == 30 and _db_rows(db, "SELECT net FROM bans"):
            break
        time.sleep(0.1)
    time.sleep(0.3)  # let anything forged that slipped through land too
    bans = [r[0] for r in _db_rows(db, "SELECT net FROM bans")]
    assert any(b.startswith("192.0.2.77") for b in bans), (bans, d.log_text()[-3000:])
    assert not [b for b in bans if "192.0.2.99" in b], bans
    events = _db_rows(db, "SELECT ip, raw FROM events")
    assert len(events) == 6
    assert not [e for e in events if "192.0.2.99" in f"{e[0]} {e[1]}"]
    findings = _db_rows(db, "SELECT * FROM findings")
    assert findings and not [f for f in findings if "192.0.2.99" in repr(f)]

    st = json.loads(d.cli("status", "--socket", str(d.socket_path), "--json").stdout)
    stage = next(s for s in st["stages"] if s["name"] == "journal")
    assert stage["mode"] == "journal" and stage["forgeable"] is False
    assert stage["rejected"] == {"untrusted_exe": 12, "missing_exe": 6}
    assert stage["stats"]["user_sessions_only"] == 6
    pipe = next(s for s in st["stages"] if s["name"] == "pipeline")
    assert pipe["stats"]["audit_only_lines"] == 6  # never events, never detection
    assert len(stage["rejected_samples"]) == 5
    assert all("192.0.2.99" in s for s in stage["rejected_samples"])
    # Said once in the daemon's own log, not once per forged record.
    assert d.log_text().count("journal record rejected") == 1
    text = d.cli("status", "--socket", str(d.socket_path)).stdout
    assert "journal" in text


# ------------------------------------------------------------ where the journal starts


def test_build_command_since():
    cmd = build_command("journalctl", [], None, "end", since=1_700_000_000.25)
    assert "--since=@1700000000.250000" in cmd and "--no-tail" in cmd and "--lines=0" not in cmd
    # A cursor wins over a start time.
    cmd = build_command("journalctl", [], "s=1", "end", since=1.0)
    assert "--after-cursor=s=1" in cmd and not [c for c in cmd if c.startswith("--since")]
    cmd = build_command("journalctl", [], None, "end", follow=False, since=5.0)
    assert "--lines=all" in cmd


def test_journal_start_time_ignores_auditd_position():
    times = {("/var/log/auth.log", 1, 2): 100.0, ("/var/log/audit/audit.log", 1, 3): 900.0}
    assert journal_start_time(times, {"/var/log/audit/audit.log"}) == 100.0
    assert journal_start_time({}, set()) is None and journal_start_time(None, set()) is None


def _cfg(**sources: Any) -> Config:
    return dataclasses.replace(Config(), sources=dataclasses.replace(SourcesConfig(), **sources))


def test_switch_from_files_starts_the_journal_where_the_files_left_off(tmp_path):
    """A host that followed auth.log (positions saved at T) and now follows the journal, with
    no journal cursor: records before T were read from the file, records after T were not.
    Real `journalctl --since=@T` (systemd 252) on a real file."""
    _need_tools()
    j = tmp_path / "switch.journal"
    t0 = time.time() - 100
    before = [sshd(FAIL.format(ip="192.0.2.10", port=i), pid=10 + i) for i in range(5)]
    after = [sshd(FAIL.format(ip="192.0.2.20", port=i), pid=20 + i) for i in range(5)]
    _write(j, before, t0)  # t0 .. t0+0.04
    saved_at = t0 + 10  # the file position's save time: after the last line read from it
    _write(j, after, t0 + 20)
    cfg = _cfg(
        mode="journal",
        start_at="beginning",  # ignored: a saved file position says where history ends
        journal=dataclasses.replace(SourcesConfig().journal, files=(str(j),)),
    )
    saved = {("/var/log/auth.log", 64769, 12): saved_at, (cfg.sources.audit.path, 1, 2): t0 + 50}
    [src] = build(cfg, lambda b: None, {}, None, saved_times=saved)
    assert isinstance(src, JournalSource) and src.since == saved_at
    got = _run_source(src, 5)
    assert [ln.text for ln in got] == [r["MESSAGE"] for r in after]

    # A saved journal cursor wins: the journal was already being followed.
    [src] = build(cfg, lambda b: None, {}, got[1].position.cursor, saved_times=saved)
    assert src.since is None
    assert [ln.text for ln in _run_source(src, 3)] == [r["MESSAGE"] for r in after[2:]]


def test_daemon_switching_from_auth_log_to_the_journal(tmp_path, daemon_factory):
    """The daemon followed auth.log; now it follows the journal (sources.mode: auto on a host
    where journald runs, or an edited config). Its saved file positions tell it where history
    ends: the journal's copies of lines already read are not read again (no second alert),
    and what sshd logged while it was down is read (no gap)."""
    _need_tools()
    before = time.time() - 30
    log = tmp_path / "auth.log"
    log.write_text(
        "".join(
            f"Nov 24 21:45:4{i} jhost sshd[{700 + i}]: "
            + FAIL.format(ip="192.0.2.40", port=100 + i)
            + "\n"
            for i in range(3)
        )
    )
    d = daemon_factory(f"sources: {{mode: file, files: [{log}], start_at: beginning}}\n")
    db = d.state_dir / "sshmonitor.db"
    deadline = time.monotonic() + 10
    while len(_db_rows(db, "SELECT id FROM events")) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    d.signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0
    assert len(_db_rows(db, "SELECT id FROM events")) == 3

    # The journal holds the same three (rsyslog wrote auth.log from it) and, after the
    # daemon stopped, two more for another address.
    j = tmp_path / "host.journal"
    _write(j, [sshd(FAIL.format(ip="192.0.2.40", port=100 + i), pid=700 + i) for i in range(3)],
           before)  # fmt: skip
    _write(j, [sshd(FAIL.format(ip="192.0.2.41", port=200 + i), pid=800 + i) for i in range(2)],
           time.time())  # fmt: skip
    d = daemon_factory(
        f"sources:\n  mode: journal\n  start_at: beginning\n  journal:\n    files: [{j}]\n"
    )
    deadline = time.monotonic() + 10
    while len(_db_rows(db, "SELECT id FROM events")) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a re-read of the history would land now
    ips = [r[0] for r in _db_rows(db, "SELECT ip FROM events ORDER BY id")]
    assert ips == ["192.0.2.40"] * 3 + ["192.0.2.41"] * 2, d.log_text()[-2000:]
    assert "starting where the files left off" in d.log_text()


def test_restart_before_any_record_keeps_what_arrived_meanwhile(tmp_path):
    """start_at: end, journalctl dies before any record came: the restart must not start at
    its own "end" and skip what arrived while it was down."""
    _need_tools()
    j = tmp_path / "restart.journal"
    _write(j, [sshd(FAIL.format(ip="192.0.2.30", port=1))], time.time() - 100)  # history
    got: list[Line] = []

    async def emit(batch: list[Line]) -> None:
        got.extend(batch)

    async def go() -> None:
        src = JournalSource(emit, start_at="end", files=[str(j)])
        await src.start()
        deadline = time.monotonic() + 10
        while src.proc is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # journalctl is at the end of the file, following
        assert src.proc is not None
        src.proc.kill()
        # Written while no journalctl runs: this blocking call keeps the loop (and so the
        # restart, which also waits out its backoff) from running meanwhile.
        _write(j, [sshd(FAIL.format(ip="192.0.2.31", port=2))], time.time())
        while not got and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        restarts = src.restarts
        await src.stop()
        assert restarts == 1

    asyncio.run(go())
    assert [ln.text for ln in got] == [FAIL.format(ip="192.0.2.31", port=2)]


# --------------------------------------------------------------------- sources.mode: auto


def test_auto_prefers_the_journal_wherever_journald_runs(tmp_path):
    need(shutil.which("journalctl") is not None, "journalctl missing")
    log = tmp_path / "auth.log"
    log.write_text("")
    cfg = _cfg(mode="auto", files=(str(log),))
    sock_path = tmp_path / "journal" / "socket"
    # No journald (this machine has no systemd as PID 1): the readable file.
    assert not journald_running(str(sock_path))
    assert choose(cfg, str(sock_path)) == ("file", [str(log)])
    sock_path.parent.mkdir()
    sock_path.write_text("")  # a plain file is not journald's socket
    assert choose(cfg, str(sock_path)) == ("file", [str(log)])
    sock_path.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        assert journald_running(str(sock_path))
        assert choose(cfg, str(sock_path)) == ("journal", [])
        # ...unless journalctl cannot be run.
        nojctl = dataclasses.replace(
            cfg,
            sources=dataclasses.replace(
                cfg.sources,
                journal=dataclasses.replace(cfg.sources.journal, journalctl="/nonexistent/jctl"),
            ),
        )
        assert choose(nojctl, str(sock_path)) == ("file", [str(log)])
        # An explicit mode is obeyed.
        forced = _cfg(mode="file", files=(str(log),))
        assert choose(forced, str(sock_path)) == ("file", [str(log)])
    # Journal files configured: the journal, journald or not.
    jf = _cfg(
        mode="auto",
        files=(str(log),),
        journal=dataclasses.replace(SourcesConfig().journal, files=("/x.journal",)),
    )
    assert choose(jf, str(tmp_path / "none")) == ("journal", [])
    # Neither journald nor a file yet: wait for the files.
    missing = _cfg(mode="auto", files=(str(tmp_path / "later.log"),))
    assert choose(missing, str(tmp_path / "none")) == ("file", [str(tmp_path / "later.log")])


def test_default_socket_path_is_journalds(tmp_path):
    from sshmonitord.sources import journald

    assert journald.JOURNALD_SOCKET == "/run/systemd/journal/socket"
    log = tmp_path / "auth.log"
    log.write_text("")
    mode, _ = choose(_cfg(mode="auto", files=(str(log),)))
    # Where journald does not run (CI: no systemd as PID 1), auto follows the file.
    assert mode == ("journal" if journald_running() else "file")


def test_reload_applies_new_trust_rules_at_once():
    src = JournalSource(lambda b: None, files=["/nonexistent.journal"])
    rec = sshd("x", _UID="4242")
    assert src._admit(Line("x", "journal", fields=dict(rec)))
    assert src.user_only == 1  # uid 4242 is not trusted by default
    trusted = JournalTrustConfig(sshd_users=("root", "4242"))
    journal = dataclasses.replace(SourcesConfig().journal, files=("/nonexistent.journal",))
    src.apply_config(_cfg(journal=dataclasses.replace(journal, trusted=trusted)))
    assert src._admit(Line("x", "journal", fields=dict(rec)))
    assert src.trusted == 1


# ---------------------------------------------------------- a real journald, real senders

NAMESPACE_SCRIPT = r"""
set -eu
T="$1"; SHARED="$2"; PORT="$3"
# Everything below happens in this private mount namespace: the host's /run, /dev and journal
# are never touched.
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/journal /run/log /run/sshd
mount --bind "$T/runlog" /run/log
if [ -d /var/log/journal ]; then mount --bind "$T/varlog" /var/log/journal; fi
mkdir -p "$T/olddev"
mount --rbind /dev "$T/olddev"
mount -t tmpfs tmpfs /dev
for d in null zero full random urandom tty; do
  touch "/dev/$d"; mount --bind "$T/olddev/$d" "/dev/$d"
done
mkdir /dev/pts; mount --bind "$T/olddev/pts" /dev/pts; ln -s pts/ptmx /dev/ptmx  # sshpass
/lib/systemd/systemd-journald &
JPID=$!
for i in $(seq 100); do [ -S /run/systemd/journal/dev-log ] && break; sleep 0.05; done
ln -s /run/systemd/journal/dev-log /dev/log
# Forgers: an unprivileged local user (nobody), three ways.
F='Failed password for root from 192.0.2.99 port 22 ssh2'
for i in 1 2 3 4 5; do
  setpriv --reuid=65534 --regid=65534 --clear-groups logger -t sshd "$F"
  echo "$F" | setpriv --reuid=65534 --regid=65534 --clear-groups systemd-cat -t sshd
  setpriv --reuid=65534 --regid=65534 --clear-groups "$SHARED/sshd" -t sshd "$F"
done
# The genuine article: sshd refusing passwords from 127.0.0.1.
/usr/sbin/sshd -D -f "$T/sshd_config" &
SPID=$!
for i in $(seq 100); do
  ssh-keyscan -t ed25519 -p "$PORT" 127.0.0.1 >/dev/null 2>&1 && break; sleep 0.05
done
for i in 1 2 3 4 5; do
  sshpass -p wrong ssh -p "$PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o PubkeyAuthentication=no -o NumberOfPasswordPrompts=1 -o ConnectTimeout=5 \
    nosuchuser@127.0.0.1 true >/dev/null 2>&1 || true
done
kill $SPID; wait $SPID || true
sleep 0.2
kill $JPID; wait $JPID || true
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_real_journald_tells_logger_from_sshd(tmp_path):
    """No export file this time: a real journald records what a real unprivileged user's
    `logger -t sshd`, `systemd-cat -t sshd` and a copy of logger named sshd send, and what a
    real sshd logs for five refused passwords. Only sshd's records come through."""
    need(os.geteuid() == 0, "needs root (a private mount namespace, setpriv, sshd)")
    for tool in ("unshare", "setpriv", "logger", "systemd-cat", "sshpass", "ssh", "ssh-keyscan"):
        need(shutil.which(tool) is not None, f"{tool} missing")
    need(Path("/lib/systemd/systemd-journald").exists(), "systemd-journald missing")
    need(Path("/usr/sbin/sshd").exists(), "openssh-server missing")
    _need_tools()
    for d in ("runlog", "varlog"):
        (tmp_path / d).mkdir()
    port = _free_port()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "hostkey")],
        check=True,
    )
    (tmp_path / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path / 'hostkey'}\nPidFile none\n"
        "UsePAM no\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n"
        "LogLevel INFO\nSyslogFacility AUTH\n"
    )
    (tmp_path / "ns.sh").write_text(NAMESPACE_SCRIPT)
    # nobody must be able to run the renamed copy: not under pytest's 0700 tmp directory.
    shared = Path(tempfile.mkdtemp(prefix="sshm-forger-"))
    try:
        shared.chmod(0o755)
        shutil.copy2(shutil.which("logger") or "/usr/bin/logger", shared / "sshd")
        r = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", str(tmp_path / "ns.sh"),
             str(tmp_path), str(shared), str(port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    assert r.returncode == 0, r.stdout + r.stderr

    src = JournalSource(
        lambda b: None,
        matches=["SYSLOG_IDENTIFIER=sshd"],
        start_at="beginning",
        directory=str(tmp_path / "runlog" / "journal"),
    )
    got = _run_source(src, 10)
    texts = [ln.text for ln in got]
    assert not [t for t in texts if "192.0.2.99" in t], texts
    failed = [t for t in texts if t.startswith("Failed password for invalid user nosuchuser")]
    assert len(failed) == 5, texts
    assert all(ln.audit_user is None for ln in got)
    # sshd's own, as journald saw it (its last words may lack _EXE: test_sshd_last_words...).
    assert {(ln.fields or {}).get("_EXE", "exited") for ln in got} <= {"/usr/sbin/sshd", "exited"}
    assert {(ln.fields or {}).get("_UID") for ln in got} == {"0"}
    d = src.describe()
    # Every record the journal holds was either delivered or rejected, and the 15 forged ones
    # (nobody's) were among the rejected. sshd's own records may be rejected too: a child
    # that logs its last line and exits at once (ssh-keyscan's probe: "Connection closed
    # ... [preauth]") can leave journald no _EXE and no _COMM to prove it was sshd.
    listed = subprocess.run(
        ["journalctl", "--directory", str(tmp_path / "runlog" / "journal"), "--output=json",
         "--no-pager", "--quiet", "SYSLOG_IDENTIFIER=sshd"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    records = [json.loads(x) for x in listed if x.strip()]
    forged = [x for x in records if x.get("_UID") == "65534"]
    assert len(forged) == 15 and all("192.0.2.99" in x.get("MESSAGE", "") for x in forged)
    rejected = sum(d["rejected"].values())
    assert rejected == len(records) - len(got), (rejected, len(records), len(got))
    assert rejected >= 15, d["rejected_samples"]
    # Which reason depends on how far the sender had got with exiting when journald read the
    # message: running (untrusted_exe), exited (missing_exe), reaped (no _PID: credentials).
    assert set(d["rejected"]) <= {"missing_exe", "untrusted_exe", "missing_credentials"}
    uid_nobody = "_UID=65534"
    assert all(
        (uid_nobody in s and "192.0.2.99" in s) or ("_UID=0)" in s and "[preauth]" in s)
        for s in d["rejected_samples"]
    ), d["rejected_samples"]
