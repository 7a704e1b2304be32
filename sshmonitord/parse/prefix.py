"""Split a log record into (ts, host, program, pid, message).

Formats: classic syslog (``Nov 24 21:45:48 web1 sshd[1234]: …``, no year and no zone; also
``Nov 4`` with one space, fractions, no host, ``sshd:`` and ``[sshd]`` tags, facility.level
words, Solaris message ids), rsyslog high precision and other ISO 8601 stamps
(``2026-11-24T21:45:48.123456+01:00 web1 sshd[1234]: …``), RFC 5424
(``<38>1 2026-11-24T21:45:48.123Z web1 sshd 1234 - - …``), journalctl's text formats and
journald records. docs/events.md ("Log line prefixes") lists them with examples.

Everything here is pure: the current time never comes from a clock but from
:class:`TimeContext`, which the live daemon advances and ``replay`` sets from the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from sys import intern
from typing import Any, NamedTuple

MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
FUTURE_SLACK = timedelta(days=2)
_MISS: Any = object()  # clock skew and zone confusion, never a whole year
# "SS" → its offset into the minute; a leap second (:60) is read as :59. A busy log has a
# new second on most lines, so this is the common case, not a cache miss. (A table of every
# "MM:SS" was as fast but held 3,660 entries, ~0.45 MB of a ~33 MB daemon.)
_SECONDS = {f"{ss:02d}": timedelta(seconds=min(ss, 59)) for ss in range(61)}
_MINUTES = {f"{mm:02d}": timedelta(minutes=mm) for mm in range(60)}
_MINUTE_CACHE = 256  # minutes remembered per context; logs are nearly in time order


class Prefix(NamedTuple):
    ts: datetime
    host: str
    program: str
    pid: int | None
    message: str


@dataclass
class TimeContext:
    """Zone and reference time for timestamps that carry neither year nor zone.

    The year of a classic syslog stamp is the latest of (reference year - 1, reference year,
    reference year + 1) that is not more than two days after ``reference``. A log running
    across New Year therefore gets December in the old year and January in the new one,
    both live (reference = now) and in replay (reference = the file's modification time).
    """

    zone: tzinfo = UTC
    reference: datetime = field(default_factory=lambda: datetime.now(UTC))
    _cache_key: str = ""
    _cache_val: datetime | None = None
    _hours: dict[str, datetime | None] = field(default_factory=dict)
    _minutes: dict[str, datetime | None] = field(default_factory=dict)

    def set_zone(self, zone: tzinfo) -> None:
        self.zone = zone
        self._cache_key = ""
        self._hours.clear()
        self._minutes.clear()

    def set_reference(self, when: datetime) -> None:
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if abs((when - self.reference).total_seconds()) > 3600:
            self._cache_key = ""  # a cached year may no longer hold
            self._hours.clear()
            self._minutes.clear()
        self.reference = when

    def classic(self, stamp: str) -> datetime | None:
        """``Nov 24 21:45:48`` (or ``Nov  4 …``, ``Nov 4 …``) → aware UTC datetime, or None if
        malformed."""
        if stamp == self._cache_key:
            return self._cache_val
        key = stamp
        if len(stamp) == 14:  # "Nov 4 21:45:48": one space, one digit (only on a cache miss)
            stamp = stamp[:4] + " " + stamp[4:]
        # Year, zone and DST are settled per hour (offsets change on the hour); within it
        # only minutes and seconds are added. A busy log has thousands of lines per hour,
        # and many per minute: the minute's time is remembered, the second's added.
        base = self._minutes.get(stamp[:12], _MISS)
        if base is _MISS:
            base = self._minute_base(stamp)
            if len(self._minutes) >= _MINUTE_CACHE:
                self._minutes.clear()
            self._minutes[stamp[:12]] = base
        offset = _SECONDS.get(stamp[13:15])
        if base is None or offset is None or stamp[12] != ":":
            return None
        val = base + offset
        self._cache_key, self._cache_val = key, val
        return val

    def _minute_base(self, stamp: str) -> datetime | None:
        """``Nov 24 21:45`` → that minute in UTC, or None if malformed."""
        base = self._hours.get(stamp[:9], _MISS)
        if base is _MISS:
            base = self._hour_base(stamp)
            if len(self._hours) > 4096:
                self._hours.clear()
                self._minutes.clear()  # each remembered minute's hour stays remembered
            self._hours[stamp[:9]] = base
        minutes = _MINUTES.get(stamp[10:12])
        if base is None or minutes is None or stamp[9] != ":":
            return None
        return base + minutes

    def _hour_base(self, stamp: str) -> datetime | None:
        month = MONTHS.get(stamp[:3])
        if month is None or stamp[3] != " " or stamp[6] != " ":
            return None
        try:
            day = int(stamp[4:6])
            hh = int(stamp[7:9])
        except ValueError:
            return None
        ref = self.reference
        for year in (ref.year + 1, ref.year, ref.year - 1):
            try:
                local = datetime(year, month, day, hh, 0, 0, tzinfo=self.zone)
            except ValueError:
                continue  # Feb 29 in a non-leap year, or a bad field
            if local - ref <= FUTURE_SLACK:
                return local.astimezone(UTC)
        return None


# Fast paths: the prefixes of nearly every real auth.log, rsyslog's traditional and high
# precision file formats ("Nov 24 21:45:48 web1 sshd[1234]: msg",
# "2026-11-24T21:45:48.1+01:00 web1 sshd[1234]: msg"). One C-level match gives every field
# and the program is checked before any timestamp work. The host may neither start with
# "[" nor end with ":": such a word is the program tag of a line without a host (see
# split_syslog), which the general path below reads. A Solaris message id right after the
# tag is consumed by the same match.
_HOST = r"(?!\[)(\S+)(?<!:)"
_TAG_FAST = r"([^\s\[:|]+)(?:\[(\d*)\])?: ?"
_MSGID_RE = r"\[ID \d{1,10} [a-z0-9|]{1,20}\.[a-z]{1,10}\] ?"
_SOLARIS = f"(?:{_MSGID_RE})?"
_CLASSIC = re.compile(
    r"([A-Z][a-z][a-z] [ \d]?\d \d\d:\d\d:\d\d) " + _HOST + " " + _TAG_FAST + _SOLARIS, re.ASCII
)
# The classic prefix, for Parser.parse_text's own copy of the first branch of split_syslog.
CLASSIC_PREFIX = _CLASSIC
_ISO = re.compile(r"(\d{4}-\d\d-\d\dT\S+) " + _HOST + " " + _TAG_FAST + _SOLARIS, re.ASCII)
_MSGID = re.compile(_MSGID_RE, re.ASCII)  # the same tag, for the other paths

# The general path: any supported time stamp, then
#   [<facility.level> ] [HOST ] [FACILITY.LEVEL ] TAG MESSAGE
# Time stamps: classic with a one- or two-digit day and an optional fraction (journalctl
# -o short-precise, syslog-ng frac-digits); ISO 8601 with "T" or a space, "." or ","
# before the fraction and Z, +HH:MM, +HHMM or +HH (macOS `log show --style syslog`,
# journalctl -o short-iso); ctime with a year (OpenWrt logread); journalctl -o short-full
# (weekday, date, time, zone abbreviation) and -o short-unix (epoch seconds).
_STAMP = re.compile(
    r"(?:(?P<classic>[A-Z][a-z][a-z] [ \d]?\d \d\d:\d\d:\d\d)(?P<frac>\.\d{1,9})?"
    r"|(?P<iso>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d{1,9})?(?:Z|[+-]\d\d(?::?\d\d)?)?)"
    r"|(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?:"
    r"(?P<ctime>[A-Z][a-z][a-z] [ \d]?\d \d\d:\d\d:\d\d \d{4})"
    r"|(?P<full>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,6})?)"
    r" (?P<abbr>[A-Za-z]{1,6}|[+-]\d\d(?:\d\d)?))"
    r"|(?P<unix>\d{9,11})(?P<ufrac>\.\d{1,9})?"
    r") +",
    re.ASCII,
)
_FAC = (
    r"(?:kern|user|mail|daemon|auth|syslog|lpr|news|uucp|cron|authpriv|ftp|ntp|security"
    r"|console|audit|alert|clock|local[0-7])"
)
_LEVEL = r"(?:emerg|panic|alert|crit|err|error|warn|warning|notice|info|debug|none)"
# busybox syslogd "authpriv.info", OpenWrt logread "auth.notice", AIX "auth|security:info".
_FACLEVEL = re.compile(rf"{_FAC}(?:\|{_FAC})*[.:]{_LEVEL} ", re.ASCII)
# FreeBSD syslogd -v "<4.6>" and -vv "<auth.info>", written before the host.
_BSD_VERBOSE = re.compile(rf"<(?:\d{{1,2}}\.\d|{_FAC}\.{_LEVEL})> ", re.ASCII)
# Program tags: "sshd[1234]:", "sshd:", "[sshd]:", "[sshd]". After a host the space after
# the colon may be missing (as in the fast path). As the first word after the stamp (no
# host) a tag must end in ": " or be bracketed, which no host name can be: host names and
# IPv4 addresses contain no colon, an IPv6 address has colons inside ("fe80::1") and a
# trailing colon is never followed by a space.
_TAG = re.compile(r"(?:([^\s\[\]:]+)(?:\[(\d*)\])?:|\[([^\s\[\]:]+)\]:?(?= |$)) ?", re.ASCII)
_TAG_ALONE = re.compile(r"(?:([^\s\[\]:]+)(?:\[(\d*)\])?:|\[([^\s\[\]:]+)\]:?)(?: |$)", re.ASCII)

# Returned by split_syslog for a well-formed line of a program we do not read.
OTHER = Prefix(datetime.min.replace(tzinfo=UTC), "", "", None, "")


def _pid(text: str | None) -> int | None:
    """A process id, or None. Linux pids have at most 7 digits: a longer "pid" is a forged
    tag (``logger -t 'sshd[99999999999999999999]'``), not a process, and must not reach an
    INTEGER column it cannot fit."""
    if text and len(text) <= 10 and text.isascii() and text.isdigit():
        return int(text)
    return None


def _strip_msgid(msg: str) -> str:
    """Solaris/illumos syslog puts ``[ID 800047 auth.info] `` before the message text. Only
    at the very start, where sshd's own words begin (no attacker text can be there), and
    only one: anything after it is the message."""
    if msg.startswith("[ID "):
        m = _MSGID.match(msg)
        if m is not None:
            return msg[m.end() :]
    return msg


def split_syslog(
    text: str, tc: TimeContext, programs: frozenset[str] | None = None
) -> Prefix | None:
    """Split a file line in any supported syslog format.

    Returns None for a line with no recognisable prefix, and :data:`OTHER` for a line from a
    program not in ``programs`` (checked before any timestamp work: most lines of a busy
    auth.log are CRON's).

    A line may carry no host name (busybox syslogd -S, OpenWrt logread, some relays): the
    first word after the time stamp (and after a facility.level word) is then the program
    tag, and ``host`` is ``""``, which means "the machine whose log this is". The word is
    taken for a tag only when it has a tag's shape, ``name[pid]:`` or ``name:`` followed by
    a space, or ``[name]``; a host name never has one, so a host called ``sshd`` stays a
    host. Only the words before the tag are ever looked at: whatever the message holds
    (attacker text included) cannot change host, program or pid.
    """
    m = _CLASSIC.match(text)
    if m is not None:
        program = m.group(3)
        if programs is not None and program not in programs:
            return OTHER
        program = intern(program)
        ts = tc.classic(m.group(1))
    else:
        if text[:1] == "<":
            return _rfc5424(text, tc, programs)
        m = _ISO.match(text)
        if m is None:
            return _split_general(text, tc, programs)
        program = m.group(3)
        if programs is not None and program not in programs:
            return OTHER
        program = intern(program)
        ts = parse_iso(m.group(1))
    if ts is None:
        return None
    # _pid() inline (this runs for every sshd line): the fast patterns' pid is ASCII digits.
    pid_s = m.group(4)
    pid = int(pid_s) if pid_s and len(pid_s) <= 10 else None
    # One string per host name, not one per line: events kept as evidence and the
    # connection and session memories hold hundreds of thousands of them in a flood.
    return Prefix(ts, intern(m.group(2)), program, pid, text[m.end() :])


def _split_general(text: str, tc: TimeContext, programs: frozenset[str] | None) -> Prefix | None:
    """Every prefix the fast paths do not take (see the comments on _STAMP and _TAG)."""
    st = _STAMP.match(text)
    if st is None:
        return None
    pos = st.end()
    v = _BSD_VERBOSE.match(text, pos)
    if v is not None:
        pos = v.end()
    host = ""
    tag = _TAG_ALONE.match(text, pos)
    if tag is None:
        fl = _FACLEVEL.match(text, pos)  # OpenWrt: a facility.level word and no host
        if fl is not None:
            tag = _TAG_ALONE.match(text, fl.end())
    if tag is None:
        sp = text.find(" ", pos)
        if sp <= pos:
            return None
        host = text[pos:sp]
        pos = sp + 1
        fl = _FACLEVEL.match(text, pos)
        if fl is not None:
            pos = fl.end()
        tag = _TAG.match(text, pos)
        if tag is None:
            iso = st.group("iso")
            # NetBSD syslogd -o syslog: RFC 5424's fields on file, without <PRI>1.
            return None if iso is None else _structured(iso, host, text[pos:], programs)
    program = tag.group(1) or tag.group(3)
    if programs is not None and program not in programs:
        return OTHER
    ts = _general_ts(st, tc)
    if ts is None:
        return None
    return Prefix(ts, host, program, _pid(tag.group(2)), _strip_msgid(text[tag.end() :]))


def _general_ts(st: re.Match[str], tc: TimeContext) -> datetime | None:
    stamp = st.group("classic")
    if stamp is not None:
        ts = tc.classic(stamp)
        frac = st.group("frac")
        if ts is not None and frac:
            ts += timedelta(microseconds=int(frac[1:7].ljust(6, "0")))
        return ts
    stamp = st.group("iso")
    if stamp is not None:
        return parse_iso(stamp)
    stamp = st.group("ctime")
    if stamp is not None:
        return _ctime(stamp, tc.zone)
    stamp = st.group("full")
    if stamp is not None:
        return _short_full(stamp, st.group("abbr"), tc.zone)
    try:
        ts = datetime.fromtimestamp(int(st.group("unix")), UTC)
    except (OverflowError, OSError, ValueError):
        return None
    frac = st.group("ufrac")
    if frac:
        ts += timedelta(microseconds=int(frac[1:7].ljust(6, "0")))
    return ts


def _ctime(stamp: str, zone: tzinfo) -> datetime | None:
    """``Jun  7 01:10:56 2026`` (ctime without the weekday), local time in ``zone``."""
    if len(stamp) == 19:
        stamp = stamp[:4] + " " + stamp[4:]
    month = MONTHS.get(stamp[:3])
    if month is None:
        return None
    try:
        local = datetime(
            int(stamp[16:20]),
            month,
            int(stamp[4:6]),
            int(stamp[7:9]),
            int(stamp[10:12]),
            min(int(stamp[13:15]), 59),
            tzinfo=zone,
        )
    except ValueError:
        return None
    return local.astimezone(UTC)


def _short_full(stamp: str, abbr: str, zone: tzinfo) -> datetime | None:
    """journalctl -o short-full: local time and the zone's abbreviation. The abbreviation
    must be UTC's or the configured zone's at that time (it also settles the hour that
    occurs twice when summer time ends); any other is not guessed at."""
    try:
        naive = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if abbr in ("UTC", "GMT"):
        return naive.replace(tzinfo=UTC)
    for fold in (0, 1):
        local = naive.replace(tzinfo=zone, fold=fold)
        if local.tzname() == abbr:
            return local.astimezone(UTC)
    return None


def parse_iso(stamp: str) -> datetime | None:
    try:
        ts = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if ts.tzinfo is None:
        return None  # an ISO stamp without a zone is ambiguous; rsyslog always writes one
    return ts.astimezone(UTC)


def _rfc5424(text: str, tc: TimeContext, programs: frozenset[str] | None) -> Prefix | None:
    gt = text.find(">")
    if gt < 2 or gt > 4 or not text[1:gt].isdigit():
        return None
    rest = text[gt + 1 :]
    if not rest.startswith("1 "):
        # RFC 3164 with a PRI in front (what a network syslog receiver may store).
        return split_syslog(rest, tc, programs) if rest[:1] != "<" else None
    parts = rest.split(" ", 3)
    if len(parts) < 4:
        return None
    return _structured(parts[1], parts[2], parts[3], programs)


def _structured(
    stamp: str, host: str, tail: str, programs: frozenset[str] | None
) -> Prefix | None:
    """RFC 5424 after TIMESTAMP and HOSTNAME: APP-NAME PROCID MSGID STRUCTURED-DATA MSG."""
    parts = tail.split(" ", 3)
    if len(parts) < 4:
        return None
    app, procid, _msgid, sd = parts
    if programs is not None and app not in programs:
        return OTHER
    ts = parse_iso(stamp)
    if ts is None:
        return None
    # STRUCTURED-DATA: "-" or one or more [..] elements, then one space and the message.
    if sd.startswith("- "):
        msg = sd[2:]
    elif sd == "-":
        msg = ""
    elif sd.startswith("["):
        end = _sd_end(sd)
        if end < 0:
            return None
        msg = sd[end + 1 :] if sd[end : end + 1] == " " else sd[end:]
    else:
        return None
    if msg.startswith("\ufeff"):
        msg = msg[1:]
    return Prefix(ts, "" if host == "-" else host, app, _pid(procid), _strip_msgid(msg))


def _sd_end(tail: str) -> int:
    """Index just past the structured-data elements (escapes \\] inside values)."""
    i, n = 0, len(tail)
    while i < n and tail[i] == "[":
        i += 1
        while i < n and tail[i] != "]":
            if tail[i] == "\\":
                i += 1
            elif tail[i] == '"':
                i += 1
                while i < n and tail[i] != '"':
                    i += 2 if tail[i] == "\\" else 1
            i += 1
        if i >= n:
            return -1
        i += 1
    return i


def split_journal(fields: dict[str, str], programs: frozenset[str] | None = None) -> Prefix | None:
    """A journald record (journalctl -o json fields) → Prefix."""
    program = fields.get("SYSLOG_IDENTIFIER") or fields.get("_COMM") or ""
    if programs is not None and program not in programs:
        comm = fields.get("_COMM", "")
        if comm not in programs:
            return None
        program = comm
    try:
        usec = int(fields.get("__REALTIME_TIMESTAMP", ""))
    except ValueError:
        return None
    ts = datetime.fromtimestamp(usec / 1_000_000, UTC)
    pid_s = fields.get("SYSLOG_PID") or fields.get("_PID") or ""
    return Prefix(ts, fields.get("_HOSTNAME", ""), program, _pid(pid_s), fields.get("MESSAGE", ""))


def load_zone(name: str) -> tzinfo:
    """``local`` (the machine's /etc/localtime, else $TZ, else UTC) or an IANA zone name."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if name in ("UTC", "utc", "Z"):
        return UTC
    if name != "local":
        return ZoneInfo(name)
    import os

    tz = os.environ.get("TZ", "").lstrip(":")
    if tz:
        try:
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as fh:
            return ZoneInfo.from_file(fh, key="localtime")
    except OSError:
        return UTC
