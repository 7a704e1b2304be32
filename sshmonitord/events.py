"""The pipeline's vocabulary: every stage speaks in these types and nothing else.

Sources produce :class:`Line`; parsers turn a Line into an :class:`Event`; rules turn
Events into :class:`Finding`. See docs/architecture.md and docs/events.md.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# Line and FilePosition are built once per log line: plain slots classes (treat them as
# immutable) cost a quarter of what frozen dataclasses do.
@dataclass(slots=True)
class FilePosition:
    """Where a file source stands: enough to resume exactly, and to recognise the file."""

    path: str
    dev: int
    inode: int
    fingerprint: str
    offset: int


@dataclass(frozen=True, slots=True)
class JournalPosition:
    """Where the journal source stands: the cursor of the last handled entry."""

    cursor: str


Position = FilePosition | JournalPosition


@dataclass(frozen=True, slots=True)
class Retired:
    """A source is done with a file (rotated away and drained): forget its saved position.

    It follows the file's last Line in the stream, so it is acted on only after those lines.
    """

    path: str
    dev: int
    inode: int


@dataclass(slots=True)
class Line:
    """One raw log record and where it came from.

    ``text`` is the decoded line without its newline. ``fields`` carries structured
    journal fields when the source is the journal (MESSAGE, _PID, ...), else None.
    ``position`` is the resumable position *after* this line, or None: a file source built
    with ``each_position=False`` gives it only to the last Line of each read, the head of an
    over-long line read before its newline has none (its end is inside the line), and a
    consumer keeps the last position it saw. ``audit_user``: see below.
    """

    text: str
    source: str
    position: Position | None = None
    fields: dict[str, str] | None = None
    # Set by a source that can prove only this much (a journal record from a logged-in
    # user's own sshd process): the line may join that user's sessions in the audit trail,
    # and is never stored as an event or counted by detection.
    audit_user: str | None = None


# A Line whose source starts with this is one auditd event (sources/auditd.py), which the
# parser reads with parse/audit.py.
AUDIT_SOURCE_PREFIX = "audit:"


class Kind(StrEnum):
    """Event kinds; each is documented in docs/events.md."""

    AUTH_FAILURE = "auth_failure"
    INVALID_USER = "invalid_user"
    AUTH_SUCCESS = "auth_success"
    PREAUTH_DISCONNECT = "preauth_disconnect"
    PROTOCOL_ERROR = "protocol_error"
    MAX_AUTH_EXCEEDED = "max_auth_exceeded"
    PENALTY = "penalty"
    NOT_ALLOWED = "not_allowed"
    SESSION_OPEN = "session_open"
    SESSION_CLOSE = "session_close"
    DISCONNECT = "disconnect"
    SUDO = "sudo"
    SUDO_FAILURE = "sudo_failure"
    SU = "su"
    SU_FAILURE = "su_failure"
    SFTP_OPEN = "sftp_open"
    SFTP_CLOSE = "sftp_close"
    SFTP_OP = "sftp_op"
    EXEC = "exec"
    # A known message that states nothing we score (Postponed publickey, reverse mapping...).
    IGNORED = "ignored"
    # An sshd line that matched no known message: counted and sampled, never silently lost.
    UNRECOGNIZED = "unrecognized"


@dataclass(slots=True)
class Event:
    """One fact a log line states. ``ts`` is timezone-aware UTC.

    Treat it as immutable once the parser returns it. It is not ``frozen`` only because a
    frozen dataclass costs four times as much to build, and the parser builds one per line.
    """

    ts: datetime
    host: str
    program: str
    pid: int | None
    kind: Kind
    user: str | None = None
    ip: IPAddress | None = None
    port: int | None = None
    method: str | None = None
    key_fp: str | None = None
    count: int = 1
    session: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    raw: str = ""


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}


class Action(StrEnum):
    ALERT = "alert"
    BAN = "ban"
    BOTH = "both"


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule's conclusion about a subject (an address, a user or a session)."""

    rule: str
    severity: Severity
    subject: str
    events: tuple[Event, ...]
    action: Action
    summary: str = ""
    # The network to ban when the action includes a ban (the subject's /32, /128 or /64).
    ban_net: str | None = None


@dataclass(frozen=True)
class Tally:
    """Fleet mode: failed attempts against (or from) one subject on one host in a window."""

    subject: str
    host: str
    attempts: int
    first: float
    last: float


@dataclass(frozen=True)
class FleetFinding:
    """A conclusion of the fleet's cross-host rules (detect/fleet.py)."""

    rule: str
    severity: str
    subject: str
    attempts: int
    hosts: tuple[str, ...]
    first: float
    last: float
    summary: str
    ban: bool


class Login(NamedTuple):
    """One successful login as the history keeps it: the network it came from (at the
    granularity new_source judges by) and the key it used, either may be None."""

    user: str
    prefix: str | None
    key_fp: str | None
    ts: float
