"""The session tracker on plain lines: joins (both OpenSSH process layouts), attribution of
sudo/su, SFTP and auditd exec, restart persistence, lost sessions, retention, and the
operator commands over the resulting store.

The lines are real ones (tests/test_real_sshd.py shows where each comes from) with names,
pids and addresses changed; OpenSSH 9.8+ (``sshd-session``) lines are hand-written, since
Debian 12 ships 9.2.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sshmonitord.audit import SessionTracker
from sshmonitord.audit import proc as audit_proc
from sshmonitord.audit import stage as audit_stage
from sshmonitord.audit import tracker as audit_tracker
from sshmonitord.cli import audit as audit_cli
from sshmonitord.events import Event, Kind, Line
from sshmonitord.parse import Parser
from sshmonitord.pipeline import Pipeline
from sshmonitord.replay import event_json
from sshmonitord.store import INSERT_EVENT, Store, event_row
from sshmonitord.store import sessions as store_sessions

REF = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def ts(text: str) -> float:
    """``10:00:05`` on the reference day, as an epoch."""
    h, m, s = (int(x) for x in text.split(":"))
    return REF.replace(hour=h, minute=m, second=s).timestamp()


def parse(lines: list[str]) -> list[Event]:
    parser = Parser(zone=UTC, reference=REF)
    out = []
    for line in lines:
        ev = parser.parse_text(line)
        assert ev is not None, line
        out.append(ev)
    return out


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path)
    s.open()
    yield s
    s.close()


def feed(store: Store, tracker: SessionTracker, lines: list[str] | list[Event]) -> None:
    """What the pipeline does: the non-ignored events and the ignored ones the tracker
    wants, applied inside the batch's transaction."""
    events = parse(lines) if lines and isinstance(lines[0], str) else lines  # type: ignore[assignment]
    tracked = [e for e in events if e.kind is not Kind.IGNORED or tracker.wants(e)]  # type: ignore[union-attr]
    with store.transaction() as conn:
        tracker.apply(conn, tracked)  # type: ignore[arg-type]


def rows(store: Store, sql: str, *params: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in store.conn.execute(sql, params)]


def all_sessions(store: Store) -> list[dict[str, Any]]:
    out = rows(store, "SELECT * FROM sessions ORDER BY id")
    for s in out:
        s["detail"] = json.loads(s["detail"]) if s["detail"] else {}
    return out


def commands(store: Store) -> list[dict[str, Any]]:
    return rows(store, "SELECT * FROM commands ORDER BY id")


def transfers(store: Store) -> list[dict[str, Any]]:
    return rows(store, "SELECT * FROM transfers ORDER BY id")


# ------------------------------------------------------------------------- the joins

# OpenSSH 9.2 (Debian 12), UsePAM yes: the monitor (28) logs Accepted and PAM; the user
# child (34) logs the disconnect — with another pid.
OPENSSH_92 = """\
Nov 25 10:00:00 web1 sshd[28]: Accepted password for alice from 192.0.2.10 port 41542 ssh2
Nov 25 10:00:00 web1 sshd[28]: pam_unix(sshd:session): session opened for user alice(uid=1001) by (uid=0)
Nov 25 10:00:00 web1 systemd-logind[311]: New session 12 of user alice.
Nov 25 10:00:00 web1 sshd[28]: pam_env(sshd:session): deprecated reading of user environment enabled
Nov 25 10:00:01 web1 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id
Nov 25 10:00:01 web1 sudo: pam_unix(sudo:session): session opened for user root(uid=0) by alice(uid=1001)
Nov 25 10:00:01 web1 sudo: pam_unix(sudo:session): session closed for user root
Nov 25 10:02:05 web1 sshd[34]: Received disconnect from 192.0.2.10 port 41542:11: disconnected by user
Nov 25 10:02:05 web1 sshd[34]: Disconnected from user alice 192.0.2.10 port 41542
Nov 25 10:02:05 web1 sshd[28]: pam_unix(sshd:session): session closed for user alice
Nov 25 10:02:05 web1 systemd-logind[311]: Session 12 logged out. Waiting for processes to exit.
Nov 25 10:02:05 web1 systemd-logind[311]: Removed session 12.
"""

# OpenSSH 9.8+/10: per-connection sshd-session (monitor 1200, user child 1210), sshd-auth for
# the pre-auth work, the listener only accepts; systemd 256+ quotes logind's names.
OPENSSH_98 = """\
Nov 25 10:00:00 web1 sshd-session[1200]: Connection from 192.0.2.10 port 41542 on 192.0.2.1 port 22 rdomain ""
Nov 25 10:00:00 web1 sshd-auth[1201]: Postponed publickey for alice from 192.0.2.10 port 41542 ssh2 [preauth]
Nov 25 10:00:00 web1 sshd-session[1200]: Accepted password for alice from 192.0.2.10 port 41542 ssh2
Nov 25 10:00:00 web1 sshd-session[1200]: pam_unix(sshd:session): session opened for user alice(uid=1001) by alice(uid=0)
Nov 25 10:00:00 web1 systemd-logind[311]: New session '12' of user 'alice' with class 'user' and type 'tty'.
Nov 25 10:00:00 web1 sshd-session[1200]: User child is on pid 1210
Nov 25 10:00:00 web1 sshd-session[1210]: Starting session: shell on pts/0 for alice from 192.0.2.10 port 41542 id 0
Nov 25 10:00:01 web1 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id
Nov 25 10:02:05 web1 sshd-session[1210]: Received disconnect from 192.0.2.10 port 41542:11: disconnected by user
Nov 25 10:02:05 web1 sshd-session[1210]: Disconnected from user alice 192.0.2.10 port 41542
Nov 25 10:02:05 web1 sshd-session[1200]: pam_unix(sshd:session): session closed for user alice
Nov 25 10:02:05 web1 systemd-logind[311]: Removed session '12'.
"""

# OpenSSH 7.4 (CentOS 7): the user child's disconnect names no user.
OPENSSH_74 = """\
Nov 25 10:00:00 web1 sshd[28]: Accepted password for alice from 192.0.2.10 port 41542 ssh2
Nov 25 10:00:00 web1 sshd[28]: pam_unix(sshd:session): session opened for user alice by (uid=0)
Nov 25 10:00:00 web1 systemd-logind[311]: New session 12 of user alice.
Nov 25 10:00:01 web1 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id
Nov 25 10:02:05 web1 sshd[34]: Received disconnect from 192.0.2.10 port 41542:11: disconnected by user
Nov 25 10:02:05 web1 sshd[34]: Disconnected from 192.0.2.10 port 41542
Nov 25 10:02:05 web1 sshd[28]: pam_unix(sshd:session): session closed for user alice
"""


