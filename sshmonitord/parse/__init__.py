"""Parsing: a Line → at most one Event. Pure functions behind a small stateful front.

The :class:`Parser` holds only what a stream needs: the time context (zone, reference time
for year inference), counters, and the connection memory (:mod:`.connections`: which address
each sshd process's connection has, whether it logged in), applied to every sshd event after
the pure parse functions. It never reads a clock: the live pipeline moves the reference
forward, ``replay`` sets it from the file being read.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from sys import intern

from ..events import AUDIT_SOURCE_PREFIX, Event, Kind, Line
from . import sshd
from .connections import Connections
from .logind import parse_logind
from .prefix import CLASSIC_PREFIX, OTHER, Prefix, TimeContext, split_journal, split_syslog
from .sftp import parse_sftp
from .sudo import parse_su, parse_sudo

SSHD_PROGRAMS = frozenset({"sshd", "sshd-session", "sshd-auth"})
SFTP_PROGRAMS = frozenset({"internal-sftp", "sftp-server"})
PROGRAMS = SSHD_PROGRAMS | SFTP_PROGRAMS | {"sudo", "su", "systemd-logind"}
MAX_SAMPLES = 10
_REPEATED = "message repeated "
_UNRECOGNIZED = Kind.UNRECOGNIZED
_classic_match = CLASSIC_PREFIX.match
_parse_sshd = sshd.parse


@dataclass
class ParseStats:
    """What a parser has seen; ``replay --summary`` and ``sshmonitor status`` show it."""

    lines: int = 0
    events: int = 0
    other_programs: int = 0  # skipped cheaply: CRON, systemd, kernel, ...
    malformed: int = 0  # no recognisable prefix at all
    # journalctl's own lines in its text output ("-- No entries --", "-- Boot 3f2c… --"):
    # not log records, so not malformed; replay shows them (they explain an empty result).
    journal_notes: int = 0
    errors: int = 0  # a parser raised (a bug): counted, sampled, never fatal
    kinds: Counter[str] = field(default_factory=Counter)
    # By program (only programs we parse reach here: a bounded set of names).
    unrecognized_programs: Counter[str] = field(default_factory=Counter)
    unrecognized_samples: list[str] = field(default_factory=list)
    malformed_samples: list[str] = field(default_factory=list)
    journal_note_samples: list[str] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "lines": self.lines,
            "events": self.events,
            "other_programs": self.other_programs,
            "malformed": self.malformed,
            "errors": self.errors,
            "kinds": dict(self.kinds),
            "unrecognized_samples": list(self.unrecognized_samples),
        }


def is_journalctl_note(text: str) -> bool:
    """A line journalctl writes itself into its text output: ``-- No entries --``, ``-- Boot
    <id> --``, ``-- Reboot --``, ``-- Logs begin at … --`` / ``-- Journal begins at … --``.
    Only asked of a line with no log prefix, so it can never hide a record."""
    return text.startswith("-- ") and text.rstrip().endswith(" --") and len(text) <= 300


def dispatch(pre: Prefix, raw: str) -> Event | None:
    """The program decides the message catalogue."""
    prog = pre.program
    if prog in SSHD_PROGRAMS:
        return sshd.parse(pre, raw)
    if prog in SFTP_PROGRAMS:
        return parse_sftp(pre)
    if prog == "sudo":
        return parse_sudo(pre)
    if prog == "su":
        return parse_su(pre)
    if prog == "systemd-logind":
        return parse_logind(pre)
    return None


def _repeated(pre: Prefix) -> tuple[Prefix, int]:
    """rsyslog's ``message repeated 3 times: [ inner]`` → (inner prefix, 3)."""
    msg = pre.message
    rest = msg[len(_REPEATED) :]
    n_s, _, tail = rest.partition(" ")
    # rsyslog's counts are small; a huge one is forged text (and would not fit a column).
    if (
        not (n_s.isascii() and n_s.isdigit() and len(n_s) <= 9)
        or not tail.startswith("times: [")
        or not tail.endswith("]")
    ):
        return pre, 1
    inner = tail[len("times: [") : -1]
    if inner.startswith(" "):
        inner = inner[1:]
    return pre._replace(message=inner), int(n_s)


