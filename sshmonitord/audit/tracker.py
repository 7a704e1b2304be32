"""The audit trail: SSH sessions, and the commands and file transfers done in them.

A :class:`SessionTracker` turns the Events of one stream into rows of the ``sessions``,
``commands`` and ``transfers`` tables (migration 6). It is pure logic plus calls into
sshmonitord/store/sessions.py (all of its SQL) on the connection it is handed: the pipeline
calls :meth:`SessionTracker.apply` inside the transaction that stores the batch's events and
positions, so the trail, the events and the positions are committed together or not at all.
The tracker keeps an in-memory index of the *open* sessions (by sshd pid, client address,
user, TTY, logind and audit session) and every change it makes to that index is written to
the store in the same transaction, so the index can always be rebuilt from the store
(:meth:`load`) — at start, and after a failed commit (:meth:`invalidate`).

How the lines of one login are joined (docs/audit-trail.md has the full story):

* ``auth_success`` (``Accepted … for U from A port P``) starts a session: user, address,
  port, method, key fingerprint, and the pid of the sshd (or, OpenSSH 9.8+, sshd-session)
  process that logged it — the privileged *monitor* of the connection;
* the monitor also logs PAM's ``session opened``/``session closed`` and, at LogLevel
  VERBOSE, ``User child is on pid C``: joined by pid. The unprivileged *user child* logs
  ``Received disconnect``/``Disconnected from user U A port P`` with a different pid: joined
  by user + address + port; the program name (sshd, sshd-session) plays no part;
* ``New session N of user U.`` (systemd-logind) is joined to the newest session of U that
  opened within a few seconds of it; ``Removed session N.`` ends it if nothing else did;
* the TTY comes from VERBOSE ``Starting session: shell on pts/0 for U from A port P``, or is
  learnt from the first sudo/su line that can only belong to one session;
* ``sudo``/``su`` lines are attributed by TTY, else by user (several open sessions of the
  user and no TTY: the newest, marked as a guess); ``internal-sftp``/``sftp-server`` lines by
  the sftp process's pid, which ``session opened for local user U from [A]`` ties to the
  open session of U from A; auditd ``exec`` events by their audit session id (``ses``).

A session ends at the first of: the disconnect lines, PAM's ``session closed``, logind's
``Removed session``, auditd's ``USER_END``. Sessions whose end was never logged are closed
as **lost** by :meth:`sweep`: when their monitor pid is provably gone (same host, /proc
visible), when their pid is reused by a new login, or after ``lost_after`` without
activity. A later line that does close a lost session turns it back into a normally closed
one with the right end.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import log
from ..events import Event, Kind
from ..store import sessions as db
from ..store.sessions import CLOSED, LOST, OPEN
from .proc import pid_gone, proc_visible

__all__ = ["CLOSED", "LOST", "OPEN", "Session", "SessionTracker", "norm_tty", "short_host"]

# How an action was tied to its session (commands.attribution / transfers.attribution).
BY_PID = "pid"  # sftp lines: the sftp process's pid, joined at its session start
BY_SES = "ses"  # auditd: the audit session id
BY_TTY = "tty"  # the TTY is that session's
BY_USER = "user"  # the only open session of that user (and address, for sftp)
GUESS = "guess"  # several candidates: the newest was taken

LOGIND_WINDOW = 10.0  # seconds between a login's PAM session and logind's "New session"
CLOSING_GRACE = 300.0  # a closed session stays findable this long for its last lines
PID_CHECK_GRACE = 60.0  # never call a session's pid gone in its first minute
UNSET_SES = 4294967295  # auditd's "no session" ((unsigned)-1)
MAX_SFTP_FLAGS = 10000  # open-but-not-closed sftp files remembered (flags only)

# Programs whose pid we may check in /proc.
_STARTING = re.compile(
    r"Starting session: (?P<what>.+?)(?: on (?P<tty>\S+))? for (?P<user>.*) "
    r"from (?P<addr>\S+) port (?P<port>\d+) id (?P<chan>\d+)$"
)
_CHILD = re.compile(r"User child is on pid (?P<pid>\d+)$")
_JOINED_MESSAGES = ("Starting session: ", "User child is on pid ")
AUDIT_PROGRAM = "audit"  # parse/audit.py's events
PENDING_WINDOW = 600.0  # seconds an audit login record waits for its auth.log line
MAX_PENDING = 1000
_SFTP_SKIP_OPS = frozenset({"opendir", "closedir"})


def short_host(name: str | None) -> str:
    return (name or "").split(".", 1)[0]


def norm_tty(tty: Any) -> str | None:
    """``/dev/pts/0``, ``pts/0`` and auditd's ``pts0`` → ``pts/0``; none/unknown → None."""
    if not tty or not isinstance(tty, str):
        return None
    t = tty.removeprefix("/dev/")
    if t in ("unknown", "none", "(none)", "?", "ssh", "notty"):
        return None
    m = re.fullmatch(r"pts(\d+)", t)
    if m is not None:
        return f"pts/{m.group(1)}"
    return t