@pytest.mark.parametrize(
    ("log", "monitor", "child", "program"),
    [
        (OPENSSH_92, 28, 34, "sshd"),
        (OPENSSH_98, 1200, 1210, "sshd-session"),
        (OPENSSH_74, 28, 34, "sshd"),
    ],
    ids=["openssh-9.2", "openssh-9.8-sshd-session", "openssh-7.4"],
)
def test_login_joins_with_pam_logind_tty_and_logout(
    store: Store, log: str, monitor: int, child: int, program: str
) -> None:
    tracker = SessionTracker(local_host="elsewhere")
    feed(store, tracker, log.splitlines())
    [s] = all_sessions(store)
    assert s["user"] == "alice"
    assert (s["ip"], s["port"], s["method"]) == ("192.0.2.10", 41542, "password")
    assert (s["host"], s["program"], s["pid"], s["child_pid"]) == ("web1", program, monitor, child)
    assert s["opened"] == s["start"] == ts("10:00:00")
    assert s["logind_session"] == "12"
    assert s["tty"] == "pts/0"
    assert s["state"] == "closed"
    assert s["end"] == ts("10:02:05")
    assert s["end"] - s["start"] == 125
    assert s["end_reason"] == "disconnected by user"
    assert s["detail"]["pam_closed"] == ts("10:02:05")
    [c] = commands(store)
    assert c["session_id"] == s["id"]
    assert (c["kind"], c["user"], c["runas"], c["tty"], c["cwd"], c["command"]) == (
        "sudo",
        "alice",
        "root",
        "pts/0",
        "/home/alice",
        "/usr/bin/id",
    )
    # VERBOSE told the TTY before sudo did; otherwise it was learnt from the only session.
    assert c["attribution"] == ("tty" if program == "sshd-session" else "user")
    assert s["commands"] == 1
    assert tracker.open_count() == 0
    assert tracker.open_count() == 0


def test_disconnect_alone_ends_the_session_and_a_late_pam_close_finds_it(store: Store) -> None:
    tracker = SessionTracker(local_host="elsewhere")
    lines = OPENSSH_92.splitlines()
    feed(store, tracker, lines[:9])  # up to "Disconnected from user": PAM's close not yet
    [s] = all_sessions(store)
    assert s["state"] == "closed" and s["end"] == ts("10:02:05")
    feed(store, tracker, lines[9:])
    [s] = all_sessions(store)
    assert s["end"] == ts("10:02:05") and s["detail"]["pam_closed"] == ts("10:02:05")
    assert tracker.open_count() == 0


def test_a_forged_future_line_does_not_drop_a_closing_session_early(store: Store) -> None:
    """A closed session stays findable for CLOSING_GRACE of log time for its last lines
    (PAM's close). That time comes from the batch's last line; a forged line stamped a year
    ahead (any local user can write one in file mode) must not end it at once, or the late
    close finds nothing. Capped by the wall clock, as detection's clean-ups are."""
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)

    def line(t: datetime, text: str) -> str:
        return f"{t.isoformat()} web1 {text}"

    tracker = SessionTracker(local_host="elsewhere")
    feed(
        store,
        tracker,
        [
            line(at, "sshd[28]: Accepted password for alice from 192.0.2.10 port 41542 ssh2"),
            line(
                at,
                "sshd[28]: pam_unix(sshd:session): session opened for user alice(uid=1001) "
                "by (uid=0)",
            ),
            line(
                at + timedelta(seconds=30),
                "sshd[34]: Disconnected from user alice 192.0.2.10 port 41542",
            ),
        ],
    )
    forged = line(
        at + timedelta(days=365),
        "sshd[999]: Failed password for root from 198.51.100.1 port 22 ssh2",
    )
    feed(store, tracker, [forged])
    feed(
        store,
        tracker,
        [
            line(
                at + timedelta(seconds=30),
                "sshd[28]: pam_unix(sshd:session): session closed for user alice",
            )
        ],
    )
    [s] = all_sessions(store)
    assert s["state"] == "closed"
    assert s["detail"]["pam_closed"] == (at + timedelta(seconds=30)).timestamp()


def test_key_login_keeps_key_fingerprint_and_cert(store: Store) -> None:
    tracker = SessionTracker(local_host="elsewhere")
    feed(
        store,
        tracker,
        [
            "Nov 25 10:00:00 web1 sshd[50]: Accepted publickey for deploy from 2001:db8::7 "
            "port 50022 ssh2: ED25519-CERT SHA256:Y2VydGtleQ ID deploy-ci (serial 42) "
            "CA ED25519 SHA256:Y2FrZXk",
        ],
    )
    [s] = all_sessions(store)
    assert (s["user"], s["ip"], s["method"]) == ("deploy", "2001:db8::7", "publickey")
    assert s["key_fp"] == "SHA256:Y2VydGtleQ"
    assert s["detail"]["cert_id"] == "deploy-ci" and s["detail"]["cert_serial"] == 42
    assert s["state"] == "open"


def test_two_factor_login_is_one_session(store: Store) -> None:
    tracker = SessionTracker(local_host="elsewhere")
    feed(
        store,
        tracker,
        [
            "Nov 25 10:00:00 web1 sshd[50]: Accepted publickey for alice from 192.0.2.10 "
            "port 5000 ssh2: ED25519 SHA256:a2V5",
            "Nov 25 10:00:03 web1 sshd[50]: Accepted keyboard-interactive/pam for alice from "
            "192.0.2.10 port 5000 ssh2",
        ],
    )
    [s] = all_sessions(store)
    assert s["method"] == "publickey,keyboard-interactive/pam" and s["key_fp"] == "SHA256:a2V5"
    assert s["state"] == "open"


def test_logind_line_before_sshd_lines_still_joins(store: Store) -> None:
    tracker = SessionTracker(local_host="elsewhere")
    feed(
        store,
        tracker,
        [
            "Nov 25 10:00:00 web1 systemd-logind[311]: New session 99 of user alice.",
            "Nov 25 10:00:01 web1 sshd[28]: Accepted password for alice from 192.0.2.10 port 1 ssh2",
        ],
    )
    assert all_sessions(store)[0]["logind_session"] == "99"


def test_logind_of_a_console_login_is_not_taken(store: Store) -> None:
    tracker = SessionTracker(local_host="elsewhere")
    feed(
        store,
        tracker,
        [
            "Nov 25 10:00:00 web1 sshd[28]: Accepted password for alice from 192.0.2.10 port 1 ssh2",
            # an hour later, alice logs in on the console: not this session's
            "Nov 25 11:00:00 web1 systemd-logind[311]: New session 3 of user alice.",
        ],
    )
    assert all_sessions(store)[0]["logind_session"] is None


def test_logind_removed_ends_a_session_nothing_else_ended(store: Store) -> None:
    tracker = SessionTracker(local_host="elsewhere")
    lines = OPENSSH_92.splitlines()
    feed(store, tracker, [*lines[:3], lines[-1]])
    [s] = all_sessions(store)
    assert s["state"] == "closed" and s["end_reason"] == "logind session removed"


