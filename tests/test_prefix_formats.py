"""Syslog prefixes met in the wild (issue #13 section 3): split_syslog and end to end.

Every example line is rewritten with documentation addresses (192.0.2.x, 2001:db8::);
the comment above each names where the shape comes from. Where a shape was found in a
public test corpus, that corpus is named so the source can be checked:

- fail2ban: fail2ban/tests/files/logs/sshd and config/filter.d/common.conf
  (github.com/fail2ban/fail2ban), which carries host-less lines, ``[sshd]`` tags with and
  without a colon, one-digit days with one space and Solaris ``[ID 800047 auth.info]``.
- busybox syslogd (syslogd.c, timestamp_and_log): ``TIMESTAMP HOST FACILITY.LEVEL MSG`` by
  default, ``TIMESTAMP MSG`` (no host, no facility) with ``-S``.
- FreeBSD syslogd ``-v`` / ``-vv`` (usr.sbin/syslogd/syslogd.c, fprintlog): ``<4.6>`` or
  ``<auth.info>`` between the time stamp and the host.
- NetBSD syslogd ``-o syslog`` (format_buffer): RFC 5424 fields on file without ``<PRI>1``.
- AIX syslogd: ``auth|security:info`` after the host.
- OpenWrt logread: ctime stamp with the year, then ``facility.level``, no host.
- journalctl ``-o short`` / ``short-precise`` / ``short-iso`` / ``short-full`` /
  ``short-unix``; macOS ``log show --style syslog``.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sshmonitord.events import Event, Kind
from sshmonitord.parse import PROGRAMS, Parser
from sshmonitord.parse.prefix import OTHER, Prefix, TimeContext, split_syslog

REF = datetime(2026, 6, 20, tzinfo=UTC)
FAIL = "Failed password for root from 192.0.2.1 port 22 ssh2"
FAIL6 = "Failed password for root from 2001:db8::1 port 22 ssh2"
T0 = datetime(2026, 6, 7, 1, 10, 56, tzinfo=UTC)  # the stamp of most lines, read as UTC


def split(line: str, zone: tzinfo = UTC) -> Prefix | None:
    """The split, compared with plain tuples (ts, host, program, pid, message)."""
    tc = TimeContext(zone=zone, reference=REF)
    pre = split_syslog(line, tc, PROGRAMS)
    assert pre is not OTHER, line
    return pre


def event(line: str, zone: tzinfo = UTC) -> Event | None:
    p = Parser(zone=zone, reference=REF)
    ev = p.parse_text(line)
    assert p.stats.errors == 0, p.stats.error_samples
    assert p.stats.malformed == 0, p.stats.malformed_samples
    return ev


# (id, line, ts, host, program, pid, message, address in the message)
CASES = [
    # Debian/RHEL rsyslog RSYSLOG_TraditionalFileFormat: the common case stays as it was.
    ("classic", f"Jun  7 01:10:56 web1 sshd[1234]: {FAIL}", T0, "web1", "sshd", 1234, FAIL),
    ("classic-2digit", f"Jun 17 01:10:56 web1 sshd[1234]: {FAIL}",
     T0 + timedelta(days=10), "web1", "sshd", 1234, FAIL),
    # One-digit day with a single space (fail2ban corpus: "Jun 7 01:10:56 host sshd[5937]").
    ("one-space-day", f"Jun 7 01:10:56 web1 sshd[1234]: {FAIL}",
     T0, "web1", "sshd", 1234, FAIL),
    # journalctl -o short pads the day with a zero.
    ("journal-short", f"Jun 07 01:10:56 web1 sshd-session[1234]: {FAIL}",
     T0, "web1", "sshd-session", 1234, FAIL),
    # journalctl -o short-precise (and syslog-ng frac-digits) adds a fraction.
    ("journal-short-precise", f"Jun 07 01:10:56.123456 web1 sshd[1234]: {FAIL}",
     T0 + timedelta(microseconds=123456), "web1", "sshd", 1234, FAIL),
    ("classic-fraction-ms", f"Jun  7 01:10:56.5 web1 sshd[1234]: {FAIL}",
     T0 + timedelta(milliseconds=500), "web1", "sshd", 1234, FAIL),
    # No host name: busybox syslogd -S; fail2ban corpus "Nov 23 21:50:37 sshd[8148]: ...".
    ("no-host", f"Jun  7 01:10:56 sshd[8148]: {FAIL}", T0, "", "sshd", 8148, FAIL),
    ("no-host-one-space", f"Jun 7 01:10:56 sshd[8148]: {FAIL}", T0, "", "sshd", 8148, FAIL),
    ("no-host-no-pid", f"Jun  7 01:10:56 sshd: {FAIL}", T0, "", "sshd", None, FAIL),
    # A message whose first word ends in a colon was read as program "error" before.
    ("no-host-error-word", "Jun  7 01:10:56 sshd[8148]: error: PAM: Authentication failure"
     " for root from 192.0.2.1", T0, "", "sshd", 8148,
     "error: PAM: Authentication failure for root from 192.0.2.1"),
    # fail2ban corpus: "Mar  3 00:17:22 [sshd]: User root from ..." and "[sshd] User root".
    ("no-host-bracketed", f"Jun  7 01:10:56 [sshd]: {FAIL}", T0, "", "sshd", None, FAIL),
    ("no-host-bracketed-no-colon", f"Jun  7 01:10:56 [sshd] {FAIL}",
     T0, "", "sshd", None, FAIL),
    # Program without pid, and bracketed program, after a host.
    ("no-pid", f"Jun  7 01:10:56 web1 sshd: {FAIL}", T0, "web1", "sshd", None, FAIL),
    ("bracketed", f"Jun  7 01:10:56 web1 [sshd]: {FAIL}", T0, "web1", "sshd", None, FAIL),
    ("bracketed-no-colon", f"Jun  7 01:10:56 web1 [sshd] {FAIL}",
     T0, "web1", "sshd", None, FAIL),
    ("empty-pid", f"Jun  7 01:10:56 web1 sshd[]: {FAIL}", T0, "web1", "sshd", None, FAIL),
    # A host named like a program is a host: it has no colon and no brackets.
    ("host-named-sshd", f"Jun  7 01:10:56 sshd sshd[1234]: {FAIL}",
     T0, "sshd", "sshd", 1234, FAIL),
    ("host-named-sshd-no-pid", f"Jun  7 01:10:56 sshd sshd: {FAIL}",
     T0, "sshd", "sshd", None, FAIL),
    # Host names as rsyslog writes them when DNS fails: IPv4 and IPv6 literals.
    ("host-ipv4", f"Jun  7 01:10:56 192.0.2.10 sshd[1234]: {FAIL6}",
     T0, "192.0.2.10", "sshd", 1234, FAIL6),
    ("host-ipv6", f"Jun  7 01:10:56 2001:db8::10 sshd[1234]: {FAIL}",
     T0, "2001:db8::10", "sshd", 1234, FAIL),
    ("host-ipv6-trailing-colons", f"Jun  7 01:10:56 2001:db8:: sshd[1234]: {FAIL}",
     T0, "2001:db8::", "sshd", 1234, FAIL),
    # Solaris / illumos message tags (fail2ban corpus #9, check_logfiles documentation).
    ("solaris", f"Jun  7 01:10:56 sol11 sshd[1234]: [ID 800047 auth.info] {FAIL}",
     T0, "sol11", "sshd", 1234, FAIL),
    ("solaris-notice", "Jun  7 01:10:56 sol11 sshd[1234]: [ID 702911 auth.notice] "
     + FAIL, T0, "sol11", "sshd", 1234, FAIL),
    ("solaris-iso", f"2026-06-07T01:10:56+00:00 sol11 sshd[1234]: [ID 800047 auth.info] {FAIL}",
     T0, "sol11", "sshd", 1234, FAIL),
    ("solaris-no-host", f"Jun 7 01:10:56 sshd[1234]: [ID 800047 auth.info] {FAIL}",
     T0, "", "sshd", 1234, FAIL),
    # busybox syslogd default: facility.level after the host (Alpine, embedded systems).
    ("busybox", f"Jun  7 01:10:56 alpine authpriv.info sshd[1234]: {FAIL}",
     T0, "alpine", "sshd", 1234, FAIL),
    ("busybox-auth-notice", f"Jun  7 01:10:56 alpine auth.notice sshd[1234]: {FAIL}",
     T0, "alpine", "sshd", 1234, FAIL),
    ("busybox-one-space", f"Jun 7 01:10:56 alpine authpriv.warn sshd: {FAIL}",
     T0, "alpine", "sshd", None, FAIL),
    # AIX syslogd: "auth|security:info" after the host.
    ("aix", f"Jun  7 01:10:56 aixhost auth|security:info sshd[475526]: {FAIL}",
     T0, "aixhost", "sshd", 475526, FAIL),
    # FreeBSD syslogd -v (numeric) and -vv (names): before the host.
    ("freebsd-v", f"Jun  7 01:10:56 <4.6> fbsd sshd[1234]: {FAIL}",
     T0, "fbsd", "sshd", 1234, FAIL),
    ("freebsd-vv", f"Jun  7 01:10:56 <auth.info> fbsd sshd[1234]: {FAIL}",
     T0, "fbsd", "sshd", 1234, FAIL),
    # OpenWrt logread: ctime stamp with a year, facility.level, no host.
    ("openwrt-logread", f"Sun Jun  7 01:10:56 2026 authpriv.info sshd[1234]: {FAIL}",
     T0, "", "sshd", 1234, FAIL),
    ("ctime-host", f"Sun Jun  7 01:10:56 2026 router authpriv.info sshd[1234]: {FAIL}",
     T0, "router", "sshd", 1234, FAIL),
    # rsyslog RSYSLOG_FileFormat (Ubuntu 24.04, Debian 13) and syslog-ng ISO stamps.
    ("iso-offset", f"2026-06-07T03:10:56.123456+02:00 web1 sshd[1234]: {FAIL}",
     T0 + timedelta(microseconds=123456), "web1", "sshd", 1234, FAIL),
    ("iso-z", f"2026-06-07T01:10:56Z web1 sshd[1234]: {FAIL}", T0, "web1", "sshd", 1234, FAIL),
    ("iso-z-millis", f"2026-06-07T01:10:56.250Z web1 sshd[1234]: {FAIL}",
     T0 + timedelta(milliseconds=250), "web1", "sshd", 1234, FAIL),
    ("iso-nanos", f"2026-06-07T01:10:56.123456789-05:00 web1 sshd[1234]: {FAIL}",
     T0 + timedelta(hours=5, microseconds=123456), "web1", "sshd", 1234, FAIL),
    # journalctl -o short-iso before systemd 249 wrote +0200 (no colon).
    ("journal-short-iso-old", f"2026-06-07T03:10:56+0200 web1 sshd[1234]: {FAIL}",
     T0, "web1", "sshd", 1234, FAIL),
    ("iso-no-host", f"2026-06-07T01:10:56.000001Z sshd[1234]: {FAIL}",
     T0 + timedelta(microseconds=1), "", "sshd", 1234, FAIL),
    ("iso-no-pid", f"2026-06-07T01:10:56Z web1 sshd: {FAIL}", T0, "web1", "sshd", None, FAIL),
    # macOS `log show --style syslog`: a space for the T, +HHMM, two spaces after the stamp.
    ("macos-log-show", f"2026-06-06 18:10:56.123456-0700  localhost sshd-session[1234]: {FAIL}",
     T0 + timedelta(microseconds=123456), "localhost", "sshd-session", 1234, FAIL),
    # journalctl -o short-unix.
    ("journal-short-unix", f"{T0.timestamp():.6f} web1 sshd[1234]: {FAIL}",
     T0, "web1", "sshd", 1234, FAIL),
    # journalctl -o short-full (UTC here; named zones below).
    ("journal-short-full", f"Sun 2026-06-07 01:10:56 UTC web1 sshd[1234]: {FAIL}",
     T0, "web1", "sshd", 1234, FAIL),
    # RFC 5424 (rsyslog RSYSLOG_SyslogProtocol23Format, syslog-ng, FreeBSD -O rfc5424).
    ("rfc5424", f"<38>1 2026-06-07T03:10:56.123456+02:00 web1 sshd 1234 - - {FAIL}",
     T0 + timedelta(microseconds=123456), "web1", "sshd", 1234, FAIL),
    ("rfc5424-nil-procid", f"<38>1 2026-06-07T01:10:56Z web1 sshd - - - {FAIL}",
     T0, "web1", "sshd", None, FAIL),
    ("rfc5424-sd", "<38>1 2026-06-07T01:10:56Z web1 sshd-session 1234 - "
     f'[timeQuality tzKnown="1" isSynced="1"][origin ip="192.0.2.200"] {FAIL}',
     T0, "web1", "sshd-session", 1234, FAIL),
    ("rfc5424-sd-escaped", "<38>1 2026-06-07T01:10:56Z web1 sshd 1234 ID47 "
     f'[x@32473 a="q\\"]\\] sshd[9]: fake"] {FAIL}', T0, "web1", "sshd", 1234, FAIL),
    ("rfc5424-nil-host", f"<38>1 2026-06-07T01:10:56Z - sshd 1234 - - {FAIL}",
     T0, "", "sshd", 1234, FAIL),
    ("rfc5424-bom", f"<38>1 2026-06-07T01:10:56Z web1 sshd 1234 - - \ufeff{FAIL}",
     T0, "web1", "sshd", 1234, FAIL),
    # NetBSD syslogd -o syslog: the same fields on file, without <PRI>1.
    ("netbsd-syslog", f"2026-06-07T01:10:56.000000+00:00 nbsd sshd 1234 - - {FAIL}",
     T0, "nbsd", "sshd", 1234, FAIL),
    # A network receiver's <PRI> in front of the other forms.
    ("pri-classic", f"<38>Jun  7 01:10:56 web1 sshd[1234]: {FAIL}",
     T0, "web1", "sshd", 1234, FAIL),
    ("pri-one-space-no-host", f"<86>Jun 7 01:10:56 sshd[1234]: {FAIL}",
     T0, "", "sshd", 1234, FAIL),
    ("pri-iso", f"<38>2026-06-07T01:10:56Z web1 sshd[1234]: {FAIL}",
     T0, "web1", "sshd", 1234, FAIL),
]


@pytest.mark.parametrize(
    ("line", "ts", "host", "program", "pid", "message"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_split(line, ts, host, program, pid, message):
    assert split(line) == (ts, host, program, pid, message)


@pytest.mark.parametrize(
    ("line", "ts", "host", "program", "pid", "message"),
    [c[1:] for c in CASES if c[6].startswith("Failed password")],
    ids=[c[0] for c in CASES if c[6].startswith("Failed password")],
)
def test_end_to_end_auth_failure(line, ts, host, program, pid, message):
    ev = event(line)
    assert ev is not None and ev.kind is Kind.AUTH_FAILURE, ev
    assert (ev.ts, ev.host, ev.program, ev.pid, ev.user) == (ts, host, program, pid, "root")
    want = "2001:db8::1" if "2001:db8::1 port" in message else "192.0.2.1"
    assert ev.ip == ipaddress.ip_address(want)
    assert ev.port == 22


def test_end_to_end_no_host_pam_error():
    ev = event("Jun  7 01:10:56 sshd[8148]: error: PAM: Authentication failure for root"
               " from 192.0.2.1")
    assert ev is not None and ev.kind is Kind.AUTH_FAILURE
    assert (ev.host, ev.pid, ev.ip) == ("", 8148, ipaddress.ip_address("192.0.2.1"))


# ---------------------------------------------------------------- time stamps


def test_one_space_day_and_two_space_day_are_the_same_instant():
    a = split(f"Jun 7 01:10:56 web1 sshd[1]: {FAIL}")
    b = split(f"Jun  7 01:10:56 web1 sshd[1]: {FAIL}")
    assert a is not None and b is not None and a[0] == b[0] == T0


def test_one_space_day_follows_the_zone_and_the_year_rule():
    berlin = ZoneInfo("Europe/Berlin")
    got = split(f"Jun 7 01:10:56 web1 sshd[1]: {FAIL}", zone=berlin)
    assert got is not None and got[0] == datetime(2026, 6, 7, 1, 10, 56, tzinfo=berlin)
    # A December line read in early January belongs to the old year, one space or two.
    tc = TimeContext(zone=UTC, reference=datetime(2027, 1, 2, tzinfo=UTC))
    pre = split_syslog(f"Dec 9 23:00:00 web1 sshd[1]: {FAIL}", tc, PROGRAMS)
    assert pre is not None and pre.ts == datetime(2026, 12, 9, 23, tzinfo=UTC)


def test_short_full_zone_abbreviation():
    berlin = ZoneInfo("Europe/Berlin")
    got = split(f"Sun 2026-06-07 03:10:56 CEST web1 sshd[1]: {FAIL}", zone=berlin)
    assert got is not None and got[0] == T0
    # The abbreviation settles the hour that occurs twice when summer time ends.
    first = split(f"Sun 2026-10-25 02:30:00 CEST web1 sshd[1]: {FAIL}", zone=berlin)
    second = split(f"Sun 2026-10-25 02:30:00 CET web1 sshd[1]: {FAIL}", zone=berlin)
    assert first is not None and second is not None
    assert second[0] - first[0] == timedelta(hours=1)
    # An abbreviation that is not the configured zone's is not guessed at.
    assert split(f"Sun 2026-06-07 01:10:56 PDT web1 sshd[1]: {FAIL}", zone=berlin) is None


def test_openwrt_ctime_uses_the_configured_zone():
    berlin = ZoneInfo("Europe/Berlin")
    got = split(f"Sun Jun  7 03:10:56 2026 authpriv.info sshd[1]: {FAIL}", zone=berlin)
    assert got is not None and got[0] == T0


def test_iso_stamps_keep_their_own_offset_whatever_the_zone():
    tokyo = ZoneInfo("Asia/Tokyo")
    got = split(f"2026-06-07T01:10:56.5+00:00 web1 sshd[1]: {FAIL}", zone=tokyo)
    assert got is not None and got[0] == T0 + timedelta(milliseconds=500)
    assert got[0].tzinfo == UTC
    plus = split(f"2026-06-07T04:10:56+03:00 web1 sshd[1]: {FAIL}")
    assert plus is not None and plus[0] == T0.astimezone(timezone(timedelta(hours=3)))


@pytest.mark.parametrize(
    "line",
    [
        f"Jun 99 01:10:56 web1 sshd[1]: {FAIL}",
        f"Jun 7 25:10:56 web1 sshd[1]: {FAIL}",
        f"Jun 7 01:61:56 sshd[1]: {FAIL}",
        f"Foo  7 01:10:56 web1 sshd[1]: {FAIL}",
        f"Sun Feb 30 01:10:56 2026 authpriv.info sshd[1]: {FAIL}",
        f"2026-06-07T01:10:56 web1 sshd[1]: {FAIL}",  # ISO without a zone: ambiguous
        f"2026-13-07T01:10:56Z web1 sshd[1]: {FAIL}",
        f"Sun 2026-06-07 01:10:56 XYZ web1 sshd[1]: {FAIL}",
        f"Jun  7 01:10:56 web1 {FAIL}",  # no program tag at all
        f"Jun  7 01:10:56 {FAIL}",
        f"Jun  7 01:10:56 web1 foo bar sshd[1]: {FAIL}",
        "Jun  7 01:10:56",
        "Jun  7 01:10:56 ",
        "",
    ],
)
def test_broken_prefixes_stay_malformed(line):
    assert split(line) is None
    p = Parser(zone=UTC, reference=REF)
    assert p.parse_text(line) is None
    assert p.stats.errors == 0


@pytest.mark.parametrize(
    "line",
    [
        "Jun  7 01:10:56 web1 CRON[1]: pam_unix(cron:session): session opened for user root",
        "Jun 7 01:10:56 web1 CRON[1]: pam_unix(cron:session): session opened for user root",
        "Jun  7 01:10:56 CRON[1]: (root) CMD (true)",
        "Jun  7 01:10:56 alpine cron.info crond[1]: USER root pid 2 cmd true",
        "Jun  7 01:10:56 sol11 cron[1]: [ID 702911 cron.info] x",
        "2026-06-07T01:10:56Z web1 kernel: [12.5] x",
        "<38>1 2026-06-07T01:10:56Z web1 CRON 1 - - x",
        "2026-06-07T01:10:56Z web1 CRON 1 - - x",
        "Sun Jun  7 01:10:56 2026 daemon.info dnsmasq[1]: query",
        "Jun  7 01:10:56 web1 sshd(pam_unix)[1]: session opened for user root",
    ],
)
def test_other_programs_are_skipped_cheaply(line):
    tc = TimeContext(zone=UTC, reference=REF)
    assert split_syslog(line, tc, PROGRAMS) is OTHER


# ---------------------------------------------------------------- the host-less rule


def test_host_less_rule():
    """The first word after the stamp is the program tag, with no host, only when it has
    a tag's shape: ``name[pid]:``, ``name:`` followed by a space, or ``[name]``. A host
    name has neither a trailing colon nor brackets, so the two never meet."""
    assert split(f"Jun  7 01:10:56 sshd[1]: sshd sshd[2]: {FAIL}") == (
        T0, "", "sshd", 1, f"sshd sshd[2]: {FAIL}"
    )
    assert split(f"Jun  7 01:10:56 sshd sshd[2]: sshd[3]: {FAIL}") == (
        T0, "sshd", "sshd", 2, f"sshd[3]: {FAIL}"
    )
    # A colon without a following space is no tag's end: IPv6 host literals stay hosts.
    assert split(f"Jun  7 01:10:56 fe80::1 sshd[2]: {FAIL}") == (
        T0, "fe80::1", "sshd", 2, FAIL
    )
    # A facility.level word alone (OpenWrt) is not taken for a host.
    assert split(f"Sun Jun  7 01:10:56 2026 auth.info sshd[2]: {FAIL}") == (
        T0, "", "sshd", 2, FAIL
    )


def test_only_one_solaris_tag_and_only_at_the_start_is_removed():
    assert split("Jun  7 01:10:56 s sshd[1]: [ID 1 auth.info] [ID 2 auth.info] x") == (
        T0, "s", "sshd", 1, "[ID 2 auth.info] x"
    )
    msg = "Invalid user [ID 800047 auth.info] from 192.0.2.5 port 22"
    assert split(f"Jun  7 01:10:56 s sshd[1]: {msg}") == (T0, "s", "sshd", 1, msg)
    # Not the shape of a message id: kept as text.
    msg = "[ID x auth.info] Invalid user a from 192.0.2.5 port 22"
    assert split(f"Jun  7 01:10:56 s sshd[1]: {msg}") == (T0, "s", "sshd", 1, msg)


def test_overlong_pid_is_no_pid():
    got = split(f"Jun 7 01:10:56 sshd[99999999999999999999]: {FAIL}")
    assert got == (T0, "", "sshd", None, FAIL)


# ---------------------------------------------------------------- injection (property tests)

# Prefix forms, each with the host, program and pid it states. The message follows.
FORMS = [
    ("Jun  7 01:10:56 web1 sshd[1234]: ", "web1", "sshd", 1234),
    ("Jun 7 01:10:56 web1 sshd[1234]: ", "web1", "sshd", 1234),
    ("Jun 07 01:10:56.123456 web1 sshd[1234]: ", "web1", "sshd", 1234),
    ("Jun  7 01:10:56 sshd[1234]: ", "", "sshd", 1234),
    ("Jun 7 01:10:56 sshd: ", "", "sshd", None),
    ("Jun  7 01:10:56 [sshd]: ", "", "sshd", None),
    ("Jun  7 01:10:56 [sshd] ", "", "sshd", None),
    ("Jun  7 01:10:56 web1 sshd: ", "web1", "sshd", None),
    ("Jun  7 01:10:56 web1 [sshd]: ", "web1", "sshd", None),
    ("Jun  7 01:10:56 sshd sshd-session[1234]: ", "sshd", "sshd-session", 1234),
    ("Jun  7 01:10:56 sol11 sshd[1234]: [ID 800047 auth.info] ", "sol11", "sshd", 1234),
    ("Jun  7 01:10:56 alpine authpriv.info sshd[1234]: ", "alpine", "sshd", 1234),
    ("Jun  7 01:10:56 aix auth|security:info sshd[1234]: ", "aix", "sshd", 1234),
    ("Jun  7 01:10:56 <auth.info> fbsd sshd[1234]: ", "fbsd", "sshd", 1234),
    ("Sun Jun  7 01:10:56 2026 authpriv.info sshd[1234]: ", "", "sshd", 1234),
    ("2026-06-07T01:10:56.123456+02:00 web1 sshd[1234]: ", "web1", "sshd", 1234),
    ("2026-06-07T01:10:56Z sshd[1234]: ", "", "sshd", 1234),
    ("2026-06-06 18:10:56.123456-0700  localhost sshd-session[1234]: ",
     "localhost", "sshd-session", 1234),
    ("Sun 2026-06-07 01:10:56 UTC web1 sshd[1234]: ", "web1", "sshd", 1234),
    ("1780794656.000000 web1 sshd[1234]: ", "web1", "sshd", 1234),
    ("<38>1 2026-06-07T01:10:56Z web1 sshd 1234 - - ", "web1", "sshd", 1234),
    ("<38>1 2026-06-07T01:10:56Z web1 sshd - - [a b=\"]\"] ", "web1", "sshd", None),
    ("2026-06-07T01:10:56Z nbsd sshd 1234 - - ", "nbsd", "sshd", 1234),
    ("<38>Jun 7 01:10:56 sshd[1234]: ", "", "sshd", 1234),
]

# Prefix-shaped text an attacker may put in a user name or a client banner.
FORGED = [
    " sshd[1]: ",
    "sshd[1]: ",
    "evil sshd[666]: ",
    "[sshd]: ",
    "[sshd] ",
    "sshd: ",
    "[ID 800047 auth.info] ",
    "authpriv.info sshd[9]: ",
    "<auth.info> evil sshd[9]: ",
    "Jun  7 01:10:56 evil sshd[666]: ",
    "Jun 7 01:10:56 sshd[666]: ",
    "2026-06-07T01:10:56Z evil sshd[666]: ",
    "<38>1 2026-06-07T01:10:56Z evil sshd 666 - - ",
    "message repeated 9 times: [ ",
    "\ufeff",
]

# A leading BOM (RFC 5424) and a leading Solaris message id are the only text ever removed.
SOLARIS_TAG = re.compile(r"\ufeff?\[ID [0-9]+ [a-z0-9|]+\.[a-z]+\] ?")

# What sshd writes around attacker text (it always writes the first word itself).
SHAPES = [
    ("Invalid user {u} from 192.0.2.7 port 4242", Kind.INVALID_USER),
    ("Failed password for {u} from 192.0.2.7 port 4242 ssh2", Kind.AUTH_FAILURE),
    ("Failed password for invalid user {u} from 192.0.2.7 port 4242 ssh2", Kind.AUTH_FAILURE),
]

_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"),
    max_size=40,
)
ATTACKER = st.one_of(
    st.sampled_from(FORGED),
    st.builds(lambda a, f, b: a + f + b, _TEXT, st.sampled_from(FORGED), _TEXT),
    st.lists(st.sampled_from(FORGED), min_size=1, max_size=4).map("".join),
    _TEXT,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    form=st.sampled_from(FORMS),
    shape=st.sampled_from(SHAPES),
    u=ATTACKER,
)
def test_forged_prefix_in_the_message_changes_nothing(form, shape, u):
    prefix, host, program, pid = form
    template, kind = shape
    msg = template.format(u=u)
    line = prefix + msg
    tc = TimeContext(zone=UTC, reference=REF)
    pre = split_syslog(line, tc, PROGRAMS)
    assert pre is not None and pre is not OTHER, line
    assert (pre.host, pre.program, pre.pid, pre.message) == (host, program, pid, msg)
    ev = event(line)
    assert ev is not None and (ev.host, ev.program, ev.pid) == (host, program, pid)
    assert ev.kind is kind, (line, ev)
    assert ev.ip == ipaddress.ip_address("192.0.2.7")


@settings(max_examples=300, deadline=None)
@given(form=st.sampled_from(FORMS), msg=st.text(max_size=120))
def test_any_message_keeps_the_prefix_fields(form, msg):
    """Whatever the message (even one opening with a forged tag), the prefix fields are
    the prefix's; only a leading ``[ID n fac.level]`` tag may be removed."""
    prefix, host, program, pid = form
    tc = TimeContext(zone=UTC, reference=REF)
    pre = split_syslog(prefix + msg, tc, PROGRAMS)
    assert pre is not None and pre is not OTHER
    assert (pre.host, pre.program, pre.pid) == (host, program, pid)
    assert msg.endswith(pre.message)
    removed = msg[: len(msg) - len(pre.message)]
    assert removed in ("", "\ufeff") or SOLARIS_TAG.fullmatch(removed), (msg, pre.message)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_random_text_never_raises(text):
    tc = TimeContext(zone=UTC, reference=REF)
    for line in (text, "Jun 7 01:10:56 " + text, "<38>" + text, "Sun Jun  7 01:10:56 " + text):
        split_syslog(line, tc, PROGRAMS)
        split_syslog(line, tc, None)