def _message(ev: Event) -> str:
    """The message part of an event's raw line (syslog: after ``prog[pid]: ``; journal: all
    of it). Only the message's *start* is trusted: attacker text (a PTR name, a user name)
    can contain anything further on."""
    raw = ev.raw
    if raw.startswith(_JOINED_MESSAGES):
        return raw  # a journal MESSAGE
    tok = f"{ev.program}[{ev.pid}]: " if ev.pid is not None else f"{ev.program}: "
    i = raw.find(tok, 0, 160)  # the syslog prefix: stamp, host, program[pid]
    return raw[i + len(tok) :] if i >= 0 else ""


def _ses(ev: Event) -> int | None:
    v = ev.detail.get("ses")
    try:
        n = int(v) if v is not None else None
    except (TypeError, ValueError):
        return None
    if n is None or n < 0 or n == UNSET_SES:
        return None
    return n


# ---------------------------------------------------------------------------- the model


@dataclass(eq=False)
class Session:
    id: int
    host: str
    user: str
    ip: str | None
    port: int | None
    method: str | None
    key_fp: str | None
    program: str
    pid: int | None
    start: float
    last_seen: float
    state: str = OPEN
    child_pid: int | None = None
    opened: float | None = None
    end: float | None = None
    end_reason: str | None = None
    tty: str | None = None
    logind: str | None = None
    audit_ses: int | None = None
    commands: int = 0
    transfers: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    detail: dict[str, Any] = field(default_factory=dict)
    # transient (not stored): a VERBOSE "subsystem 'sftp'" start seen, sftp line not yet
    expect_sftp: int = 0
    # transient: the pids this session holds in the tracker's pid index
    pids: set[int] = field(default_factory=set)

    def sftp_open(self) -> list[dict[str, Any]]:
        return [x for x in self.detail.get("sftp", []) if x.get("end") is None]


def _from_row(r: Any) -> Session:
    return Session(
        id=r[0],
        host=r[1] or "",
        user=r[2],
        ip=r[3],
        port=r[4],
        method=r[5],
        key_fp=r[6],
        program=r[7] or "",
        pid=r[8],
        child_pid=r[9],
        start=r[10],
        opened=r[11],
        end=r[12],
        state=r[13],
        end_reason=r[14],
        last_seen=r[15],
        tty=r[16],
        logind=r[17],
        audit_ses=r[18],
        commands=r[19],
        transfers=r[20],
        bytes_up=r[21],
        bytes_down=r[22],
        detail=json.loads(r[23]) if r[23] else {},
    )


def _dumps(d: dict[str, Any]) -> str | None:
    return json.dumps(d, ensure_ascii=False, default=str, sort_keys=True) if d else None



# ---------------------------------------------------------------------------- the tracker