def test_connection_reset_after_login_ends_the_session(store: Store) -> None:
    tracker = SessionTracker(local_host="elsewhere")
    feed(
        store,
        tracker,
        [
            "Nov 25 10:00:00 web1 sshd[28]: Accepted password for alice from 192.0.2.10 port 7 ssh2",
            "Nov 25 10:00:09 web1 sshd[34]: Connection reset by 192.0.2.10 port 7",
        ],
    )
    [s] = all_sessions(store)
    assert s["state"] == "closed" and s["end"] == ts("10:00:09")
    assert s["end_reason"] == "connection reset"


def test_preauth_noise_from_the_same_address_does_not_end_a_session(store: Store) -> None:
    tracker = SessionTracker(local_host="elsewhere")
    feed(
        store,
        tracker,
        [
            "Nov 25 10:00:00 web1 sshd[28]: Accepted password for alice from 192.0.2.10 port 7 ssh2",
            "Nov 25 10:00:03 web1 sshd[40]: Connection closed by authenticating user alice "
            "192.0.2.10 port 7 [preauth]",
            "Nov 25 10:00:04 web1 sshd[41]: Disconnected from user bob 192.0.2.10 port 7",
        ],
    )
    assert all_sessions(store)[0]["state"] == "open"


# ------------------------------------------------------------------------- attribution


def _login(pid: int, port: int, at: str, user: str = "alice", ip: str = "192.0.2.10") -> str:
    return f"Nov 25 {at} web1 sshd[{pid}]: Accepted password for {user} from {ip} port {port} ssh2"


def _sudo(at: str, tty: str | None, cmd: str, user: str = "alice") -> str:
    t = f"TTY={tty} ; " if tty else ""
    return f"Nov 25 {at} web1 sudo:    {user} : {t}PWD=/home/{user} ; USER=root ; COMMAND={cmd}"


def test_sudo_with_two_concurrent_sessions(store: Store) -> None:
    tracker = SessionTracker(local_host="elsewhere")
    feed(
        store,
        tracker,
        [
            _login(100, 5001, "10:00:00"),
            _sudo("10:00:10", "pts/0", "/usr/bin/one"),  # only session 1: learns pts/0
            _login(200, 5002, "10:01:00"),
            _sudo("10:01:10", "pts/1", "/usr/bin/two"),  # pts/1 unknown; only session 2 is
            _sudo("10:01:20", "pts/0", "/usr/bin/three"),  # pts/0 is session 1's
            _sudo("10:01:30", None, "/usr/bin/four"),  # no TTY, two sessions: a guess
        ],
    )
    s1, s2 = all_sessions(store)
    assert (s1["tty"], s2["tty"]) == ("pts/0", "pts/1")
    got = [(c["command"], c["session_id"], c["attribution"]) for c in commands(store)]
    assert got == [
        ("/usr/bin/one", s1["id"], "user"),
        ("/usr/bin/two", s2["id"], "user"),
        ("/usr/bin/three", s1["id"], "tty"),
        ("/usr/bin/four", s2["id"], "guess"),  # the newest
    ]
    assert (s1["commands"], s2["commands"]) == (2, 2)


def test_sudo_guess_when_two_sessions_open_before_any_tty_is_known(store: Store) -> None:
    tracker = SessionTracker(local_host="elsewhere")
    feed(
        store,
        tracker,
        [
            _login(100, 5001, "10:00:00"),
            _login(200, 5002, "10:01:00"),
            _sudo("10:01:10", "pts/0", "/usr/bin/id"),
            "Nov 25 10:02:00 web1 sshd[201]: Disconnected from user alice 192.0.2.10 port 5002",
            _sudo("10:03:00", "pts/0", "/usr/bin/later"),  # now only session 1 is open
        ],
    )
    s1, s2 = all_sessions(store)
    got = [(c["command"], c["session_id"], c["attribution"]) for c in commands(store)]
    assert got == [("/usr/bin/id", s2["id"], "guess"), ("/usr/bin/later", s1["id"], "user")]
    assert s2["tty"] is None  # a guess teaches nothing


def test_su_and_sudo_after_su_follow_the_tty(store: Store) -> None:
    tracker = SessionTracker(local_host="elsewhere")
    feed(
        store,
        tracker,
        [
            _login(100, 5001, "10:00:00"),
            "Nov 25 10:00:00 web1 sshd[101]: Starting session: shell on pts/4 for alice from "
            "192.0.2.10 port 5001 id 0",
            _login(300, 6001, "10:00:30", user="bob", ip="192.0.2.99"),
            "Nov 25 10:00:40 web1 su: (to bob) alice on pts/4",
            # bob's sudo on alice's terminal: alice's session (bob's own has another TTY)
            _sudo("10:00:50", "pts/4", "/usr/bin/whoami", user="bob"),
            "Nov 25 10:00:55 web1 su: FAILED SU (to root) alice on pts/4",
        ],
    )
    alice, bob = all_sessions(store)
    got = [(c["kind"], c["session_id"], c["attribution"], c["runas"]) for c in commands(store)]
    assert got == [
        ("su", alice["id"], "tty", "bob"),
        ("sudo", alice["id"], "tty", "root"),
        ("su_failure", alice["id"], "tty", "root"),
    ]
    assert bob["commands"] == 0


def test_sudo_with_no_session_is_kept_unattributed(store: Store) -> None:
    tracker = SessionTracker(local_host="elsewhere")
    feed(store, tracker, [_sudo("10:00:00", "pts/0", "/usr/bin/id", user="carol")])
    [c] = commands(store)
    assert c["session_id"] is None and c["attribution"] is None and c["user"] == "carol"
    assert tracker.stats["unattributed_commands"] == 1


def test_sudo_failure_reason_is_kept(store: Store) -> None:
    tracker = SessionTracker(local_host="elsewhere")
    feed(
        store,
        tracker,
        [
            _login(100, 5001, "10:00:00"),
            "Nov 25 10:00:10 web1 sudo:    alice : 3 incorrect password attempts ; TTY=pts/0 ; "
            "PWD=/home/alice ; USER=root ; COMMAND=/bin/bash",
        ],
    )
    [c] = commands(store)
    assert c["kind"] == "sudo_failure" and json.loads(c["detail"])["reason"] == (
        "3 incorrect password attempts"
    )