def test_classic_stamps_every_minute_and_second_and_the_minute_cache_stays_small() -> None:
    """Each "MM:SS" of an hour (a leap second :60 read as :59), across a DST change, against
    datetime's own arithmetic; bad minutes and seconds are refused; the per-minute cache that
    replaced a 3,660-entry table (issue #17: memory) stays bounded over days of stamps."""
    berlin = ZoneInfo("Europe/Berlin")
    ctx = TimeContext(zone=berlin, reference=datetime(2026, 10, 26, 12, tzinfo=UTC))
    for day, hour in ((24, 21), (25, 2), (25, 3)):  # 25 Oct 2026: 03:00 CEST -> 02:00 CET
        base = datetime(2026, 10, day, hour, tzinfo=berlin).astimezone(UTC)
        for mm in range(60):
            for ss in range(61):
                got = ctx.classic(f"Oct {day} {hour:02d}:{mm:02d}:{ss:02d}")
                assert got == base + timedelta(minutes=mm, seconds=min(ss, 59))
    for bad in ("Oct 24 21:60:00", "Oct 24 21:6x:00", "Oct 24 21: 5:00", "Oct 24 21:05:61",
                "Oct 24 21:05:+1", "Oct 24 21:05.00", "Oct 24 21.05:00", "Oct 24 24:00:00"):  # fmt: skip
        assert ctx.classic(bad) is None, bad
    t = datetime(2026, 10, 20, tzinfo=UTC)
    for i in range(5 * 24 * 60):
        ctx.classic((t + timedelta(minutes=i)).strftime("%b %e %H:%M:%S"))
        assert len(ctx._minutes) <= 256