class SessionTracker:
    """Joins a stream's Events into sessions; writes through the connection it is given.

    Not thread-safe: call :meth:`load`, :meth:`apply` and :meth:`sweep` from one thread
    (the store's).
    """

    def __init__(
        self,
        *,
        local_host: str | None = None,
        lost_after: float = 7 * 86400,
        check_pids: bool | None = None,
        probe: Callable[[int], bool | None] = pid_gone,
    ) -> None:
        self.local_host = short_host(local_host if local_host is not None else socket.gethostname())
        self.lost_after = lost_after
        # None: decide from /proc (auto); True/False: forced.
        self.check_pids = check_pids
        self.probe = probe
        self.stats: Counter[str] = Counter()
        self.log = log.get("sessions")
        self._seq = 0
        self._loaded = False
        self._reset()

    def _reset(self) -> None:
        self.open: dict[int, Session] = {}  # id → session, state open or recently closed
        self._by_pid: dict[tuple[str, int], Session] = {}  # monitor, user child, sftp pids
        self._by_addr: dict[tuple[str, str, int], Session] = {}
        self._by_user: dict[tuple[str, str], list[Session]] = {}
        self._by_tty: dict[tuple[str, str], Session] = {}
        self._by_logind: dict[tuple[str, str], Session] = {}
        self._by_ses: dict[tuple[str, int], Session] = {}
        self._pending_logind: dict[tuple[str, str], list[tuple[str, float]]] = {}
        self._pending_ses: dict[tuple[str, int], tuple[int, float, Event]] = {}
        self._no_session: dict[tuple[str, int], None] = {}  # audit ses with no session
        self._sftp_flags: dict[tuple[str, int, str], str] = {}
        self._dirty: dict[int, Session] = {}
        self._commands: list[tuple[Any, ...]] = []
        self._transfers: list[tuple[Any, ...]] = []

    # ------------------------------------------------------------------ state

    def load(self, conn: sqlite3.Connection) -> int:
        """Rebuild the index from the store's open sessions; return how many."""
        self._reset()
        rows = db.load_open_sessions(conn)
        for r in rows:
            self._index(_from_row(r))
        self._loaded = True
        return len(rows)

    def _next_seq(self) -> int:
        """Stream order for rows that share a second: increasing, also across restarts."""
        self._seq = max(self._seq + 1, time.time_ns())
        return self._seq

    def invalidate(self) -> None:
        """The transaction we wrote in was rolled back: reload from the store next time."""
        self._loaded = False

    def open_count(self) -> int:
        return sum(1 for s in self.open.values() if s.state == OPEN)

    def _index(self, s: Session) -> None:
        h = s.host
        self.open[s.id] = s
        if s.pid is not None:
            self._map_pid(s, s.pid)
        if s.child_pid is not None:
            self._map_pid(s, s.child_pid, replace=False)
        for x in s.sftp_open():
            self._map_pid(s, int(x["pid"]))
        if s.ip is not None and s.port is not None:
            self._by_addr[(h, s.ip, s.port)] = s
        self._by_user.setdefault((h, s.user), []).append(s)
        if s.tty:
            self._by_tty[(h, s.tty)] = s
        if s.logind:
            self._by_logind[(h, s.logind)] = s
        if s.audit_ses is not None:
            self._by_ses[(h, s.audit_ses)] = s

    def _map_pid(self, s: Session, pid: int, replace: bool = True) -> None:
        key = (s.host, pid)
        old = self._by_pid.get(key)
        if old is s or (old is not None and not replace):
            return
        if old is not None:
            old.pids.discard(pid)
        self._by_pid[key] = s
        s.pids.add(pid)

    def _unmap_pid(self, s: Session, pid: int) -> None:
        if self._by_pid.get((s.host, pid)) is s:
            del self._by_pid[(s.host, pid)]
        s.pids.discard(pid)

    def _forget(self, s: Session) -> None:
        """Drop a session from the index (it stays in the store)."""
        self.open.pop(s.id, None)
        h = s.host
        for pid in list(s.pids):
            self._unmap_pid(s, pid)
        if s.ip is not None and s.port is not None and self._by_addr.get((h, s.ip, s.port)) is s:
            del self._by_addr[(h, s.ip, s.port)]
        if s.tty is not None and self._by_tty.get((h, s.tty)) is s:
            del self._by_tty[(h, s.tty)]
        if s.logind is not None and self._by_logind.get((h, s.logind)) is s:
            del self._by_logind[(h, s.logind)]
        if s.audit_ses is not None and self._by_ses.get((h, s.audit_ses)) is s:
            del self._by_ses[(h, s.audit_ses)]
        lst = self._by_user.get((s.host, s.user))
        if lst is not None:
            with contextlib.suppress(ValueError):
                lst.remove(s)
            if not lst:
                del self._by_user[(s.host, s.user)]

    def _touch(self, s: Session, ts: float | None = None) -> None:
        if ts is not None and ts > s.last_seen:
            s.last_seen = ts
        self._dirty[s.id] = s

    def _close(self, s: Session, ts: float, reason: str) -> None:
        if s.state != OPEN:
            return
        s.state = CLOSED
        s.end = max(ts, s.start)
        s.end_reason = reason
        self.stats["closed"] += 1
        self._touch(s, ts)

    def _lose(self, s: Session, now: float, reason: str) -> None:
        """Close a session whose end was never logged. ``end`` is the last moment it was
        seen alive (a lower bound); the detail says why and when we gave up on it."""
        if s.state != OPEN:
            return
        s.state = LOST
        s.end = s.last_seen
        s.end_reason = reason
        s.detail["lost_at"] = now
        self.stats["lost"] += 1
        self._dirty[s.id] = s
        self._forget(s)

    # ------------------------------------------------------------------ the stream

    def wants(self, ev: Event) -> bool:
        """Whether an ``ignored`` event matters to us (VERBOSE sshd lines that join)."""
        raw = ev.raw
        return _JOINED_MESSAGES[0] in raw or _JOINED_MESSAGES[1] in raw

    def apply(self, conn: sqlite3.Connection, events: list[Event]) -> None:
        """Handle a batch; call inside the transaction that commits it."""
        try:
            if not self._loaded:
                self.load(conn)
            for ev in events:
                handler = _HANDLERS.get(ev.kind)
                if handler is None:
                    continue
                try:
                    handler(self, conn, ev)
                except sqlite3.Error:
                    raise
                except Exception:
                    # A tracker bug must not stop the stream (the batch would be retried
                    # for ever): count it, log the line, go on.
                    self.stats["errors"] += 1
                    self.log.exception("session tracking failed on an event", raw=ev.raw[:300])
            if events:
                # Log time, but never later than the wall clock: a line forged with a future
                # stamp must not end every closing session's grace at once.
                self._expire_closing(min(events[-1].ts.timestamp(), time.time()))
            self._flush(conn)
        except BaseException:
            self.invalidate()
            raise

    def _flush(self, conn: sqlite3.Connection) -> None:
        if self._dirty:
            db.update_sessions(
                conn,
                [
                    (
                        s.method,
                        s.key_fp,
                        s.child_pid,
                        s.opened,
                        s.end,
                        s.state,
                        s.end_reason,
                        s.last_seen,
                        s.tty,
                        s.logind,
                        s.audit_ses,
                        s.commands,
                        s.transfers,
                        s.bytes_up,
                        s.bytes_down,
                        _dumps(s.detail),
                        s.id,
                    )
                    for s in self._dirty.values()
                ],
            )
            self._dirty.clear()
        if self._commands:
            db.insert_commands(conn, self._commands)
            self._commands.clear()
        if self._transfers:
            db.insert_transfers(conn, self._transfers)
            self._transfers.clear()

    def _expire_closing(self, now: float | None) -> None:
        """Forget closed sessions whose last lines (PAM close) never came."""
        if now is None:
            return
        for s in [s for s in self.open.values() if s.state != OPEN]:
            if s.end is not None and now - s.end > CLOSING_GRACE:
                self._forget(s)

    # ------------------------------------------------------------------ login and logout

    def _host(self, ev: Event) -> str:
        """The host an event speaks of, as the index keys it: the short name (rsyslog writes
        it, the journal and auditd's ``node=`` may give the FQDN); none means this host
        (auditd's records carry no name by default)."""
        return short_host(ev.host) or self.local_host

    def _alive_at(self, s: Session, ts: float) -> bool:
        """Whether ``ts`` falls in the session's lifetime. Lines of two sources (auth.log,
        audit.log) and of two processes reach us in slightly different orders, so a session
        that just closed still takes what happened before its end."""
        return s.start - 1 <= ts and (s.end is None or ts <= s.end + 1)

    def _monitor(self, ev: Event) -> Session | None:
        """The session whose privileged monitor process logged ``ev``."""
        if ev.pid is None:
            return None
        s = self._by_pid.get((self._host(ev), ev.pid))
        return s if s is not None and s.pid == ev.pid else None

    def _on_auth_success(self, conn: sqlite3.Connection, ev: Event) -> None:
        if ev.user is None:
            return
        host = self._host(ev)
        ts = ev.ts.timestamp()
        if ev.pid is not None:
            old = self._by_pid.get((host, ev.pid))
            if old is not None:
                same = old.state == OPEN and (old.user, old.port) == (ev.user, ev.port)
                if same and old.pid == ev.pid and old.ip == (None if ev.ip is None else str(ev.ip)):
                    # A second factor (AuthenticationMethods publickey,password): one login.
                    if ev.method and ev.method not in (old.method or "").split(","):
                        old.method = f"{old.method},{ev.method}" if old.method else ev.method
                    if old.key_fp is None and ev.key_fp is not None:
                        old.key_fp = ev.key_fp
                    self._touch(old, ts)
                    return
                if old.pid == ev.pid:
                    # The monitor's pid belongs to a new connection: the old one is over.
                    if old.state == OPEN:
                        self._lose(old, ts, f"sshd pid {ev.pid} reused by a new login")
                    self._forget(old)
                else:  # a user child or sftp pid of another session: that process is gone
                    self._unmap_pid(old, ev.pid)
        ip = None if ev.ip is None else str(ev.ip)
        detail: dict[str, Any] = {
            k: ev.detail[k]
            for k in ("key_type", "cert_id", "cert_serial", "ca_fp", "host", "ambiguous")
            if ev.detail.get(k) is not None
        }
        sid = db.insert_session(
            conn,
            host=host,
            user=ev.user,
            ip=ip,
            port=ev.port,
            method=ev.method,
            key_fp=ev.key_fp,
            program=ev.program,
            pid=ev.pid,
            start=ts,
            detail=_dumps(detail),
        )
        s = Session(
            id=sid,
            host=host,
            user=ev.user,
            ip=ip,
            port=ev.port,
            method=ev.method,
            key_fp=ev.key_fp,
            program=ev.program,
            pid=ev.pid,
            start=ts,
            last_seen=ts,
            detail=detail,
        )
        if ip is not None and ev.port is not None:
            prev = self._by_addr.get((host, ip, ev.port))
            if prev is not None:
                # The same client address and port again: that earlier connection is over.
                self._lose(prev, ts, "client address and port reused by a new login")
                self._forget(prev)
        self._index(s)
        self.stats["started"] += 1
        self._claim_pending_logind(s, ts)
        pending = self._pending_ses.pop((host, ev.pid), None) if ev.pid is not None else None
        if pending is not None and abs(pending[1] - ts) <= PENDING_WINDOW:
            self._audit_login(conn, s, pending[2])

    def _on_session_open(self, conn: sqlite3.Connection, ev: Event) -> None:
        if "logind_session" in ev.detail:
            self._on_logind_new(ev)
            return
        s = self._monitor(ev)
        ses = _ses(ev)
        if ev.program == AUDIT_PROGRAM:
            # auditd's USER_START/USER_LOGIN by sshd: the monitor's pid with the audit
            # session id every command of this login will carry (and, for USER_LOGIN, the
            # terminal). audit.log and auth.log are read by two sources: the login may not
            # be known yet, so the binding waits for it a while.
            if s is None:
                if ses is not None and ev.pid is not None:
                    self._pending_ses[(self._host(ev), ev.pid)] = (ses, ev.ts.timestamp(), ev)
                    if len(self._pending_ses) > MAX_PENDING:
                        self._pending_ses.pop(next(iter(self._pending_ses)))
                return
            self._audit_login(conn, s, ev)
            return
        if s is None:
            self.stats["unmatched_session_open"] += 1
            return
        uid = ev.detail.get("uid")
        if isinstance(uid, int) and "uid" not in s.detail:
            s.detail["uid"] = uid
        if s.opened is None and s.state == OPEN:
            s.opened = ev.ts.timestamp()
            self._touch(s, s.opened)
            self._claim_pending_logind(s, s.opened)

    def _audit_login(self, conn: sqlite3.Connection, s: Session, ev: Event) -> None:
        ses = _ses(ev)
        d = ev.detail
        auid = d.get("auid")
        if isinstance(auid, int) and "uid" not in s.detail:
            s.detail["uid"] = auid
        tty = norm_tty(d.get("terminal"))
        if tty is not None and s.tty is None and s.state == OPEN:
            self._set_tty(s, tty)
        self._touch(s)
        if ses is not None:
            self._bind_ses(conn, s, ses)

    def _on_session_close(self, conn: sqlite3.Connection, ev: Event) -> None:
        ts = ev.ts.timestamp()
        host = self._host(ev)
        sid = ev.detail.get("logind_session")
        if sid is not None:
            s = self._by_logind.pop((host, str(sid)), None)
            if s is not None:
                self._close(s, ts, "logind session removed")
                s.detail["logind_removed"] = ts
                self._touch(s)
            return
        s = self._monitor(ev)
        if s is None:
            self._correct_lost(conn, ev, "pid")
            return
        self._close(s, ts, "session closed")
        if ev.program == AUDIT_PROGRAM:
            # auditd's USER_END: auth.log's last lines of this login may still be behind.
            s.detail["audit_closed"] = ts
            self._touch(s)
            return
        s.detail["pam_closed"] = ts
        self._touch(s)
        # PAM's close is the monitor's last word, but auditd's records of what ran in the
        # session may still be on their way: it leaves the index after CLOSING_GRACE.

    def _on_disconnect(self, conn: sqlite3.Connection, ev: Event) -> None:
        if ev.kind is Kind.PREAUTH_DISCONNECT and ev.detail.get("preauth"):
            return
        if ev.ip is None or ev.port is None:
            return
        host = self._host(ev)
        s = self._by_addr.get((host, str(ev.ip), ev.port))
        if s is None or (ev.user is not None and ev.user != s.user):
            if ev.kind is Kind.DISCONNECT:
                self._correct_lost(conn, ev, "addr")
            return
        if ev.pid is not None and ev.pid != s.pid:
            # The user child logs the disconnect (sshd <= 9.7 and sshd-session alike).
            if s.child_pid is None:
                s.child_pid = ev.pid
            self._map_pid(s, ev.pid, replace=False)
        if s.state == OPEN:
            what = ev.detail.get("what")  # "Connection closed/reset by …", before or after login
            reason = ev.detail.get("reason") or (f"connection {what}" if what else "disconnected")
            self._close(s, ev.ts.timestamp(), str(reason))
        self._touch(s)

    def _correct_lost(self, conn: sqlite3.Connection, ev: Event, by: str) -> None:
        """A session we gave up on as lost did end after all: record its real end."""
        host = self._host(ev)
        ts = ev.ts.timestamp()
        # Only a session that could still have been running: not one from long ago whose
        # pid (or client port) happens to come round again.
        oldest = ts - 2 * self.lost_after
        if by == "pid":
            if ev.pid is None:
                return
            row = db.find_lost_by_pid(conn, host, ev.pid, oldest, ts)
        else:
            row = db.find_lost_by_addr(conn, host, str(ev.ip), ev.port, oldest, ts)
        if row is None or (ev.user is not None and row[3] != ev.user):
            self.stats["unmatched_close"] += 1
            return
        detail = json.loads(row[2]) if row[2] else {}
        detail["was_lost"] = detail.pop("lost_at", None)
        reason = ev.detail.get("reason") or (
            "session closed" if ev.kind is Kind.SESSION_CLOSE else "disconnected"
        )
        db.close_lost(conn, row[0], ts, str(reason), _dumps(detail))
        self.stats["lost_corrected"] += 1

    # ------------------------------------------------------------------ logind

    def _on_logind_new(self, ev: Event) -> None:
        if ev.user is None:
            return
        host = self._host(ev)
        sid = str(ev.detail["logind_session"])
        ts = ev.ts.timestamp()
        cands = [
            s
            for s in self._by_user.get((host, ev.user), [])
            if s.state == OPEN
            and s.logind is None
            and abs(ts - (s.opened if s.opened is not None else s.start)) <= LOGIND_WINDOW
        ]
        if cands:
            self._bind_logind(max(cands, key=lambda s: (s.opened or s.start, s.id)), sid)
            return
        # logind can speak before sshd's own lines reach the log: keep it a few seconds.
        pend = self._pending_logind.setdefault((host, ev.user), [])
        pend[:] = [(x, t) for x, t in pend if ts - t <= LOGIND_WINDOW]
        pend.append((sid, ts))

    def _claim_pending_logind(self, s: Session, ts: float) -> None:
        pend = self._pending_logind.get((s.host, s.user))
        if not pend or s.logind is not None:
            return
        for i, (sid, t) in enumerate(pend):
            if abs(ts - t) <= LOGIND_WINDOW:
                del pend[i]
                self._bind_logind(s, sid)
                return

    def _bind_logind(self, s: Session, sid: str) -> None:
        s.logind = sid
        self._by_logind[(s.host, sid)] = s
        self._touch(s)

    def _session_of_ses(
        self, conn: sqlite3.Connection, host: str, ses: int, ts: float
    ) -> int | None:
        """The stored session an audit session id was tied to, for a command that arrives
        after the session left the index; remembered when there is none (cron's, a console
        login's ses), so those cost one lookup each."""
        if (host, ses) in self._no_session:
            return None
        sid = db.session_of_audit_ses(conn, host, ses, ts + 1)
        if sid is None:
            self._no_session[(host, ses)] = None
            if len(self._no_session) > MAX_PENDING:
                self._no_session.pop(next(iter(self._no_session)))
            return None
        return sid

    def _bind_ses(self, conn: sqlite3.Connection, s: Session, ses: int) -> None:
        """Tie an audit session id to the session, and claim the commands that carried it
        before the tie was known (they wait with session_id NULL)."""
        if s.audit_ses == ses:
            return
        s.audit_ses = ses
        self._by_ses[(s.host, ses)] = s
        self._no_session.pop((s.host, ses), None)
        self._touch(s)
        self._flush(conn)  # rows of this batch still waiting in memory
        n = db.claim_commands(conn, s.id, BY_SES, ses, s.host, s.start - PENDING_WINDOW)
        if n > 0:
            s.commands += n
            self.stats["commands"] += n
            self.stats["unattributed_commands"] -= n
            self._touch(s)

    # ------------------------------------------------------------------ VERBOSE lines

    def _on_ignored(self, conn: sqlite3.Connection, ev: Event) -> None:
        if not ev.program.startswith("sshd"):
            return
        msg = _message(ev)
        host = self._host(ev)
        if msg.startswith("User child is on pid "):
            m = _CHILD.match(msg)
            s = self._monitor(ev)
            if m is not None and s is not None:
                child = int(m.group("pid"))
                s.child_pid = child
                self._map_pid(s, child)
                self._touch(s)
            return
        m = _STARTING.match(msg)
        if m is None:
            return
        s = self._by_addr.get((host, m.group("addr"), int(m.group("port"))))
        if s is None:
            # A mapped IPv4 address or a name in the line: find the session by its child pid.
            s = self._by_pid.get((host, ev.pid)) if ev.pid is not None else None
        if s is None or s.user != m.group("user") or s.state != OPEN:
            return
        what = m.group("what")
        tty = norm_tty(m.group("tty"))
        ts = ev.ts.timestamp()
        s.detail.setdefault("channels", []).append(
            {"ts": ts, "seq": self._next_seq(), "what": what, **({"tty": tty} if tty else {})}
        )
        if ev.pid is not None and ev.pid != s.pid:
            if s.child_pid is None:
                s.child_pid = ev.pid
            self._map_pid(s, ev.pid, replace=False)
        if tty is not None and s.tty is None:
            self._set_tty(s, tty)
        if what.startswith("subsystem 'sftp'"):
            s.expect_sftp += 1
        self._touch(s, ts)

    def _set_tty(self, s: Session, tty: str) -> None:
        # A TTY belongs to one login at a time: a newer session takes it over in the index
        # (the older one keeps it in its record).
        s.tty = tty
        self._by_tty[(s.host, tty)] = s
        self._dirty[s.id] = s

    # ------------------------------------------------------------------ sudo and su

    def _attribute(
        self,
        host: str,
        user: str | None,
        tty: str | None,
        ts: float,
        uid: int | None = None,
        guess: bool = True,
    ) -> tuple[Session | None, str | None]:
        """The session an action by ``user`` (or login ``uid``) on ``tty`` at ``ts`` belongs
        to, and how sure; None when nothing fits (or only a guess would, and ``guess`` is
        False)."""
        if tty is not None:
            s = self._by_tty.get((host, tty))
            if s is not None and self._alive_at(s, ts):
                return s, BY_TTY
        if user is not None:
            pool = self._by_user.get((host, user), [])
        elif uid is not None:
            pool = [s for s in self.open.values() if s.host == host and s.detail.get("uid") == uid]
        else:
            pool = []
        cands = [s for s in pool if self._alive_at(s, ts)]
        if len(cands) > 1 and any(s.state == OPEN for s in cands):
            cands = [s for s in cands if s.state == OPEN]
        if not cands:
            return None, None
        if len(cands) > 1 and not guess:
            return None, None
        if tty is not None:
            unknown = [s for s in cands if s.tty is None]
            if len(unknown) == 1:
                # The only session of that user whose TTY we do not know: it must be this
                # one (a TTY belongs to one login at a time). Learn it.
                if unknown[0].state == OPEN:
                    self._set_tty(unknown[0], tty)
                return unknown[0], BY_USER
            if not guess:
                return None, None
            pool = unknown or cands
            return max(pool, key=lambda s: (s.start, s.id)), GUESS
        if len(cands) == 1:
            return cands[0], BY_USER
        pool = [s for s in cands if s.tty is None] or cands
        return max(pool, key=lambda s: (s.start, s.id)), GUESS

    def _on_sudo(self, conn: sqlite3.Connection, ev: Event) -> None:
        host = self._host(ev)
        tty = norm_tty(ev.detail.get("tty"))
        d = ev.detail
        ts = ev.ts.timestamp()
        s, how = self._attribute(host, ev.user, tty, ts)
        extra = {k: d[k] for k in ("reason", "target") if d.get(k) is not None}
        if ev.count != 1:
            extra["count"] = ev.count
        runas = d.get("runas") or d.get("target")
        self._commands.append(
            (
                None if s is None else s.id,
                ts,
                self._next_seq(),
                host,
                str(ev.kind),
                ev.user,
                runas,
                tty,
                d.get("pwd"),
                d.get("command"),
                how,
                None,
                _dumps(extra),
            )
        )
        self._count_command(s, ts)

    def _count_command(self, s: Session | None, ts: float) -> None:
        """A command (sudo/su line or auditd exec) was recorded: count it on its session."""
        if s is None:
            self.stats["unattributed_commands"] += 1
            return
        s.commands += 1
        self.stats["commands"] += 1
        self._touch(s, ts)

    # ------------------------------------------------------------------ auditd exec

    def _on_exec(self, conn: sqlite3.Connection, ev: Event) -> None:
        """An auditd ``exec`` (parse/audit.py; detail: auid, auid_user, ses, exe, argv,
        command, cwd, tty, uid, euid, success).

        By the audit session id ``ses``: once a ses is tied to a session (by auditd's
        USER_START for the monitor's pid, or by the first exec that can be tied for sure —
        its TTY, or the only session of its user) every exec with it is that session's. An
        exec whose ses is not tied yet is never guessed: it waits (session_id NULL, its
        audit_ses kept) and is claimed when the tie is made. Only an exec with no ses at all
        is attributed like a sudo line, guess included.
        """
        host = self._host(ev)
        d = ev.detail
        ses = _ses(ev)
        ts = ev.ts.timestamp()
        tty = norm_tty(d.get("tty"))
        user = ev.user or d.get("auid_user")
        auid = d.get("auid") if isinstance(d.get("auid"), int) else None
        s = self._by_ses.get((host, ses)) if ses is not None else None
        how: str | None = BY_SES
        late: int | None = None
        if s is None:
            s, how = self._attribute(host, user, tty, ts, uid=auid, guess=ses is None)
            if s is not None and ses is not None:
                self._bind_ses(conn, s, ses)
            elif s is None and ses is not None:
                late = self._session_of_ses(conn, host, ses, ts)
        command = d.get("command")
        if command is None and isinstance(d.get("argv"), list):
            command = " ".join(str(a) for a in d["argv"])
        keys = ("exe", "auid", "ses", "uid", "euid", "success", "key", "argv_truncated")
        extra = {k: d[k] for k in keys if d.get(k) is not None}
        euid, uid = d.get("euid"), d.get("uid")
        runas = f"uid {euid}" if isinstance(euid, int) and euid != uid else None
        self._commands.append(
            (
                None if s is None else s.id,
                ts,
                self._next_seq(),
                host,
                str(ev.kind),
                user,
                runas,
                tty,
                d.get("cwd"),
                command,
                how if s is not None else (BY_SES if late is not None else None),
                ses,
                _dumps(extra),
            )
        )
        if late is not None:
            # A session already out of the index (auditd's lines came late): count it there.
            self._commands[-1] = (late, *self._commands[-1][1:])
            self._flush(conn)
            db.count_command(conn, late, ts)
            self.stats["commands"] += 1
            return
        self._count_command(s, ts)

    # ------------------------------------------------------------------ sftp

    def _on_sftp(self, conn: sqlite3.Connection, ev: Event) -> None:
        host = self._host(ev)
        d = ev.detail
        op = d.get("op")
        pid = ev.pid
        ts = ev.ts.timestamp()
        if op == "session_open":
            self._sftp_start(ev)
            return
        s = self._by_pid.get((host, pid)) if pid is not None else None
        entry = None
        if s is not None:
            entry = next((x for x in s.sftp_open() if x.get("pid") == pid), None)
            if entry is None:
                s = None  # the pid is the session's monitor or child, not an sftp server
        how = entry.get("how", BY_PID) if entry is not None else None
        if op == "session_close":
            if s is not None and entry is not None and pid is not None:
                entry["end"] = ts
                entry["end_seq"] = self._next_seq()
                self._unmap_pid(s, pid)
                self._touch(s, ts)
            if pid is not None:
                for k in [k for k in self._sftp_flags if k[0] == host and k[1] == pid]:
                    del self._sftp_flags[k]
            return
        if ev.kind is Kind.SFTP_OPEN:
            if pid is not None and len(self._sftp_flags) < MAX_SFTP_FLAGS:
                self._sftp_flags[(host, pid, d.get("path", ""))] = str(d.get("flags", ""))
            if s is not None:
                self._touch(s, ts)
            return
        path = d.get("path")
        new_path = d.get("new_path")
        r = w = None
        extra: dict[str, Any] = {}
        if ev.kind is Kind.SFTP_CLOSE:
            r = int(d.get("bytes_read") or 0)
            w = int(d.get("bytes_written") or 0)
            flags = self._sftp_flags.pop((host, pid or 0, path or ""), None)
            if flags:
                extra["flags"] = flags
            op = _transfer_op(flags, r, w)
            if d.get("forced"):
                extra["forced"] = True
        elif op in _SFTP_SKIP_OPS or op is None:
            if s is not None:
                self._touch(s, ts)
            return
        else:
            for name in ("mode", "what"):
                if d.get(name) is not None:
                    extra[name] = d[name]
        self._transfers.append(
            (
                None if s is None else s.id,
                ts,
                self._next_seq(),
                host,
                pid,
                op,
                path,
                new_path,
                r,
                w,
                how,
                _dumps(extra),
            )
        )
        if s is None:
            self.stats["unattributed_transfers"] += 1
            return
        s.transfers += 1
        s.bytes_up += w or 0
        s.bytes_down += r or 0
        self.stats["transfers"] += 1
        self._touch(s, ts)

    def _sftp_start(self, ev: Event) -> None:
        """``session opened for local user U from [A]``: the sftp server (a child of the
        session's user child) started; tie its pid to the session of U from A."""
        host = self._host(ev)
        if ev.pid is None:
            return
        ip = None if ev.ip is None else str(ev.ip)
        ts = ev.ts.timestamp()
        cands = [
            s
            for s in self._by_user.get((host, ev.user or ""), [])
            if self._alive_at(s, ts) and (ip is None or s.ip == ip)
        ]
        if len(cands) > 1 and any(s.state == OPEN for s in cands):
            cands = [s for s in cands if s.state == OPEN]
        if not cands:
            self.stats["unattributed_sftp"] += 1
            return
        expecting = [s for s in cands if s.expect_sftp > 0]
        pool = expecting or [s for s in cands if not s.sftp_open()] or cands
        s = max(pool, key=lambda x: (x.start, x.id))
        how = BY_USER if len(pool) == 1 else GUESS
        if s.expect_sftp > 0:
            s.expect_sftp -= 1
        entry: dict[str, Any] = {
            "pid": ev.pid,
            "start": ts,
            "seq": self._next_seq(),
            "program": ev.program,
            "how": how,
        }
        s.detail.setdefault("sftp", []).append(entry)
        old = self._by_pid.get((host, ev.pid))
        if old is not None and old is not s:
            self._unmap_pid(old, ev.pid)  # that process is gone: its pid is the sftp server's
        self._map_pid(s, ev.pid)
        self._touch(s, ts)

    # ------------------------------------------------------------------ lost sessions

    def pid_checks_enabled(self) -> bool:
        return self.check_pids if self.check_pids is not None else proc_visible()

    def sweep(self, conn: sqlite3.Connection, now: float | None = None) -> int:
        """Close as lost the open sessions whose end will never be logged; return how many.

        Runs its own transaction. A session is lost when its monitor pid is provably gone
        (only for sessions of this host, and only when /proc shows other users' processes),
        or when nothing was heard of it for ``lost_after`` seconds.
        """
        now = time.time() if now is None else now
        with db.immediate_transaction(conn, on_error=self.invalidate):
            if not self._loaded:
                self.load(conn)
            n = 0
            check = self.pid_checks_enabled()
            for s in list(self.open.values()):
                if s.state != OPEN:
                    continue
                if now - s.last_seen > self.lost_after:
                    days = self.lost_after / 86400
                    self._lose(s, now, f"no end logged; nothing heard for {days:g} days")
                    n += 1
                    continue
                if (
                    check
                    and s.pid is not None
                    and short_host(s.host) == self.local_host
                    and now - s.start > PID_CHECK_GRACE
                    and self.probe(s.pid) is True
                ):
                    self._lose(s, now, f"no end logged; sshd pid {s.pid} is gone")
                    n += 1
            self._expire_closing(now)
            self._flush(conn)
        return n