SFTP_DIR = "/srv/upload"
SFTP = [
    _login(49, 41552, "10:00:00"),
    "Nov 25 10:00:00 web1 sshd[49]: pam_unix(sshd:session): session opened for user alice(uid=1001) by (uid=0)",
    "Nov 25 10:00:01 web1 internal-sftp[56]: session opened for local user alice from [192.0.2.10]",
    "Nov 25 10:00:01 web1 internal-sftp[56]: sent status No such file",
    f'Nov 25 10:00:02 web1 internal-sftp[56]: open "{SFTP_DIR}/up.bin" flags WRITE,CREATE,TRUNCATE mode 0644',
    f'Nov 25 10:00:03 web1 internal-sftp[56]: close "{SFTP_DIR}/up.bin" bytes read 0 written 12345',
    f'Nov 25 10:00:04 web1 internal-sftp[56]: open "{SFTP_DIR}/up.bin" flags READ mode 0666',
    f'Nov 25 10:00:05 web1 internal-sftp[56]: close "{SFTP_DIR}/up.bin" bytes read 12345 written 0',
    f'Nov 25 10:00:06 web1 internal-sftp[56]: opendir "{SFTP_DIR}"',
    f'Nov 25 10:00:06 web1 internal-sftp[56]: closedir "{SFTP_DIR}"',
    f'Nov 25 10:00:07 web1 internal-sftp[56]: posix-rename old "{SFTP_DIR}/up.bin" new "{SFTP_DIR}/moved.bin"',
    f'Nov 25 10:00:08 web1 internal-sftp[56]: remove name "{SFTP_DIR}/moved.bin"',
    f'Nov 25 10:00:08 web1 internal-sftp[56]: mkdir name "{SFTP_DIR}/d" mode 0777',
    "Nov 25 10:00:09 web1 internal-sftp[56]: session closed for local user alice from [192.0.2.10]",
    "Nov 25 10:00:09 web1 sshd[55]: Received disconnect from 192.0.2.10 port 41552:11: disconnected by user",
    "Nov 25 10:00:09 web1 sshd[55]: Disconnected from user alice 192.0.2.10 port 41552",
    "Nov 25 10:00:09 web1 sshd[49]: pam_unix(sshd:session): session closed for user alice",
]


def test_sftp_operations_join_the_session(store: Store) -> None:
    tracker = SessionTracker(local_host="elsewhere")
    # another session of alice from elsewhere: the address tells them apart
    feed(store, tracker, [_login(30, 7000, "09:59:00", ip="198.51.100.3"), *SFTP])
    other, s = all_sessions(store)
    got = [
        (t["session_id"], t["op"], t["path"], t["new_path"], t["bytes_read"], t["bytes_written"])
        for t in transfers(store)
    ]
    i = s["id"]
    assert got == [
        (i, "upload", f"{SFTP_DIR}/up.bin", None, 0, 12345),
        (i, "download", f"{SFTP_DIR}/up.bin", None, 12345, 0),
        (i, "rename", f"{SFTP_DIR}/up.bin", f"{SFTP_DIR}/moved.bin", None, None),
        (i, "remove", f"{SFTP_DIR}/moved.bin", None, None, None),
        (i, "mkdir", f"{SFTP_DIR}/d", None, None, None),
    ]
    assert {t["attribution"] for t in transfers(store)} == {"user"}
    assert (s["transfers"], s["bytes_up"], s["bytes_down"]) == (5, 12345, 12345)
    [sftp] = s["detail"]["sftp"]
    assert sftp["end_seq"] > sftp["seq"]
    assert {k: v for k, v in sftp.items() if "seq" not in k} == {
        "pid": 56,
        "start": ts("10:00:01"),
        "end": ts("10:00:09"),
        "program": "internal-sftp",
        "how": "user",
    }
    assert other["transfers"] == 0 and other["state"] == "open"


def test_sftp_verbose_subsystem_line_picks_the_right_one_of_two_sessions(store: Store) -> None:
    tracker = SessionTracker(local_host="elsewhere")
    feed(
        store,
        tracker,
        [
            _login(100, 5001, "10:00:00"),
            "Nov 25 10:00:00 web1 sshd[101]: Starting session: shell on pts/0 for alice from "
            "192.0.2.10 port 5001 id 0",
            _login(200, 5002, "10:00:05"),
            "Nov 25 10:00:05 web1 sshd[201]: Starting session: subsystem 'sftp' for alice from "
            "192.0.2.10 port 5002 id 0",
            _login(300, 5003, "10:00:06"),  # newest, but not the one that asked for sftp
            "Nov 25 10:00:06 web1 internal-sftp[202]: session opened for local user alice "
            "from [192.0.2.10]",
            'Nov 25 10:00:07 web1 internal-sftp[202]: remove name "/tmp/x"',
        ],
    )
    [t] = transfers(store)
    assert t["session_id"] == all_sessions(store)[1]["id"] and t["attribution"] == "user"


def test_sftp_with_two_candidate_sessions_is_a_guess(store: Store) -> None:
    tracker = SessionTracker(local_host="elsewhere")
    feed(
        store,
        tracker,
        [
            _login(100, 5001, "10:00:00"),
            _login(200, 5002, "10:00:05"),
            "Nov 25 10:00:06 web1 sftp-server[202]: session opened for local user alice "
            "from [192.0.2.10]",
            'Nov 25 10:00:07 web1 sftp-server[202]: remove name "/tmp/x"',
        ],
    )
    [t] = transfers(store)
    assert t["session_id"] == all_sessions(store)[1]["id"] and t["attribution"] == "guess"


def test_sftp_lines_of_an_unknown_process_are_kept_unattributed(store: Store) -> None:
    tracker = SessionTracker(local_host="elsewhere")
    feed(store, tracker, [f'Nov 25 10:00:08 web1 internal-sftp[77]: remove name "{SFTP_DIR}/x"'])
    [t] = transfers(store)
    assert t["session_id"] is None and t["op"] == "remove" and t["pid"] == 77


def _exec(at: str, ses: int | None, tty: str | None, argv: list[str], user: str = "alice") -> Event:
    detail: dict[str, Any] = {"auid": 1001, "exe": argv[0], "argv": argv, "cwd": "/home/alice"}
    if ses is not None:
        detail["ses"] = ses
    if tty is not None:
        detail["tty"] = tty
    return Event(
        datetime.fromtimestamp(ts(at), UTC), "web1", "audit", 9000, Kind.EXEC, user, detail=detail
    )


def test_exec_events_are_attributed_by_audit_session(store: Store) -> None:
    tracker = SessionTracker(local_host="elsewhere")
    feed(
        store,
        tracker,
        [
            _login(100, 5001, "10:00:00"),
            "Nov 25 10:00:00 web1 sshd[101]: Starting session: shell on pts/0 for alice from "
            "192.0.2.10 port 5001 id 0",
            _login(200, 5002, "10:00:05"),
        ],
    )
    feed(
        store,
        tracker,
        [
            _exec("10:00:10", 7, "pts0", ["/usr/bin/ls", "-l"]),  # pts/0: session 1; binds ses 7
            _exec("10:00:11", 7, None, ["/usr/bin/cat", "/etc/hostname"]),  # by ses alone
            _exec("10:00:12", None, None, ["/usr/bin/true"]),  # nothing to go on: a guess
        ],
    )
    s1, s2 = all_sessions(store)
    assert s1["audit_ses"] == 7
    got = [(c["command"], c["session_id"], c["attribution"], c["cwd"]) for c in commands(store)]
    assert got == [
        ("/usr/bin/ls -l", s1["id"], "tty", "/home/alice"),
        ("/usr/bin/cat /etc/hostname", s1["id"], "ses", "/home/alice"),
        ("/usr/bin/true", s2["id"], "guess", "/home/alice"),
    ]


