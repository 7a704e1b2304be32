"""auditd's records joined into events: the grouping stage of the auditd source.

One audit *event* is several *records* (lines) that share a stamp ``msg=audit(SEC.MS:SERIAL)``,
and the records of concurrent events interleave (parse/audit.py has the formats).
:class:`AuditGrouper` joins record Lines into one Line per event (records joined by ``\\n``)
with a bounded buffer, lets events out in the order they began, and gives each a *safe*
position: never past the first record of an event still being assembled, so a crash re-reads
every unfinished event whole and repeats none. ``sources/auditd.py`` runs it on the tailer's
Lines; it lives beside that source because positions and files are a source's business, while
parse/audit.py stays a pure text → Event parser.

:class:`AuditAssembler` is grouping and parsing in one (``feed(line) -> list[Event]``), for
replay and tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..events import AUDIT_SOURCE_PREFIX, Event, FilePosition, Line, Position
from ..parse.audit import Record, parse_audit, split_record

END_OF_EVENT_TIMEOUT = 2.0  # auditd.conf's end_of_event_timeout default
MAX_PENDING = 64  # events being assembled at once (auparse keeps a similar handful)
MAX_EVENT_RECORDS = 512  # a 2 MB argument list is ~280 EXECVE records
MAX_EVENT_BYTES = 512 * 1024  # text kept per event; later records are dropped (counted)

# Event completeness without EOE (auditd does not write EOE): auparse's rule. A syscall event
# ends with PROCTITLE; user-space (1100–1299, 2100–2999), daemon, anomaly (1700+) and kernel
# records are events of one record. Everything else waits for its PROCTITLE, the timeout, or
# the buffer bound.
_LAST_TYPES = frozenset({"EOE", "PROCTITLE", "KERNEL", "USER", "LOGIN_FAILED"})
_SINGLE_PREFIXES = (
    "USER_",
    "CRED_",
    "DAEMON_",
    "ANOM_",
    "RESP_",
    "INTEGRITY_",
    "VIRT_",
    "GRP_",
    "ACCT_",
    "ADD_",
    "DEL_",
    "CHGRP_",
    "CHUSER_",
    "ROLE_",
    "SERVICE_",
    "SYSTEM_",
    "USYS_",
    "CRYPTO_",
    "LABEL_",
    "TRUSTED_APP",
    "AVC_PATH_",
    "MAC_UNLBL_",
    "MAC_CALIPSO_",
    "SOFTWARE_UPDATE",
)


def is_last_record(rec: Record) -> bool:
    """Does this record end its event (no more records will share its stamp)?"""
    t = rec.type
    return (
        t in _LAST_TYPES
        or t.startswith(_SINGLE_PREFIXES)
        # Every user-space record carries a msg='…' field. A kernel value never holds a
        # space (it would be hex), so " msg='" cannot come from an argument.
        or " msg='" in " " + rec.body
    )


# ------------------------------------------------------------------------------ grouping

FileKey = tuple[str, int, int]


def _file_key(pos: Position | None) -> FileKey | None:
    if isinstance(pos, FilePosition):
        return (pos.path, pos.dev, pos.inode)
    return None


@dataclass(slots=True)
class _Pending:
    texts: list[str]
    time: float
    file: FileKey | None
    start: Position | None  # position just before its first record (None: unknown)
    source: str
    size: int = 0
    done: bool = False  # complete, waiting for an older event of its file


@dataclass
class GroupStats:
    records: int = 0
    events: int = 0
    not_audit: int = 0  # lines with no audit header
    timed_out: int = 0  # events closed by the timeout (no PROCTITLE/EOE seen)
    evicted: int = 0  # events closed because the buffer was full
    dropped_records: int = 0  # records past an event's size bound

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class AuditGrouper:
    """Joins audit record Lines into one Line per event. Pure: Lines in, Lines out, in order.

    An event is complete at its PROCTITLE or EOE record, at once for one-record events
    (``USER_START``, ``DAEMON_START``…), when a record stamped ``timeout`` seconds later
    arrives, or when more than ``max_pending`` events are held (the oldest is closed).

    Events leave in the order their first records were read, per file: one that completes
    while an older event of its file is still open waits for it. Each output Line carries
    ``source`` prefixed with ``audit:`` and the *safe* position of its file: before the first
    record of the oldest event of that file still held, or after the last line read when none
    is. Committing it never skips an unfinished event, and since everything emitted began
    before that point, a resumed read meets only the tails of emitted events (records without
    their SYSCALL: no event), so a crash neither loses nor repeats a command.
    """

    def __init__(
        self,
        timeout: float = END_OF_EVENT_TIMEOUT,
        max_pending: int = MAX_PENDING,
        max_records: int = MAX_EVENT_RECORDS,
        max_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        self.timeout = timeout
        self.max_pending = max_pending
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.pending: dict[tuple[str, str], _Pending] = {}  # insertion order = age
        self.last_pos: dict[FileKey | None, Position | None] = {}
        self.stats = GroupStats()

    def feed(self, line: Line) -> list[Line]:
        """One record Line → the events it lets out (often none, often one)."""
        st = self.stats
        fk = _file_key(line.position)
        rec = split_record(line.text)
        if rec is None:
            st.not_audit += 1
            self.last_pos[fk] = line.position
            return []
        st.records += 1
        t = rec.time
        for old in self.pending.values():
            if not old.done and old.time + self.timeout <= t:
                old.done = True
                st.timed_out += 1
        key = (rec.node, rec.stamp)
        p = self.pending.get(key)
        if p is None:
            p = self.pending[key] = _Pending([], t, fk, self.last_pos.get(fk), line.source)
        if len(p.texts) < self.max_records and p.size + len(line.text) <= self.max_bytes:
            p.texts.append(line.text)
            p.size += len(line.text) + 1
        else:
            st.dropped_records += 1
        self.last_pos[fk] = line.position
        if is_last_record(rec):
            p.done = True
        return self._drain()

    def flush(self) -> list[Line]:
        """Close every open event (end of input, or the source went idle)."""
        for p in self.pending.values():
            p.done = True
        return self._drain()

    def retire(self, path: str, dev: int, inode: int) -> list[Line]:
        """A file is done (rotated away and drained): close its open events, forget it."""
        fk = (path, dev, inode)
        for p in self.pending.values():
            if p.file == fk:
                p.done = True
        out = self._drain()
        self.last_pos.pop(fk, None)
        return out

    def _drain(self) -> list[Line]:
        """Emit, per file, the done events older than that file's oldest open one."""
        out: list[Line] = []
        while True:
            blocked: set[FileKey | None] = set()
            for key, p in list(self.pending.items()):
                if p.file in blocked:
                    continue
                if not p.done:
                    blocked.add(p.file)
                    continue
                del self.pending[key]
                out.append(self._emit(p))
            if len(self.pending) <= self.max_pending:
                return out
            # Too many held: close the oldest (open, or it would have left), and go again.
            self.stats.evicted += 1
            self.pending[next(iter(self.pending))].done = True

    def _safe(self, fk: FileKey | None) -> Position | None:
        for p in self.pending.values():  # insertion order: the first is the oldest
            if p.file == fk:
                return p.start
        return self.last_pos.get(fk)

    def _emit(self, p: _Pending) -> Line:
        self.stats.events += 1
        src = p.source
        if not src.startswith(AUDIT_SOURCE_PREFIX):
            src = AUDIT_SOURCE_PREFIX + src
        return Line(text="\n".join(p.texts), source=src, position=self._safe(p.file))


# ------------------------------------------------------------------------------ assembler




@dataclass
class AuditAssembler:
    """Grouping and parsing in one: audit.log lines in, Events out (replay, tests).

    ``feed`` takes a :class:`Line` or plain text; ``flush`` closes what is still open at the
    end of the input. Bad input is counted, never raised.
    """

    grouper: AuditGrouper = field(default_factory=AuditGrouper)
    host: str = ""  # for records without node=
    errors: int = 0

    def feed(self, line: Line | str) -> list[Event]:
        if isinstance(line, str):
            line = Line(text=line, source=AUDIT_SOURCE_PREFIX)
        return self._parse(self.grouper.feed(line))

    def flush(self) -> list[Event]:
        return self._parse(self.grouper.flush())

    def _parse(self, groups: list[Line]) -> list[Event]:
        out: list[Event] = []
        for g in groups:
            try:
                ev = parse_audit(g.text, self.host)
            except Exception:  # a bug, never the input's fault: count it, keep going
                self.errors += 1
                continue
            if ev is not None:
                out.append(ev)
        return out