def _transfer_op(flags: str | None, r: int, w: int) -> str:
    """upload / download / read-write / open, from the open flags and the bytes moved."""
    if flags:
        fl = flags.split(",")
        writes = "WRITE" in fl
        reads = "READ" in fl
        if writes and reads:
            return "read-write" if r and w else ("upload" if w or not r else "download")
        if writes:
            return "upload"
        if reads:
            return "download"
    if w and r:
        return "read-write"
    if w:
        return "upload"
    if r:
        return "download"
    return "open"


_HANDLERS: dict[Kind, Callable[[SessionTracker, sqlite3.Connection, Event], None]] = {
    Kind.AUTH_SUCCESS: SessionTracker._on_auth_success,
    Kind.SESSION_OPEN: SessionTracker._on_session_open,
    Kind.SESSION_CLOSE: SessionTracker._on_session_close,
    Kind.DISCONNECT: SessionTracker._on_disconnect,
    Kind.PREAUTH_DISCONNECT: SessionTracker._on_disconnect,
    Kind.SUDO: SessionTracker._on_sudo,
    Kind.SUDO_FAILURE: SessionTracker._on_sudo,
    Kind.SU: SessionTracker._on_sudo,
    Kind.SU_FAILURE: SessionTracker._on_sudo,
    Kind.SFTP_OPEN: SessionTracker._on_sftp,
    Kind.SFTP_CLOSE: SessionTracker._on_sftp,
    Kind.SFTP_OP: SessionTracker._on_sftp,
    Kind.EXEC: SessionTracker._on_exec,
    Kind.IGNORED: SessionTracker._on_ignored,
}