def test_attacker_text_cannot_pose_as_a_verbose_line(store: Store) -> None:
    tracker = SessionTracker(local_host="elsewhere")
    feed(
        store,
        tracker,
        [
            _login(100, 5001, "10:00:00"),
            # a PTR name is attacker-controlled and lands in an ignored line
            "Nov 25 10:00:01 web1 sshd[555]: reverse mapping checking getaddrinfo for "
            "x.sshd[101]: Starting session: shell on pts/9 for alice from 192.0.2.10 port 5001 "
            "id 0 [198.51.100.7] failed.",
        ],
    )
    assert all_sessions(store)[0]["tty"] is None


# ------------------------------------------------------------------------- persistence


def test_open_sessions_survive_a_restart(tmp_path: Path) -> None:
    lines = OPENSSH_92.splitlines()
    st = Store(tmp_path)
    st.open()
    feed(st, SessionTracker(local_host="elsewhere"), lines[:4])
    st.close()

    st = Store(tmp_path)
    st.open()
    try:
        tracker = SessionTracker(local_host="elsewhere")
        assert tracker.load(st.conn) == 1
        feed(st, tracker, lines[4:])
        [s] = all_sessions(st)
        assert s["state"] == "closed" and s["logind_session"] == "12"
        assert s["end"] - s["start"] == 125
        [c] = commands(st)
        assert c["session_id"] == s["id"]
    finally:
        st.close()


def test_sftp_process_survives_a_restart(tmp_path: Path) -> None:
    st = Store(tmp_path)
    st.open()
    feed(st, SessionTracker(local_host="elsewhere"), SFTP[:4])
    st.close()
    st = Store(tmp_path)
    st.open()
    try:
        tracker = SessionTracker(local_host="elsewhere")
        tracker.load(st.conn)
        feed(st, tracker, SFTP[4:])
        [s] = all_sessions(st)
        assert s["transfers"] == 5 and s["state"] == "closed"
    finally:
        st.close()


def test_a_rolled_back_batch_leaves_no_trace_in_the_index(store: Store) -> None:
    tracker = SessionTracker(local_host="elsewhere")
    with pytest.raises(RuntimeError), store.transaction() as conn:
        tracker.apply(conn, parse([_login(100, 5001, "10:00:00")]))
        raise RuntimeError("disk full, say")
    tracker.invalidate()  # what the pipeline does when a commit fails
    feed(store, tracker, [_sudo("10:00:10", "pts/0", "/usr/bin/id")])
    assert all_sessions(store) == []
    assert tracker.open_count() == 0
    assert commands(store)[0]["session_id"] is None