class Parser:
    """Turns Lines (file text or journal fields) into Events, counting what it skips."""

    def __init__(
        self, zone: tzinfo = UTC, reference: datetime | None = None, audit_host: str = ""
    ) -> None:
        # auditd's records carry no host name by default: its events get this one, so they
        # join the sshd events of the same machine.
        self.audit_host = audit_host
        self.time = TimeContext(zone=zone)
        if reference is not None:
            self.time.set_reference(reference)
        self.stats = ParseStats()
        self.connections = Connections()

    def parse_line(self, line: Line) -> Event | None:
        if line.fields is not None:
            # A record only half trusted (a user's own process wrote it) may be read with
            # what the connection memory knows, never teach it.
            return self.parse_fields(line.fields, trusted=line.audit_user is None)
        if line.source.startswith(AUDIT_SOURCE_PREFIX):
            return self.parse_audit(line.text)
        return self.parse_text(line.text)

    def parse_audit(self, text: str) -> Event | None:
        """One auditd event: its records joined by newlines (sources/auditd.py)."""
        # Loaded with the first auditd event: a daemon without sources.audit never needs it.
        from .audit import parse_audit

        st = self.stats
        st.lines += 1
        try:
            ev = parse_audit(text, self.audit_host)
        except Exception:
            self._error(text)
            return None
        return self._count(ev, text)

    def parse_text(self, text: str) -> Event | None:
        """One syslog-format line → Event, or None (other program, or no prefix)."""
        st = self.stats
        st.lines += 1
        m = _classic_match(text)
        if m is not None:
            stamp, host, program, pid_s = m.groups()
            if program not in PROGRAMS:
                st.other_programs += 1  # CRON, systemd...: what split_syslog calls OTHER
                return None
            if program in SSHD_PROGRAMS:
                # Nearly every line of a busy auth.log: split_syslog's classic branch,
                # _finish and _count in one frame (issue #17: the calls between them cost
                # more than their work). Anything unusual (a bad stamp, "message repeated",
                # an exception in the stamp) goes the general way below, which reads the line
                # again and settles it exactly as before.
                try:
                    ts = self.time.classic(stamp)
                except Exception:
                    ts = None
                msg = text[m.end() :]
                if ts is not None and not msg.startswith(_REPEATED):
                    head = Prefix(
                        ts,
                        intern(host),
                        intern(program),
                        int(pid_s) if pid_s and len(pid_s) <= 10 else None,
                        msg,
                    )
                    try:
                        ev = self.connections.apply(_parse_sshd(head, text), True)
                    except Exception:
                        self._error(text)
                        return None
                    if not ev.raw:
                        ev.raw = text
                    st.events += 1
                    kind = ev.kind
                    st.kinds[kind] += 1
                    if kind is _UNRECOGNIZED:
                        self._unrecognized(ev, text)
                    return ev
        return self._parse_general(text)

    def _parse_general(self, text: str) -> Event | None:
        """parse_text for every line its one-frame path does not take (the line is counted)."""
        st = self.stats
        try:
            pre = split_syslog(text, self.time, PROGRAMS)
        except Exception:
            pre = None
            self._error(text)
        if pre is OTHER:
            st.other_programs += 1
            return None
        if pre is None:
            if is_journalctl_note(text):
                st.journal_notes += 1
                if len(st.journal_note_samples) < MAX_SAMPLES:
                    st.journal_note_samples.append(text[:200])
            elif text.strip():
                st.malformed += 1
                if len(st.malformed_samples) < MAX_SAMPLES:
                    st.malformed_samples.append(text[:500])
            return None
        return self._finish(pre, text)

    def parse_fields(self, fields: dict[str, str], trusted: bool = True) -> Event | None:
        """One journald record → Event, or None. ``trusted``: see :meth:`parse_line`."""
        st = self.stats
        st.lines += 1
        pre = split_journal(fields, PROGRAMS)
        if pre is None or pre is OTHER:
            st.other_programs += 1
            return None
        return self._finish(pre, fields.get("MESSAGE", ""), trusted)

    def _finish(self, pre: Prefix, raw: str, trusted: bool = True) -> Event | None:
        count = 1
        if pre.message.startswith(_REPEATED):
            pre, count = _repeated(pre)
        try:
            if pre.program in SSHD_PROGRAMS:
                ev: Event | None = self.connections.apply(sshd.parse(pre, raw), trusted)
            else:
                ev = dispatch(pre, raw)
        except Exception:
            self._error(raw)
            return None
        if ev is not None:
            # Filled here once rather than in every builder.
            if not ev.raw:
                ev.raw = raw
            if count != 1:
                ev.count *= count
        return self._count(ev, raw)

    def _count(self, ev: Event | None, raw: str) -> Event | None:
        """Account for what a line became: nothing ours, or an event of some kind."""
        st = self.stats
        if ev is None:
            st.other_programs += 1
            return None
        st.events += 1
        kind = ev.kind
        st.kinds[kind] += 1
        if kind is _UNRECOGNIZED:
            self._unrecognized(ev, raw)
        return ev

    def _unrecognized(self, ev: Event, raw: str) -> None:
        st = self.stats
        st.unrecognized_programs[ev.program if ev.program in PROGRAMS else "other"] += 1
        if len(st.unrecognized_samples) < MAX_SAMPLES:
            st.unrecognized_samples.append(raw[:500])

    def _error(self, raw: str) -> None:
        self.stats.errors += 1
        if len(self.stats.error_samples) < MAX_SAMPLES:
            self.stats.error_samples.append(raw[:500])
