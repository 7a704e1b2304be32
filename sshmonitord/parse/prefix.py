"""Split a log record into (ts, host, program, pid, message).

Formats: classic syslog (``Nov 24 21:45:48 web1 sshd[1234]: …``, no year and no zone),
rsyslog high precision (``2026-11-24T21:45:48.123456+01:00 web1 sshd[1234]: …``), RFC 5424
(``<38>1 2026-11-24T21:45:48.123Z web1 sshd 1234 - - …``) and journald records.

Everything here is pure: the current time never comes from a clock but from
:class:`TimeContext`, which the live daemon advances and ``replay`` sets from the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, NamedTuple

MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
FUTURE_SLACK = timedelta(days=2)
_MISS: Any = object()  # clock skew and zone confusion, never a whole year


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

    def set_zone(self, zone: tzinfo) -> None:
        self.zone = zone
        self._cache_key = ""
        self._hours.clear()

    def set_reference(self, when: datetime) -> None:
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if abs((when - self.reference).total_seconds()) > 3600:
            self._cache_key = ""  # a cached year may no longer hold
            self._hours.clear()
        self.reference = when

    def classic(self, stamp: str) -> datetime | None:
        """``Nov 24 21:45:48`` (or ``Nov  4 …``) → aware UTC datetime, or None if malformed."""
        if stamp == self._cache_key:
            return self._cache_val
        # Year, zone and DST are settled per hour (offsets change on the hour); within it
        # only minutes and seconds are added. A busy log has thousands of lines per hour.
        base = self._hours.get(stamp[:9], _MISS)
        if base is _MISS:
            base = self._hour_base(stamp)
            if len(self._hours) > 4096:
                self._hours.clear()
            self._hours[stamp[:9]] = base
        if base is None or stamp[9] != ":" or stamp[12] != ":":
            return None
        mm_s, ss_s = stamp[10:12], stamp[13:15]
        if not (mm_s.isdigit() and ss_s.isdigit()):
            return None
        mm, ss = int(mm_s), int(ss_s)
        if mm > 59 or ss > 60:
            return None
        val = base + timedelta(minutes=mm, seconds=min(ss, 59))
        self._cache_key, self._cache_val = stamp, val
        return val

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


# "Nov 24 21:45:48 web1 sshd[1234]: msg" and "2026-11-24T21:45:48.1+01:00 web1 sshd[1234]: msg".
# One C-level match gives every field; the program is checked before any timestamp work.
_CLASSIC = re.compile(
    r"([A-Z][a-z][a-z] [ \d]\d \d\d:\d\d:\d\d) (\S+) ([^\s\[:]+)(?:\[(\d*)\])?: ?"
)
_ISO = re.compile(r"(\d{4}-\d\d-\d\dT\S+) (\S+) ([^\s\[:]+)(?:\[(\d*)\])?: ?")

# Returned by split_syslog for a well-formed line of a program we do not read.
OTHER = Prefix(datetime.min.replace(tzinfo=UTC), "", "", None, "")



def _pid(text: str | None) -> int | None:
    """A process id, or None. Linux pids have at most 7 digits: a longer "pid" is a forged
    tag (``logger -t 'sshd[99999999999999999999]'``), not a process, and must not reach an
    INTEGER column it cannot fit."""
    if text and len(text) <= 10 and text.isascii() and text.isdigit():
        return int(text)
    return None

def split_syslog(
    text: str, tc: TimeContext, programs: frozenset[str] | None = None
) -> Prefix | None:
    """Split a file line in any supported syslog format.

    Returns None for a line with no recognisable prefix, and :data:`OTHER` for a line from a
    program not in ``programs`` (checked before any timestamp work: most lines of a busy
    auth.log are CRON's).
    """
    m = _CLASSIC.match(text)
    if m is not None:
        program = m.group(3)
        if programs is not None and program not in programs:
            return OTHER
        ts = tc.classic(m.group(1))
    else:
        c0 = text[:1]
        if c0 == "<":
            return _rfc5424(text, tc, programs)
        m = _ISO.match(text)
        if m is None:
            return None
        program = m.group(3)
        if programs is not None and program not in programs:
            return OTHER
        ts = parse_iso(m.group(1))
    if ts is None:
        return None
    pid_s = m.group(4)
    return Prefix(ts, m.group(2), program, _pid(pid_s), text[m.end() :])


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
    parts = rest.split(" ", 6)
    if len(parts) < 7:
        return None
    _v, stamp, host, app, procid, _msgid, tail = parts
    if programs is not None and app not in programs:
        return OTHER
    ts = parse_iso(stamp)
    if ts is None:
        return None
    # STRUCTURED-DATA: "-" or one or more [..] elements, then the message.
    if tail.startswith("- "):
        msg = tail[2:]
    elif tail == "-":
        msg = ""
    elif tail.startswith("["):
        end = _sd_end(tail)
        if end < 0:
            return None
        msg = tail[end:].lstrip(" ")
    else:
        return None
    if msg.startswith("\ufeff"):
        msg = msg[1:]
    return Prefix(ts, host, app, _pid(procid), msg)


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