def test_a_tracker_bug_does_not_stop_the_batch(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = SessionTracker(local_host="elsewhere")

    def boom(self: SessionTracker, conn: Any, ev: Event) -> None:
        raise KeyError("bug")

    monkeypatch.setitem(audit_tracker._HANDLERS, Kind.SUDO, boom)
    feed(store, tracker, [_login(100, 5001, "10:00:00"), _sudo("10:00:10", "pts/0", "/x")])
    assert tracker.stats["errors"] == 1
    assert len(all_sessions(store)) == 1


def test_pipeline_writes_the_trail_in_the_batch_transaction(tmp_path: Path) -> None:
    """The real Pipeline: events, trail and positions in one commit."""
    st = Store(tmp_path)
    st.open()
    try:
        tracker = SessionTracker(local_host="elsewhere")
        tracker.load(st.conn)
        pipe = Pipeline(st, Parser(zone=UTC), sessions=tracker)
        lines = [Line(x, "test") for x in (*OPENSSH_98.splitlines(), *SFTP)]
        asyncio.run(pipe._handle(lines))  # type: ignore[arg-type]
        s98, ssftp = all_sessions(st)
        assert s98["tty"] == "pts/0" and s98["child_pid"] == 1210  # VERBOSE lines reached it
        assert ssftp["transfers"] == 5
        n_events = st.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        assert n_events == pipe.events > 0
    finally:
        st.close()


# ------------------------------------------------------------------------- lost sessions


def test_session_lost_after_the_configured_age_and_corrected_by_a_late_end(store: Store) -> None:
    tracker = SessionTracker(local_host="elsewhere", lost_after=7 * 86400)
    feed(store, tracker, [_login(100, 5001, "10:00:00"), _sudo("10:30:00", None, "/x")])
    assert tracker.sweep(store.conn, now=ts("10:30:00") + 6 * 86400) == 0
    assert tracker.sweep(store.conn, now=ts("10:30:00") + 7 * 86400 + 1) == 1
    [s] = all_sessions(store)
    assert s["state"] == "lost"
    assert s["end"] == ts("10:30:00")  # last seen alive: a lower bound
    assert "7 days" in s["end_reason"]
    assert tracker.open_count() == 0
    # the index is gone, but the store still knows: a late disconnect gives the real end
    feed(
        store,
        tracker,
        ["Nov 25 11:00:00 web1 sshd[101]: Disconnected from user alice 192.0.2.10 port 5001"],
    )
    [s] = all_sessions(store)
    assert s["state"] == "closed" and s["end"] == ts("11:00:00")
    assert "was_lost" in s["detail"]


def test_pid_reused_by_a_new_login_loses_the_old_session(store: Store) -> None:
    tracker = SessionTracker(local_host="elsewhere")
    feed(store, tracker, [_login(100, 5001, "10:00:00"), _login(100, 5009, "12:00:00")])
    old, new = all_sessions(store)
    assert old["state"] == "lost" and "reused" in old["end_reason"]
    assert new["state"] == "open"


def _fake_sshd(tmp_path: Path) -> subprocess.Popen[bytes]:
    """A real process whose name (comm) is sshd."""
    exe = tmp_path / "sshd"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", exe)
    return subprocess.Popen([str(exe), "300"])


def test_session_lost_when_its_sshd_pid_is_gone(store: Store, tmp_path: Path) -> None:
    if not audit_proc.proc_visible():
        pytest.skip("/proc does not show other processes here")
    host = socket.gethostname().split(".")[0]
    proc = _fake_sshd(tmp_path)
    try:
        tracker = SessionTracker(check_pids=True)
        start = datetime.now(UTC).replace(microsecond=0)
        ev = parse([_login(proc.pid, 5001, "10:00:00")])[0]
        ev.host, ev.ts = host, start
        feed(store, tracker, [ev])
        # alive (and named sshd): stays open
        assert tracker.sweep(store.conn, now=start.timestamp() + 120) == 0
        assert audit_proc.pid_gone(proc.pid) is False
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert audit_proc.pid_gone(proc.pid) is True
    # in its first minute a session is never judged by its pid
    assert tracker.sweep(store.conn, now=start.timestamp() + 10) == 0
    assert tracker.sweep(store.conn, now=start.timestamp() + 120) == 1
    [s] = all_sessions(store)
    assert s["state"] == "lost" and f"pid {proc.pid} is gone" in s["end_reason"]


def test_a_failed_sweep_changes_nothing_and_the_next_one_starts_from_the_store(
    store: Store,
) -> None:
    """The sweep's own transaction (store/sessions.py immediate_transaction): an error half
    way rolls back what it wrote and makes the tracker reload its index, so the sessions it
    had already marked lost in memory are judged again."""
    fail = [True]

    def probe(pid: int) -> bool:
        if pid == 101 and fail[0]:
            raise RuntimeError("probe broke")
        return True

    tracker = SessionTracker(local_host="web1", check_pids=True, probe=probe)
    feed(store, tracker, [_login(100, 5001, "10:00:00"), _login(101, 5002, "10:00:01")])
    with pytest.raises(RuntimeError):
        tracker.sweep(store.conn, now=ts("10:05:00"))
    assert not store.conn.in_transaction
    assert [s["state"] for s in all_sessions(store)] == ["open", "open"]
    fail[0] = False
    assert tracker.sweep(store.conn, now=ts("10:05:00")) == 2
    assert [s["state"] for s in all_sessions(store)] == ["lost", "lost"]


def test_pid_of_another_process_name_counts_as_gone() -> None:
    # our own pid is alive but not an sshd: the session's process is not there any more
    assert audit_proc.pid_gone(os.getpid()) is True


def test_pids_are_not_checked_for_other_hosts_or_when_disabled(store: Store) -> None:
    checked: list[int] = []

    def probe(pid: int) -> bool:
        checked.append(pid)
        return True

    tracker = SessionTracker(local_host="web1", check_pids=True, probe=probe)
    feed(
        store,
        tracker,
        [
            _login(100, 5001, "10:00:00"),
            "Nov 25 10:00:00 db2 sshd[200]: Accepted password for alice from 192.0.2.10 port 5 ssh2",
        ],
    )
    assert tracker.sweep(store.conn, now=ts("10:05:00")) == 1
    assert checked == [100]  # db2's session is judged by age only
    tracker.check_pids = False
    assert tracker.sweep(store.conn, now=ts("10:06:00")) == 0
    assert checked == [100]


# ------------------------------------------------------------------------- retention


def test_pruning_deletes_in_batches_and_keeps_open_sessions(store: Store) -> None:
    tracker = SessionTracker(local_host="elsewhere")
    feed(store, tracker, [*OPENSSH_92.splitlines(), _login(900, 9000, "11:00:00")])
    conn = store.conn
    ev = parse([_login(1, 1, "10:00:00")])[0]
    conn.executemany(INSERT_EVENT, [event_row(ev)] * 25)
    cutoff = ts("12:00:00")
    assert store_sessions.prune_batch(conn, "events", cutoff, limit=10) == 10
    total = 10
    while (n := store_sessions.prune_batch(conn, "events", cutoff, limit=10)) > 0:
        total += n
    assert total == 25
    assert store_sessions.prune_batch(conn, "commands", cutoff) == 1
    assert store_sessions.prune_batch(conn, "sessions", cutoff) == 1  # the closed one
    [left] = all_sessions(store)
    assert left["state"] == "open"


def test_settings_defaults_and_overrides() -> None:
    class Store_:
        retention_days = 30
        retention = {"events": 10}  # noqa: RUF012

    class Sec:
        lost_after = "2d"
        check_pids = "no"

    class Cfg:
        store = Store_()
        sessions = Sec()

    s = audit_stage.settings_from(Cfg())
    assert s.retention == {"events": 10, "commands": 30, "transfers": 30, "sessions": 30}
    assert s.lost_after == 2 * 86400 and s.check_pids is False
    d = audit_stage.settings_from(object())
    assert d.lost_after == 7 * 86400 and d.check_pids is None and d.enabled
    assert set(d.retention.values()) == {90}


# ------------------------------------------------------------------------- the commands


def local(at: str) -> str:
    """``HH:MM:SS`` of the reference day as the commands print it (local time)."""
    return datetime.fromtimestamp(ts(at)).strftime("%H:%M:%S")


def run_cli(*argv: str) -> tuple[int, str, str]:
    p = argparse.ArgumentParser(prog="sshmonitor")
    sub = p.add_subparsers(dest="command", required=True)
    audit_cli.register(sub)
    args = p.parse_args(list(argv))
    import contextlib

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = args.func(args)
    return rc, out.getvalue(), err.getvalue()


def test_operator_commands(store: Store, tmp_path: Path) -> None:
    tracker = SessionTracker(local_host="elsewhere")
    events = parse([*OPENSSH_92.splitlines(), *SFTP])
    store.conn.executemany(
        INSERT_EVENT, [event_row(e) for e in events if e.kind is not Kind.IGNORED]
    )
    feed(store, tracker, events)
    d = str(tmp_path)

    rc, out, _ = run_cli("sessions", "--state-dir", d, "--since", "2026-11-25T00:00:00+00:00")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID", "USER", "FROM", "METHOD", "START", "END", "(DURATION)", "STATE", "CMDS", "XFERS"
    ]  # fmt: skip
    assert lines[1].split()[1:] == [
        "alice", "192.0.2.10:41552", "password", "2026-11-25", f"{local('10:00:00')}",
        f"{local('10:00:09')}", "(9s)", "closed", "0", "5",
    ]  # fmt: skip
    assert "192.0.2.10:41542" in lines[2] and "(2m 5s)" in lines[2] and "closed" in lines[2]

    rc, out, _ = run_cli("sessions", "--state-dir", d, "--from", "192.0.2.0/24", "--user", "bob")
    assert (rc, out) == (0, "no sessions match\n")

    sid = all_sessions(store)[1]["id"]
    rc, out, _ = run_cli("session", "--state-dir", d, str(sid))
    assert rc == 0
    assert "alice from 192.0.2.10 port 41552" in out
    assert "upload    /srv/upload/up.bin  12345 bytes (12.1 KiB) written" in out
    assert "download  /srv/upload/up.bin  12345 bytes (12.1 KiB) read" in out
    assert "rename    /srv/upload/up.bin -> /srv/upload/moved.bin" in out
    assert "remove    /srv/upload/moved.bin" in out
    assert "logout    disconnected by user; session lasted 9s" in out

    rc, out, _ = run_cli("session", "--state-dir", d, "--json", str(all_sessions(store)[0]["id"]))
    doc = json.loads(out)
    whats = [e["what"] for e in doc["timeline"]]
    assert whats == ["login", "pam", "sudo", "logout"]
    assert doc["session"]["duration_seconds"] == 125

    rc, out, _ = run_cli("events", "--state-dir", d, "--json", "--kind", "auth_success,sudo")
    got = [json.loads(x) for x in out.splitlines()]
    assert [g["kind"] for g in got] == ["auth_success", "auth_success", "sudo"]  # by time
    want = [event_json(e) for e in events if e.kind in (Kind.AUTH_SUCCESS, Kind.SUDO)]
    want.sort(key=lambda e: e["ts"])
    assert got == json.loads(json.dumps(want, default=str))

    rc, out, _ = run_cli("events", "--state-dir", d, "--ip", "192.0.2.10", "--limit", "2")
    assert rc == 0 and len(out.splitlines()) == 2 and "disconnect" in out

    rc, _, err = run_cli("session", "--state-dir", d, "999")
    assert rc == 1 and "no session 999" in err
    rc, _, err = run_cli("sessions", "--state-dir", str(tmp_path / "nope"))
    assert rc == 1 and "no database" in err


