"""Follow the systemd journal through ``journalctl --follow --output=json``.

Modern Debian and Ubuntu installs have no auth.log: sshd writes only to the journal. We run
journalctl as a child (no libsystemd binding needed), filtered to sshd, sudo, su and sftp
records, and resume with ``--after-cursor`` from the cursor of the last entry the pipeline
handled. If journalctl exits, it is restarted with exponential backoff.

Selection is not trust. ``SYSLOG_IDENTIFIER`` and ``SYSLOG_PID`` are whatever the sender
wrote (``logger -t sshd`` makes an "sshd" record), and ``_COMM`` is only a program name.
Each record is judged by the fields journald itself fills in from the sender's kernel
credentials, which no unprivileged sender can choose: ``_UID`` and ``_PID`` (SCM_CREDENTIALS),
``_EXE`` (/proc/PID/exe), ``_TRANSPORT``, ``_SYSTEMD_UNIT``. See :func:`judge`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import os
import pwd
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from .. import log
from ..config import JournalTrustConfig
from ..events import JournalPosition, Line
from ..measure import Sample, sample
from .journald import journald_running

# Only these fields travel with a Line: what the parser reads, what identifies a record, and
# the trusted fields the trust decision reads (kept so a trace shows why a record counted).
KEEP_FIELDS = (
    "MESSAGE",
    "_PID",
    "SYSLOG_PID",
    "_COMM",
    "SYSLOG_IDENTIFIER",
    "_HOSTNAME",
    "__REALTIME_TIMESTAMP",
    "PRIORITY",
    "_SYSTEMD_UNIT",
    "__CURSOR",
    "_TRANSPORT",
    "_UID",
    "_GID",
    "_EXE",
)
MAX_LINE = 1 << 20
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0

Emit = Callable[[list[Any]], Any]


def group_matches(matches: Sequence[str]) -> list[str]:
    """journalctl ANDs matches on different fields; put ``+`` between fields to OR them all."""
    by_field: dict[str, list[str]] = {}
    for m in matches:
        by_field.setdefault(m.split("=", 1)[0], []).append(m)
    out: list[str] = []
    for group in by_field.values():
        if out:
            out.append("+")
        out.extend(group)
    return out


def build_command(
    journalctl: str,
    matches: Sequence[str],
    cursor: str | None,
    start_at: str = "end",
    directory: str | None = None,
    files: Sequence[str] = (),
    follow: bool = True,
    since: float | None = None,
) -> list[str]:
    """The journalctl argument vector (no shell is ever involved).

    Where to begin: after ``cursor`` if there is one, else at wall time ``since`` (seconds
    since the epoch; journald's receive time), else at the end or the beginning."""
    cmd = [journalctl, "--output=json", "--no-pager", "--quiet"]
    if follow:
        cmd.append("--follow")
    if directory:
        cmd.append(f"--directory={directory}")
    for f in files:
        cmd.append(f"--file={f}")
    if cursor:
        # --follow alone shows only the last 10 entries, even after a cursor: ask for all.
        cmd += [f"--after-cursor={cursor}", "--no-tail" if follow else "--lines=all"]
    elif since is not None:
        cmd += [f"--since=@{since:.6f}", "--no-tail" if follow else "--lines=all"]
    elif start_at == "end":
        cmd.append("--lines=0")
    else:
        cmd.append("--no-tail" if follow else "--lines=all")
    cmd.extend(group_matches(matches))
    return cmd


def _text(value: Any) -> str:
    """journalctl JSON gives a string, or an array of byte values for non-UTF-8 data."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if value and isinstance(value[0], list):  # a field present several times
            value = value[0]
        with contextlib.suppress(TypeError, ValueError):
            return bytes(value).decode("utf-8", "replace")
    return "" if value is None else str(value)


def record_to_line(raw: bytes, source: str = "journal") -> Line | None:
    """One journalctl JSON line → a Line carrying the journal fields; None if unusable."""
    try:
        rec = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(rec, dict):
        return None
    cursor = rec.get("__CURSOR")
    fields = {k: _text(rec[k]) for k in KEEP_FIELDS if k in rec}
    return Line(
        text=fields.get("MESSAGE", ""),
        source=source,
        position=JournalPosition(str(cursor)) if cursor else None,
        fields=fields,
    )


# ----------------------------------------------------------------------------- trust

# The transports journald knows; "kernel", "driver" and "audit" records are never sshd's.
KNOWN_TRANSPORTS = frozenset({"syslog", "journal", "stdout", "kernel", "driver", "audit"})
DELETED = " (deleted)"  # /proc/PID/exe of a process whose binary was replaced (upgrade)
SAMPLE_CHARS = 200
MAX_SAMPLES = 5
REJECTED_LOG_INTERVAL = 300.0  # seconds between warnings about rejected records


class Trust(NamedTuple):
    """The verdict on one record."""

    ok: bool  # False: dropped, never emitted
    audit_user: str | None = None  # set: counts only for this user's own sessions
    reason: str | None = None  # why it was rejected


FULL_TRUST = Trust(True)
# The program names (/proc/PID/comm) sshd's processes run under.
SSHD_COMMS = frozenset({"sshd", "sshd-session", "sshd-auth"})


def _num(text: str | None) -> int | None:
    return int(text) if text and text.isascii() and text.isdigit() else None


UID_CACHE_SECONDS = 300.0
_uid_names: dict[int, tuple[float, str]] = {}


def uid_name(uid: int) -> str:
    """The user name for a uid, or the uid itself when the host has no such user.

    Cached for a few minutes: with LDAP or sssd behind NSS, one lookup per record of a busy
    SFTP session would be a network round trip each."""
    now = time.monotonic()
    hit = _uid_names.get(uid)
    if hit is not None and now - hit[0] < UID_CACHE_SECONDS:
        return hit[1]
    try:
        name = pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        name = str(uid)
    if len(_uid_names) >= 4096:
        _uid_names.clear()
    _uid_names[uid] = (now, name)
    return name


@dataclass(frozen=True)
class TrustRules:
    """``sources.journal.trusted`` resolved against this host (user names to uids)."""

    sshd_exe: frozenset[str]
    sshd_uids: frozenset[int]
    audit_exe: frozenset[str]
    transports: frozenset[str]
    sshd_units: tuple[str, ...]
    sshd_exited: bool = True
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, cfg: JournalTrustConfig | None = None) -> TrustRules:
        cfg = cfg or JournalTrustConfig()
        key = "sources.journal.trusted"
        warnings: list[str] = []
        uids: set[int] = set()
        for name in cfg.sshd_users:
            uid = _num(name)
            if uid is None:
                try:
                    uid = pwd.getpwnam(name).pw_uid
                except KeyError:
                    # The default privsep name is absent where sshd is not installed: quiet.
                    if name not in JournalTrustConfig().sshd_users:
                        warnings.append(f"{key}.sshd_users: no user {name!r} on this host")
                    continue
            uids.add(uid)
        if not cfg.sshd_exe or not uids:
            warnings.append(f"{key}: no sshd binary or user is trusted, so nothing can count")
        for t in sorted(set(cfg.transports) - KNOWN_TRANSPORTS):
            warnings.append(f"{key}.transports: journald has no transport {t!r}")
        return cls(
            sshd_exe=frozenset(cfg.sshd_exe),
            sshd_uids=frozenset(uids),
            audit_exe=frozenset(cfg.audit_exe),
            transports=frozenset(cfg.transports),
            sshd_units=tuple(cfg.sshd_units),
            sshd_exited=cfg.sshd_exited,
            warnings=tuple(warnings),
        )


def judge(
    fields: dict[str, str], rules: TrustRules, user_of: Callable[[int], str] = uid_name
) -> Trust:
    """Does this record count, and for what? Reads only fields journald sets itself.

    - sshd's binary running as root or the privilege-separation user: counts fully (events,
      detection, bans). An unprivileged sender cannot obtain that ``_UID``: journald takes it
      from the kernel's SCM_CREDENTIALS, which only carry another uid for a privileged sender.
    - sshd's binary as any other uid is sshd's per-user process after login (or a user's own
      sshd): it may speak only for that user's own sessions in the audit trail. So may sudo,
      su and sftp-server run by a user: they log with the invoking user's real uid (seen on
      Debian 12: ``_UID=1001`` for "alice : ... COMMAND=..." and "FAILED SU (to root)").
    - sudo, su, sftp-server and logind as root: trusted audit-trail records.
    - No ``_EXE`` (the sender exited first): counts only when sent as one of sshd's users by
      a process named like sshd (``sshd_exited``); a user's records then need ``_EXE``.
    - Anything else (another binary, no ``_EXE``, an untrusted transport): rejected.
    """
    if fields.get("_TRANSPORT", "") not in rules.transports:
        return Trust(False, reason="untrusted_transport")
    uid = _num(fields.get("_UID"))
    if uid is None or _num(fields.get("_PID")) is None:
        return Trust(False, reason="missing_credentials")
    exe = fields.get("_EXE", "")
    if not exe:
        # journald found no /proc/PID/exe: the sender had exited. logger usually has; so has
        # sshd's per-connection process, often, when it logs its last words ("Connection
        # closed by ... [preauth]": 1 in 4 on an idle test machine). Sent as root (or the
        # privsep user, which sshd confines), that is no forgery an unprivileged user can
        # make, and root could name any process's pid in its credentials anyway.
        if rules.sshd_exited and uid in rules.sshd_uids and fields.get("_COMM") in SSHD_COMMS:
            return _sshd_unit(fields, rules)
        return Trust(False, reason="missing_exe")
    exe = exe.removesuffix(DELETED)
    if exe in rules.sshd_exe:
        if uid not in rules.sshd_uids:
            return Trust(True, audit_user=user_of(uid))
        return _sshd_unit(fields, rules)
    if exe in rules.audit_exe:
        return FULL_TRUST if uid == 0 else Trust(True, audit_user=user_of(uid))
    return Trust(False, reason="untrusted_exe")


def _sshd_unit(fields: dict[str, str], rules: TrustRules) -> Trust:
    if rules.sshd_units:
        unit = fields.get("_SYSTEMD_UNIT", "")
        if not any(fnmatch.fnmatchcase(unit, pat) for pat in rules.sshd_units):
            return Trust(False, reason="untrusted_unit")
    return FULL_TRUST


def printable(text: str, limit: int = SAMPLE_CHARS) -> str:
    """Attacker-made text for a status line: control characters escaped, length bounded."""
    text = text[:limit]
    out = "".join(
        c if c.isprintable() else (f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}")
        for c in text
    )
    return out if len(out) <= limit else out[: limit - 3] + "..."


def rejected_sample(fields: dict[str, str], reason: str) -> str:
    """One line saying what a rejected record claimed and what journald knew of its sender."""

    def f(key: str) -> str:
        return printable(fields.get(key, "-") or "-", 80)

    return (
        f"{reason}: {f('SYSLOG_IDENTIFIER')} (_COMM={f('_COMM')} _EXE={f('_EXE')} "
        f"_UID={f('_UID')}): {printable(fields.get('MESSAGE', ''))}"
    )


class JournalSource:
    """The journal source stage."""

    name = "journal"
    role = "source"  # what the daemon wires it as (docs/architecture.md)

    def __init__(
        self,
        emit: Emit,
        journalctl: str = "journalctl",
        matches: Sequence[str] = (),
        cursor: str | None = None,
        start_at: str = "end",
        directory: str | None = None,
        files: Sequence[str] = (),
        *,
        trust: JournalTrustConfig | None = None,
        since: float | None = None,
    ) -> None:
        self.emit = emit
        self.journalctl = journalctl
        self.matches = tuple(matches)
        # Of the last record read (emitted or rejected): where a restarted journalctl resumes.
        self.cursor = cursor
        self.start_at = start_at
        self.since = since  # with no cursor: begin at this wall time (a switch from files)
        self.directory = directory
        self.files = tuple(files)
        self.rules = TrustRules.from_config(trust)
        self.proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0
        self.records = 0
        self.bad_records = 0
        # Seconds between the newest record's journal timestamp and our reading it.
        self.delay = 0.0
        self.trusted = 0
        self.user_only = 0
        self.rejected: Counter[str] = Counter()
        self.rejected_samples: deque[str] = deque(maxlen=MAX_SAMPLES)
        self._rejected_logged_at = -REJECTED_LOG_INTERVAL
        self.last_error: str | None = None
        self.log = log.get("journal")
        self.unreadable = not (directory or files) and system_journal_unreadable()

    def command(self) -> list[str]:
        return build_command(
            self.journalctl,
            self.matches,
            self.cursor,
            self.start_at,
            self.directory,
            self.files,
            since=self.since,
        )

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="journal")

    async def _run(self) -> None:
        backoff = BACKOFF_MIN
        while not self._stopping:
            started = time.monotonic()
            try:
                await self._follow_once()
            except FileNotFoundError:
                self.last_error = f"{self.journalctl} not found"
                self.log.error("cannot run journalctl", path=self.journalctl)
            except Exception as exc:
                self.last_error = str(exc)
                self.log.exception("journal source failed")
            if self._stopping:
                break
            if time.monotonic() - started > 60:
                backoff = BACKOFF_MIN  # it ran fine for a while: this is a fresh failure
            self.restarts += 1
            self.log.warning(
                "journalctl exited; restarting",
                in_seconds=backoff,
                restarts=self.restarts,
                error=self.last_error,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _follow_once(self) -> None:
        cmd = self.command()
        self.log.info("following the journal", command=" ".join(cmd))
        started = time.time()
        self.proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=MAX_LINE,
            start_new_session=True,
        )
        # A restart continues after the cursor of the last record read. Before any record
        # came, a start "at the end" continues from when this first run began, not from the
        # restart's own end (what arrived in between would be skipped).
        if self.cursor is None and self.since is None and self.start_at == "end":
            self.since = started
        assert self.proc.stdout is not None and self.proc.stderr is not None
        err_task = asyncio.create_task(self.proc.stderr.read())
        batch: list[Any] = []
        try:
            while True:
                try:
                    raw = await self.proc.stdout.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    raw = None
                if raw == b"":
                    break
                line = None if raw is None else record_to_line(raw)
                if line is None:
                    self.bad_records += 1
                else:
                    self.records += 1
                    if isinstance(line.position, JournalPosition):
                        self.cursor = line.position.cursor
                    if self._admit(line):
                        batch.append(line)
                # Hand over what has arrived; wait for more only when nothing is buffered
                # (also after a dropped record: what came before it must not wait).
                if batch and (len(batch) >= 500 or not _buffered(self.proc.stdout)):
                    self._measure_delay(batch[-1])
                    await self.emit(batch)
                    batch = []
        finally:
            if batch:
                await self.emit(batch)
            rc = await self._reap()
            stderr = b""
            with contextlib.suppress(Exception):
                stderr = await asyncio.wait_for(err_task, 1)
            if not self._stopping:
                msg = stderr.decode("utf-8", "replace").strip()
                self.last_error = f"exit status {rc}" + (f": {msg[-500:]}" if msg else "")

    def _measure_delay(self, line: Line) -> None:
        stamp = (line.fields or {}).get("__REALTIME_TIMESTAMP")
        with contextlib.suppress(TypeError, ValueError):
            self.delay = max(0.0, time.time() - int(str(stamp)) / 1e6)

    def metrics(self) -> list[Sample]:
        src = "journal"
        return [
            sample("sshmonitor_lines_read_total", self.records, source=src),
            sample("sshmonitor_source_lag_seconds", self.delay, source=src),
            sample("sshmonitor_lines_rejected_total", self.bad_records, source=src,
                   reason="bad_record"),
            *(
                sample("sshmonitor_lines_rejected_total", n, source=src, reason=reason)
                for reason, n in sorted(self.rejected.items())
            ),
        ]

    def _admit(self, line: Line) -> bool:
        """Judge a record: False drops it (counted and sampled, never emitted)."""
        fields = line.fields or {}
        verdict = judge(fields, self.rules)
        if not verdict.ok:
            reason = verdict.reason or "rejected"
            self.rejected[reason] += 1
            sample = rejected_sample(fields, reason)
            self.rejected_samples.append(sample)
            now = time.monotonic()
            # A flood of forged records must not flood our own log: one warning per interval.
            if now - self._rejected_logged_at >= REJECTED_LOG_INTERVAL:
                self._rejected_logged_at = now
                self.log.warning(
                    "journal record rejected: not sent by a trusted program (docs/security.md)",
                    sample=sample,
                    rejected=sum(self.rejected.values()),
                )
            return False
        # The parser takes SYSLOG_PID before _PID; the sender wrote SYSLOG_PID itself and
        # could name another user's session process. Use the pid journald saw.
        fields.pop("SYSLOG_PID", None)
        if verdict.audit_user is not None:
            line.audit_user = verdict.audit_user
            self.user_only += 1
        else:
            self.trusted += 1
        return True

    async def _reap(self) -> int | None:
        p = self.proc
        if p is None:
            return None
        if p.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
            try:
                await asyncio.wait_for(p.wait(), 3)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()
        return p.returncode

    async def stop(self) -> None:
        self._stopping = True
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 5)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()

    def apply_config(self, cfg: Any) -> None:
        j = cfg.sources.journal
        # Trust rules are pure policy: a reload applies them to the next record.
        self.rules = TrustRules.from_config(j.trusted)
        if (j.journalctl, tuple(j.matches), j.directory, tuple(j.files)) != (
            self.journalctl,
            self.matches,
            self.directory,
            self.files,
        ):
            self.log.warning("journal settings change only on restart")

    def describe(self) -> dict[str, Any]:
        where = self.directory or ", ".join(self.files) or "the system journal"
        warnings = list(self.rules.warnings)
        if self.unreadable:
            warnings.append(
                "the system journal exists but this user cannot read it: only its own records "
                "show (run in group systemd-journal, as the shipped unit does)"
            )
        return {
            "name": "journal",
            "summary": f"following {where}",
            "mode": "journal",
            # Only records whose journald-set fields show a trusted sender count.
            "forgeable": False,
            # The system journal gets new records only while journald runs (journal files
            # or a directory given in the config are read as they are).
            "can_deliver": bool(self.directory or self.files) or journald_running(),
            "stats": {
                "records": self.records,
                "trusted": self.trusted,
                "user_sessions_only": self.user_only,
                "rejected": sum(self.rejected.values()),
                "bad_records": self.bad_records,
                "restarts": self.restarts,
            },
            "rejected": dict(self.rejected),
            "rejected_samples": list(self.rejected_samples),
            "warnings": warnings,
            "last_error": self.last_error,
        }

    def healthy(self) -> bool:
        return self._task is None or not self._task.done()


def _buffered(reader: asyncio.StreamReader) -> bool:
    """Are more bytes already waiting? (Batches bursts; CPython keeps them in ``_buffer``.)"""
    buf = getattr(reader, "_buffer", None)
    return isinstance(buf, bytes | bytearray) and b"\n" in buf


def system_journal_unreadable(
    roots: Sequence[str] = ("/var/log/journal", "/run/log/journal"),
    machine_id: str = "/etc/machine-id",
) -> bool:
    """The system journal exists, but we may not read it (journalctl --quiet would then show
    only our own records and say nothing)."""
    if os.geteuid() == 0:
        return False
    try:
        with open(machine_id) as fh:
            mid = fh.read().strip()
    except OSError:
        return False
    found = [os.path.join(r, mid, "system.journal") for r in roots]
    found = [f for f in found if os.path.exists(f)]
    return bool(found) and not any(os.access(f, os.R_OK) for f in found)
