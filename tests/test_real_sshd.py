"""Real logins against a real OpenSSH server; the parser must read the real auth.log right.

Each test starts its own sshd + rsyslogd (tests/realsshd.py), makes real ``ssh``/``sftp``
connections and parses every line of the resulting classic-format auth.log. ``UsePAM yes``
(pam_unix lines, but ~3 s per failed password) only where PAM lines are asserted.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from sshmonitord.events import Event, Kind
from sshmonitord.parse import Parser
from sshmonitord.parse.prefix import load_zone

if TYPE_CHECKING:
    from realsshd import RealSshd

pytest_plugins = ["realsshd"]  # the real_sshd and real_sshd_factory fixtures
pytestmark = pytest.mark.real

LOCALHOST = ip_address("127.0.0.1")
Factory = Callable[..., "RealSshd"]

# Real messages this machine's sshd/PAM writes that the parser does not know yet. A line
# matching one of these makes test_every_real_line_is_recognized xfail (listing the lines);
# any *other* unrecognized line fails it. Remove entries as the parser learns them.
KNOWN_GAPS: list[re.Pattern[str]] = []


def parse_log(path: Path) -> tuple[list[Event], Parser]:
    """Every line of a real log through a fresh Parser (the machine's zone, reference now)."""
    parser = Parser(zone=load_zone("local"), reference=datetime.now(UTC))
    events = []
    for line in path.read_text().splitlines():
        ev = parser.parse_text(line)
        if ev is not None:
            events.append(ev)
    return events, parser


def show(events: list[Event]) -> str:
    return "\n".join(
        f"  {e.kind} user={e.user} ip={e.ip} port={e.port} method={e.method} "
        f"fp={e.key_fp} session={e.session} detail={e.detail} | {e.raw}"
        for e in events
    )


def find(events: list[Event], kind: Kind, **want: Any) -> Event:
    """The first event of ``kind`` whose attributes (or ``detail__KEY``) equal ``want``."""
    for ev in events:
        if ev.kind is not kind:
            continue
        ok = True
        for k, v in want.items():
            got = ev.detail.get(k[8:]) if k.startswith("detail__") else getattr(ev, k)
            if got != v:
                ok = False
                break
        if ok:
            return ev
    raise AssertionError(f"no {kind} event with {want} among:\n{show(events)}")


def check_common(events: list[Event], sshd: RealSshd) -> None:
    """What every event from a real local log must satisfy."""
    now = datetime.now(UTC)
    for ev in events:
        # The classic stamp has no zone or year: read in the local zone it must be "now".
        assert abs(ev.ts - now) < timedelta(minutes=5), f"bad ts {ev.ts} for {ev.raw}"
        assert ev.ts.tzinfo is not None
        # rsyslog writes the short host name unless PreserveFQDN is on.
        assert ev.host == os.uname().nodename.split(".")[0], ev.raw
        assert ev.program in ("sshd", "internal-sftp"), ev.raw
        if ev.ip is not None:
            assert ev.ip == LOCALHOST, ev.raw
        if ev.port is not None:
            assert isinstance(ev.port, int) and 0 < ev.port < 65536, ev.raw
            assert ev.port != sshd.port, f"port should be the client's: {ev.raw}"


# ------------------------------------------------------------------------- failures


def test_failed_password_existing_user_with_pam(real_sshd_factory: Factory) -> None:
    sshd = real_sshd_factory(use_pam=True)
    sshd.fail_password(sshd.user, "wrong")
    sshd.wait_for(r"Failed password for sshmtest from 127\.0\.0\.1 port \d+ ssh2$")
    events, _ = parse_log(sshd.auth_log)
    check_common(events, sshd)

    fail = find(events, Kind.AUTH_FAILURE, method="password")
    assert fail.user == "sshmtest"
    assert fail.ip == LOCALHOST
    assert isinstance(fail.port, int)
    assert not fail.detail.get("invalid_user")

    pam = find(events, Kind.AUTH_FAILURE, method="pam")
    assert pam.user == "sshmtest"
    assert pam.ip == LOCALHOST
    assert pam.count == 1
    assert pam.session == fail.session  # same sshd process


def test_failed_password_invalid_user(real_sshd: RealSshd) -> None:
    sshd = real_sshd
    sshd.fail_password("nosuchuser", "wrong")
    sshd.wait_for(r"Failed password for invalid user nosuchuser from 127\.0\.0\.1 port \d+")
    events, _ = parse_log(sshd.auth_log)
    check_common(events, sshd)

    inv = find(events, Kind.INVALID_USER)
    assert inv.user == "nosuchuser"
    assert inv.ip == LOCALHOST
    assert isinstance(inv.port, int)

    fail = find(events, Kind.AUTH_FAILURE, user="nosuchuser")
    assert fail.detail.get("invalid_user") is True
    assert fail.method == "password"
    assert fail.ip == LOCALHOST
    assert fail.port == inv.port


def test_max_auth_tries_exceeded(real_sshd_factory: Factory) -> None:
    sshd = real_sshd_factory(max_auth_tries=1)
    sshd.fail_password(sshd.user, "wrong")
    sshd.wait_for(r"maximum authentication attempts exceeded for sshmtest")
    events, _ = parse_log(sshd.auth_log)
    check_common(events, sshd)
    fail = find(events, Kind.AUTH_FAILURE, method="password", user="sshmtest")
    mx = find(events, Kind.MAX_AUTH_EXCEEDED, user="sshmtest")
    assert mx.ip == LOCALHOST
    assert mx.port == fail.port


# ------------------------------------------------------------------------- successes


def test_password_login_session(real_sshd_factory: Factory) -> None:
    sshd = real_sshd_factory(use_pam=True)  # session lines come from pam_unix
    assert sshd.login_password("echo logged-in").stdout.strip() == "logged-in"
    sshd.wait_for(r"pam_unix\(sshd:session\): session closed for user sshmtest$")
    events, _ = parse_log(sshd.auth_log)
    check_common(events, sshd)

    ok = find(events, Kind.AUTH_SUCCESS)
    assert ok.user == "sshmtest"
    assert ok.method == "password"
    assert ok.ip == LOCALHOST
    assert isinstance(ok.port, int)
    assert ok.key_fp is None

    opened = find(events, Kind.SESSION_OPEN, user="sshmtest")
    closed = find(events, Kind.SESSION_CLOSE, user="sshmtest")
    assert opened.ts <= closed.ts
    # sshd's privileged monitor logs Accepted and both PAM session lines.
    assert ok.session == opened.session == closed.session

    disc = find(events, Kind.DISCONNECT, user="sshmtest")
    assert disc.ip == LOCALHOST
    assert disc.port == ok.port
    assert not any(e.kind is Kind.AUTH_FAILURE for e in events), show(events)


def test_key_login(real_sshd: RealSshd) -> None:
    sshd = real_sshd
    sshd.login_key("true")
    sshd.wait_for(r"Disconnected from user sshmtest 127\.0\.0\.1 port \d+$")
    events, _ = parse_log(sshd.auth_log)
    check_common(events, sshd)

    assert sshd.key_fp.startswith("SHA256:")
    ok = find(events, Kind.AUTH_SUCCESS, method="publickey")
    assert ok.user == "sshmtest"
    assert ok.ip == LOCALHOST
    assert ok.key_fp == sshd.key_fp
    assert ok.detail.get("key_type") == "ED25519"
    assert find(events, Kind.DISCONNECT, user="sshmtest").port == ok.port


def test_sftp_upload(real_sshd: RealSshd) -> None:
    sshd = real_sshd
    size = 54321
    local = sshd.dir / "upload.bin"
    local.write_bytes(os.urandom(size))
    remote = sshd.sftp_dir / "upload.bin"
    sshd.sftp_batch([f"put {local} {remote}"])
    sshd.wait_for(
        r"internal-sftp\[\d+\]: session closed for local user sshmtest from \[127\.0\.0\.1\]$"
    )
    assert remote.stat().st_size == size
    events, _ = parse_log(sshd.auth_log)
    check_common(events, sshd)

    start = find(events, Kind.SFTP_OP, detail__op="session_open")
    assert start.user == "sshmtest"
    assert start.ip == LOCALHOST
    opened = find(events, Kind.SFTP_OPEN, detail__path=str(remote))
    assert "WRITE" in opened.detail["flags"].split(",")
    closed = find(events, Kind.SFTP_CLOSE, detail__path=str(remote))
    assert closed.detail["bytes_written"] == size
    assert closed.detail["bytes_read"] == 0
    assert opened.session == closed.session == start.session
    find(events, Kind.SFTP_OP, detail__op="session_close", user="sshmtest")


# ------------------------------------------------------------------------- the whole log


@pytest.mark.parametrize("log_level", ["INFO", "VERBOSE"])
def test_every_real_line_is_recognized(real_sshd_factory: Factory, log_level: str) -> None:
    """Every scenario above against one PAM server: no line may come out ``unrecognized``,
    and the ISO-stamped copy of the log (all.log) must give the same events."""
    sshd = real_sshd_factory(use_pam=True, log_level=log_level)
    sshd.fail_password(sshd.user, "wrong")
    sshd.fail_password("nosuchuser", "wrong")
    sshd.login_password("true")
    sshd.login_key("true")
    local = sshd.dir / "f.bin"
    local.write_bytes(b"x" * 1000)
    sshd.sftp_batch([f"put {local} {sshd.sftp_dir}/f.bin", f"rm {sshd.sftp_dir}/f.bin"])
    sshd.wait_for(r"internal-sftp\[\d+\]: session closed for local user")
    # The last line of the sftp connection: the monitor's PAM session close.
    lines = sshd.wait_for_count(r"pam_unix\(sshd:session\): session closed", 3)
    assert lines

    events, parser = parse_log(sshd.auth_log)
    check_common(events, sshd)
    assert parser.stats.errors == 0, parser.stats.error_samples
    assert parser.stats.malformed == 0, parser.stats.malformed_samples
    sshd_lines = [x for x in sshd.auth_lines() if re.search(r" (sshd|internal-sftp)\[\d+\]: ", x)]
    assert len(events) == len(sshd_lines)  # every sshd/internal-sftp line gives an event

    iso_events, _ = parse_log(sshd.all_log)
    assert [(e.kind, e.user, e.ip, e.port) for e in iso_events] == [
        (e.kind, e.user, e.ip, e.port) for e in events
    ]
    for a, b in zip(events, iso_events, strict=True):
        assert a.ts == b.ts.replace(microsecond=0), (a.raw, b.raw)

    unrecognized = [e.raw for e in events if e.kind is Kind.UNRECOGNIZED]
    unknown = [x for x in unrecognized if not any(g.search(x) for g in KNOWN_GAPS)]
    assert not unknown, "new unrecognized real lines:\n" + "\n".join(unknown)
    if unrecognized:
        # One sample per message: drop the stamp, host and pid.
        msgs = dict.fromkeys(re.sub(r"^.*? (\S+)\[\d+\]: ", r"\1: ", x) for x in unrecognized)
        pytest.xfail("parser gaps (real messages):\n" + "\n".join(msgs))