def test_commands_filter_by_address_network_time_and_state(store: Store, tmp_path: Path) -> None:
    """The filters whose SQL moved to store/sessions.py: one address (also IPv4-mapped), a
    network resolved against the stored addresses, --active, --until, a bad address."""
    tracker = SessionTracker(local_host="elsewhere")
    events = parse([*OPENSSH_92.splitlines(), *SFTP])
    stored = [e for e in events if e.kind is not Kind.IGNORED]
    store.conn.executemany(INSERT_EVENT, [event_row(e) for e in stored])
    feed(store, tracker, events)
    d = str(tmp_path)

    def ids(*argv: str) -> list[int]:
        rc, out, err = run_cli("sessions", "--state-dir", d, "--json", *argv)
        assert rc == 0, err
        return [json.loads(x)["id"] for x in out.splitlines()]

    everyone = ids()
    assert len(everyone) == 2
    assert ids("--from", "192.0.2.10") == everyone
    assert ids("--from", "::ffff:192.0.2.10") == everyone
    assert ids("--from", "192.0.2.0/24") == everyone
    assert ids("--from", "198.51.100.0/24") == []
    assert ids("--from", "2001:db8::/32") == []
    assert ids("--active") == []
    assert ids("--until", "2026-11-24T00:00:00+00:00") == []
    assert ids("--limit", "1") == everyone[:1]

    def n_events(*argv: str) -> int:
        rc, out, err = run_cli("events", "--state-dir", d, "--json", *argv)
        assert rc == 0, err
        return len(out.splitlines())

    with_ip = [e for e in stored if e.ip is not None and str(e.ip) == "192.0.2.10"]
    assert with_ip
    assert n_events("--ip", "192.0.2.0/24") == len(with_ip)
    assert n_events("--ip", "192.0.2.10") == len(with_ip)
    assert n_events("--ip", "10.0.0.0/8") == 0
    assert n_events("--user", "alice", "--until", "2026-11-24T00:00:00+00:00") == 0

    rc, _, err = run_cli("sessions", "--state-dir", d, "--from", "not-an-address")
    assert rc == 1 and "is not an IP address or network" in err
    # times are read by sshmonitord/timefmt.py, as by every other command
    assert ids("--since", "now") == []
    rc, _, err = run_cli("events", "--state-dir", d, "--since", "yesterday")
    assert rc == 1 and "'yesterday' is neither a duration" in err and "Traceback" not in err


# ------------------------------------------------------------------------- the daemon


def _db_rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    import sqlite3

    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return []
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.Error:
        return []
    finally:
        conn.close()


def _wait_rows(db: Path, sql: str, want: list[tuple[Any, ...]], timeout: float = 15) -> None:
    import time

    deadline = time.monotonic() + timeout
    got: list[tuple[Any, ...]] = []
    while time.monotonic() < deadline:
        got = _db_rows(db, sql)
        if got == want:
            return
        time.sleep(0.1)
    raise AssertionError(f"{sql}: {got} != {want}")


def test_daemon_keeps_a_session_open_across_a_restart(tmp_path: Path, daemon_factory: Any) -> None:
    """The real daemon: a login read before a restart is closed by a logout read after it,
    and `sshmonitor status` reports the tracker."""
    import time

    t0 = time.time() - 600

    def stamp(offset: float) -> str:
        return datetime.fromtimestamp(t0 + offset).strftime("%b %d %H:%M:%S")

    log = tmp_path / "auth.log"
    log.write_text(
        f"{stamp(0)} web1 sshd[28]: Accepted password for alice from 192.0.2.10 port 41542 ssh2\n"
        f"{stamp(0)} web1 sshd[28]: pam_unix(sshd:session): session opened for user alice(uid=1001) by (uid=0)\n"
        f"{stamp(5)} web1 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id\n"
    )
    conf = f"sources: {{mode: file, files: [{log}], start_at: beginning, poll_interval: 200ms}}\n"
    d = daemon_factory(conf)
    d.wait_log("sshmonitord started")
    db = d.state_dir / "sshmonitor.db"
    sql = "SELECT user, state, commands FROM sessions"
    _wait_rows(db, sql, [("alice", "open", 1)])
    st = json.loads(d.cli("status", "--socket", str(d.socket_path), "--json").stdout)
    stage = next(s for s in st["stages"] if s["name"] == "sessions")
    assert stage["summary"] == "1 open session" and stage["stats"]["started"] == 1
    assert "open session" not in st["status"]  # not mixed into the sources' status line
    d.signal(signal.SIGTERM)
    assert d.proc.wait(timeout=15) == 0

    with open(log, "a") as fh:
        fh.write(
            f"{stamp(65)} web1 sshd[34]: Received disconnect from 192.0.2.10 port 41542:11: disconnected by user\n"
            f"{stamp(65)} web1 sshd[34]: Disconnected from user alice 192.0.2.10 port 41542\n"
            f"{stamp(65)} web1 sshd[28]: pam_unix(sshd:session): session closed for user alice\n"
        )
    d2 = daemon_factory(conf)
    d2.wait_log("sshmonitord started")
    _wait_rows(
        db,
        "SELECT user, state, commands, end - start, child_pid FROM sessions",
        [("alice", "closed", 1, 65.0, 34)],
    )
    d2.signal(signal.SIGTERM)
    assert d2.proc.wait(timeout=15) == 0


# ------------------------------------------------------------------------- auditd


AUDIT_START = (
    "type=USER_START msg=audit(1732483540.060:4094): pid=2210 uid=0 auid=1000 ses=7 "
    'subj=unconfined msg=\'op=PAM:session_open grantors=pam_unix acct="alice" '
    'exe="/usr/sbin/sshd" hostname=203.0.113.5 addr=203.0.113.5 terminal=ssh res=success\''
)
AUDIT_END = (
    AUDIT_START.replace("USER_START", "USER_END")
    .replace("1732483540.060:4094", "1732483650.505:4170")
    .replace("session_open", "session_close")
)


def _audit_exec(epoch: str, serial: int, ses: int, auid: int, tty: str, argv: list[str]) -> str:
    args = " ".join(f'a{i}="{a}"' for i, a in enumerate(argv))
    m = f"msg=audit({epoch}:{serial})"
    return (
        f"type=SYSCALL {m}: arch=c000003e syscall=59 success=yes exit=0 a0=1 a1=2 a2=3 a3=8 "
        f"items=1 ppid=2211 pid={serial} auid={auid} uid={auid} gid={auid} euid={auid} "
        f"suid={auid} fsuid={auid} egid={auid} sgid={auid} fsgid={auid} tty={tty} ses={ses} "
        f'comm="{argv[0]}" exe="/usr/bin/{argv[0]}" subj=unconfined key="sshmon_exec"\n'
        f"type=EXECVE {m}: argc={len(argv)} {args}\n"
        f'type=CWD {m}: cwd="/home/alice"'
    )


def test_auditd_commands_join_by_audit_session_across_sources(store: Store) -> None:
    """audit.log and auth.log are two sources: auditd's records of a login may be read
    before auth.log's. Commands whose audit session is not tied yet wait and are claimed;
    lines read after auditd's USER_END still go to the session they happened in."""
    from sshmonitord.parse.audit import parse_audit

    parser = Parser(zone=UTC, reference=datetime(2024, 11, 25, tzinfo=UTC))

    def auth(*lines: str) -> list[Event]:
        return [ev for x in lines if (ev := parser.parse_text(x)) is not None]

    def audit(*texts: str) -> list[Event]:
        return [ev for x in texts if (ev := parse_audit(x)) is not None]

    tracker = SessionTracker(local_host="web1", check_pids=False)
    # audit.log is ahead: the login's USER_START and a first command
    feed(
        store,
        tracker,
        audit(AUDIT_START, _audit_exec("1732483548.123", 4101, 7, 1000, "pts0", ["id"])),
    )
    assert all_sessions(store) == []
    [waiting] = commands(store)
    assert (waiting["session_id"], waiting["audit_ses"], waiting["command"]) == (None, 7, "id")
    # auth.log catches up
    feed(
        store,
        tracker,
        auth(
            "Nov 24 21:25:40 web1 sshd[2210]: Accepted publickey for alice from 203.0.113.5 "
            "port 50000 ssh2: ED25519 SHA256:a2V5",
            "Nov 24 21:25:40 web1 sshd[2210]: pam_unix(sshd:session): session opened for user "
            "alice(uid=1000) by (uid=0)",
            "Nov 24 21:26:00 web1 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; "
            "COMMAND=/usr/bin/systemctl status",
        ),
    )
    [s] = all_sessions(store)
    assert s["audit_ses"] == 7 and s["host"] == "web1"
    feed(
        store,
        tracker,
        audit(
            _audit_exec("1732483551.407", 4102, 7, 1000, "pts0", ["grep", "-r", "x"]),
            # another login's command (ses 9, not tied to anything): waits, never guessed
            _audit_exec("1732483560.000", 4103, 9, 1001, "pts3", ["ls"]),
            AUDIT_END,
        ),
    )
    # auth.log's last lines, read after auditd's USER_END
    feed(
        store,
        tracker,
        auth(
            "Nov 24 21:27:29 web1 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; "
            "COMMAND=/usr/bin/id",
            "Nov 24 21:27:30 web1 sshd[2215]: Disconnected from user alice 203.0.113.5 port 50000",
            "Nov 24 21:27:30 web1 sshd[2210]: pam_unix(sshd:session): session closed for user alice",
        ),
    )
    [s] = all_sessions(store)
    got = [
        (c["kind"], c["command"], c["session_id"], c["attribution"], c["audit_ses"])
        for c in commands(store)
    ]
    assert got == [
        ("exec", "id", s["id"], "ses", 7),  # claimed when auth.log caught up
        ("sudo", "/usr/bin/systemctl status", s["id"], "user", None),
        ("exec", "grep -r x", s["id"], "ses", 7),
        ("exec", "ls", None, None, 9),
        ("sudo", "/usr/bin/id", s["id"], "tty", None),
    ]
    assert s["commands"] == 4
    assert s["state"] == "closed" and int(s["end"] - s["start"]) == 110  # USER_END
    assert tracker.open_count() == 0


def test_auditd_commands_read_after_the_session_closed_still_join(store: Store) -> None:
    """auth.log ahead this time: the session is over (and, later, out of the index) when
    auditd's records of what ran in it are read."""
    from sshmonitord.parse.audit import parse_audit

    parser = Parser(zone=UTC, reference=datetime(2024, 11, 25, tzinfo=UTC))
    tracker = SessionTracker(local_host="web1", check_pids=False)
    feed(store, tracker, [parse_audit(AUDIT_START)])  # type: ignore[list-item]
    feed(
        store,
        tracker,
        [
            ev
            for x in (
                "Nov 24 21:25:40 web1 sshd[2210]: Accepted publickey for alice from "
                "203.0.113.5 port 50000 ssh2: ED25519 SHA256:a2V5",
                "Nov 24 21:27:30 web1 sshd[2215]: Disconnected from user alice 203.0.113.5 "
                "port 50000",
                "Nov 24 21:27:30 web1 sshd[2210]: pam_unix(sshd:session): session closed for "
                "user alice",
            )
            if (ev := parser.parse_text(x)) is not None
        ],
    )
    first = parse_audit(_audit_exec("1732483548.123", 4101, 7, 1000, "pts0", ["id"]))
    feed(store, tracker, [first])  # type: ignore[list-item]
    # much later (the session long out of the index), a straggler of the same login
    late = parse_audit(_audit_exec("1732483600.000", 4102, 7, 1000, "pts0", ["uptime"]))
    tracker._expire_closing(1732483650.0 + 3600)
    assert not tracker.open
    feed(store, tracker, [late])  # type: ignore[list-item]
    [s] = all_sessions(store)
    got = [(c["command"], c["session_id"], c["attribution"]) for c in commands(store)]
    assert got == [("id", s["id"], "ses"), ("uptime", s["id"], "ses")]
    assert s["commands"] == 2 and s["state"] == "closed"
