"""``sshmonitor replay``: the real parse (and detect) path over finished logs.

Our answer to ``fail2ban-regex``: point it at auth.log files (plain or .gz) or stdin and see
exactly what the daemon would have seen — every event as JSON, or a summary with the lines
per kind, the sshd lines nothing recognised (with samples), and the top offending addresses.
Nothing is banned and nothing is sent.

With the whole config it also shows what the daemon would have done: the same rules raise the
same findings (every one, as the daemon raises every one), and the same ban policy
(:func:`sshmonitord.respond.policy.decide`: allowlist, ban lengths, escalation, "already
banned") plans the bans, in event time, from an empty ban history.
tests/test_replay_equals_daemon.py holds replay to that.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import stat
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, TextIO

from . import parse_worker as pw
from .addresses import address_int, address_text, int_address
from .config import Config
from .detect.engine import Engine, History
from .events import Event, Finding, Kind
from .notify.render import visible
from .parse import Parser
from .parse.prefix import load_zone
from .respond.policy import Ban, MemoryHistory, Policy, decide
from .timefmt import parse_when

FAILURE_KINDS = frozenset(
    {
        Kind.AUTH_FAILURE,
        Kind.INVALID_USER,
        Kind.MAX_AUTH_EXCEEDED,
        Kind.NOT_ALLOWED,
        Kind.PREAUTH_DISCONNECT,
        Kind.PROTOCOL_ERROR,
        Kind.PENALTY,
    }
)
_AUTH_SUCCESS = Kind.AUTH_SUCCESS  # per event: a global, not an enum attribute lookup
PROGRESS_EVERY = 4096  # lines between looks at the clock (the bar redraws at most 5 times/s)
PROGRESS_REDRAW = 0.2
MAX_FINDINGS_LISTED = 1000


def event_json(ev: Event) -> dict[str, Any]:
    """The replay JSON shape: exactly these keys, in this order."""
    return {
        "ts": ev.ts.isoformat().replace("+00:00", "Z"),
        "host": ev.host,
        "program": ev.program,
        "pid": ev.pid,
        "kind": str(ev.kind),
        "user": ev.user,
        "ip": None if ev.ip is None else address_text(ev.ip),
        "port": ev.port,
        "method": ev.method,
        "key_fp": ev.key_fp,
        "count": ev.count,
        "detail": ev.detail,
    }


def open_log(path: str) -> tuple[TextIO, datetime]:
    """A text stream over a plain or gzipped file (or stdin for ``-``) and its reference time."""
    log = open_counted(path)
    return log.stream, log.reference


@dataclass
class OpenLog:
    """An open log with what the progress bar needs: ``consumed()`` is how many bytes of the
    file on disk were read so far (of a .gz file: compressed bytes, which is what its size
    counts), ``size`` its size; both None when unknown (a pipe)."""

    stream: TextIO
    reference: datetime
    consumed: Callable[[], int] | None = None
    size: int | None = None
    extra: list[Any] = field(default_factory=list)  # to close after the stream

    def close(self) -> None:
        self.stream.close()
        for f in self.extra:
            f.close()


def open_counted(path: str) -> OpenLog:
    """:func:`open_log` with byte counting (see :class:`OpenLog`)."""
    if path == "-":
        stream = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
        consumed: Callable[[], int] | None = None
        size: int | None = None
        with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
            fd = sys.stdin.fileno()
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):  # `< file`: a size to measure against
                start = os.lseek(fd, 0, os.SEEK_CUR)
                size = st.st_size - start

                def consumed() -> int:
                    return os.lseek(fd, 0, os.SEEK_CUR) - start

        return OpenLog(stream, datetime.now(UTC), consumed, size)
    st = os.stat(path)
    mtime = datetime.fromtimestamp(st.st_mtime, UTC)
    raw = open(path, "rb")  # noqa: SIM115 - closed by OpenLog.close
    try:
        magic = raw.read(2)
        raw.seek(0)
        if magic == b"\x1f\x8b":
            # As gzip.open(path, "rt"), over our own file object: its position is the
            # compressed bytes consumed.
            gz = gzip.GzipFile(fileobj=raw, mode="rb")
            unzipped = io.TextIOWrapper(gz, encoding="utf-8", errors="replace")
            return OpenLog(unzipped, mtime, raw.tell, st.st_size, [raw])
        plain = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="\n")
        return OpenLog(plain, mtime, raw.tell, st.st_size)
    except BaseException:
        raw.close()
        raise


def _clock(seconds: float) -> str:
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


def _columns(stream: TextIO) -> int:
    """The width of the terminal ``stream`` writes to (80 when it says 0 or nothing)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (OSError, ValueError, io.UnsupportedOperation):
        return 80


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} GB"  # pragma: no cover - the loop returns


def progress_line(
    lines: int, elapsed: float, done: int | None, total: int | None, width: int = 80
) -> str:
    """One redraw of the replay progress line. With a known ``total`` of bytes: a bar, the
    percentage, bytes, lines, lines/s and the time left (from bytes read per second); else
    only lines and lines/s."""
    rate = lines / max(elapsed, 1e-9)
    speed = f"{rate:,.0f}" if rate < 10_000 else f"{rate / 1000:,.0f}k"
    tail = f"{lines:,} lines, {speed} lines/s"
    if total is None or done is None or total <= 0:
        return f"  {tail} ..."
    total = max(total, done)  # a file still growing while it is replayed
    frac = min(max(done / total, 0.0), 1.0)
    eta = "ETA --:--" if done <= 0 else f"ETA {_clock(elapsed * (total - done) / done)}"
    info = f" {frac * 100:3.0f}%  {_size(done)} of {_size(total)}  {tail}  {eta}"
    bar_w = max(10, min(40, width - len(info) - 5))
    full = int(frac * bar_w)
    bar = "=" * full + (">" if full < bar_w else "") + " " * max(0, bar_w - full - 1)
    return f"  [{bar}]{info}"


@dataclass
class Summary:
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    first_ts: datetime | None = None
    last_ts: datetime | None = None
    offenders: Counter[int] = field(default_factory=Counter)
    # One user per address (the first seen): a Counter per address would cost hundreds of
    # bytes each under a botnet of a million addresses.
    offender_user: dict[int, str] = field(default_factory=dict)
    finding_counts: Counter[str] = field(default_factory=Counter)
    would_ban: int = 0
    bans: list[dict[str, Any]] = field(default_factory=list)
    successes: Counter[str] = field(default_factory=Counter)
    findings: list[dict[str, Any]] = field(default_factory=list)


class Replay:
    """Runs files through a Parser; yields the events inside the time window."""

    def __init__(
        self,
        zone: tzinfo,
        since: datetime | None = None,
        until: datetime | None = None,
        progress: TextIO | None = None,
        config: Config | None = None,
        jobs: int = 1,
    ) -> None:
        cfg = config or Config()
        self.zone = zone
        self.jobs = jobs
        self.worker_rss_kb: list[int] = []  # the parse process's peak RSS, once reaped
        self._consumed_now = 0
        self.parser = Parser(zone=zone)
        # The rules run exactly as in the daemon (event time), minus alerts; the bans are
        # planned by the daemon's own policy, never placed.
        self.engine = Engine(cfg.detection, History(), zone=zone)
        self.policy = Policy.from_config(cfg)
        self.ban_history = MemoryHistory()
        self.since = since
        self.until = until
        self.progress = progress
        self.summary = Summary()
        self._t0 = time.perf_counter()
        self._last_progress = 0.0
        # Bytes: of every file to read (None: unknown, e.g. a pipe), of the files finished,
        # and how to ask the open one how far it is.
        self._total: int | None = None
        self._done_before = 0
        self._consumed: Callable[[], int] | None = None

    def events(self, paths: list[str]) -> Iterator[Event]:
        """Every event of ``paths`` in order (inside the time window), each counted and
        fed to the rules before it is yielded. With ``jobs`` > 1 the parsing runs in a
        second process (parse_worker.py); the results are the same."""
        if self.progress is not None and "-" not in paths:
            with contextlib.suppress(OSError):
                self._total = sum(os.stat(p).st_size for p in paths)
        if self.jobs > 1:
            yield from self._events_forked(paths)
        else:
            yield from self._events_here(paths)
        self.summary.seconds = time.perf_counter() - self._t0
        if self.progress is not None and self._last_progress:
            self.progress.write("\r\x1b[K")
            self.progress.flush()

    def _events_here(self, paths: list[str]) -> Iterator[Event]:
        parse = self.parser.parse_text
        take = self._take
        for path in paths:
            log = open_counted(path)
            if path == "-" and len(paths) == 1:
                self._total = log.size  # stdin from a file (`< auth.log`): known too
            self._consumed = log.consumed
            self.parser.time.set_reference(log.reference)
            self.engine.set_clock(log.reference.timestamp())  # see Engine.set_clock
            self.summary.files.append(path)
            try:
                for lines in pw.line_batches(log.stream, PROGRESS_EVERY):
                    self._progress()
                    for ev in list(map(parse, lines)):  # the batch parsed, then detected
                        if ev is not None and take(ev):
                            yield ev
            finally:
                log.close()
            if log.size is not None:
                self._done_before += log.size
            self._consumed = None

    def _events_forked(self, paths: list[str]) -> Iterator[Event]:
        unpack = pw.Unpacker()
        take = self._take
        size: int | None = None
        try:
            for msg in pw.parse_forked(paths, self.zone, open_counted, self.worker_rss_kb):
                if isinstance(msg, pw.Batch):
                    self.parser.stats = msg.stats
                    if msg.consumed is not None:
                        self._consumed_now = msg.consumed
                    self._progress()
                    for packed in msg.events:
                        ev = unpack(packed)
                        if take(ev):
                            yield ev
                elif isinstance(msg, pw.FileStart):
                    self.engine.set_clock(msg.reference.timestamp())  # see Engine.set_clock
                    if size is not None:
                        self._done_before += size
                    size = msg.size
                    if msg.path == "-" and len(paths) == 1:
                        self._total = msg.size
                    self._consumed_now = 0
                    self._consumed = self._forked_consumed
                    self.summary.files.append(msg.path)
                else:  # the child's statistics: the last message
                    self.parser.stats = msg
        finally:
            self._consumed = None

    def _forked_consumed(self) -> int:
        return self._consumed_now

    def _take(self, ev: Event) -> bool:
        """Count one parsed event (the summary's tallies) and run the rules on it; False
        when it is outside the time window (then it is neither). Once per event: kept in
        one function, with the Kind members as globals."""
        ts = ev.ts
        since, until = self.since, self.until
        if (since is not None and ts < since) or (until is not None and ts > until):
            return False
        s = self.summary
        if s.first_ts is None or ts < s.first_ts:
            s.first_ts = ts
        if s.last_ts is None or ts > s.last_ts:
            s.last_ts = ts
        kind = ev.kind
        ip = ev.ip
        if kind in FAILURE_KINDS and ip is not None:
            # Keyed by the address as an int: str() of an address costs a microsecond, and a
            # botnet log has hundreds of thousands of them.
            key = address_int(ip)
            s.offenders[key] += ev.count
            if ev.user and key not in s.offender_user:
                s.offender_user[key] = ev.user
        elif kind is _AUTH_SUCCESS and ev.user:
            s.successes[ev.user] += 1
        findings = self.engine.feed(ev)
        if findings:
            now = ts.timestamp()
            for f in findings:
                self._finding(f, now)
        return True

    def _finding(self, f: Finding, now: float) -> None:
        """Count a finding (all of them: the daemon raises every one, also for an address it
        banned a moment ago) and plan its ban as the daemon would, at event time ``now``."""
        s = self.summary
        d = decide(f, self.ban_history, self.policy, now)
        if isinstance(d, Ban):
            self.ban_history.add(d, now)
            s.would_ban += 1
            if len(s.bans) < MAX_FINDINGS_LISTED:
                s.bans.append(
                    {
                        "ts": datetime.fromtimestamp(now, UTC).isoformat(),
                        "net": d.net,
                        "rule": d.rule,
                        "offence": d.offence,
                        "seconds": d.seconds,
                    }
                )
        s.finding_counts[f.rule] += 1
        if len(s.findings) < MAX_FINDINGS_LISTED:
            s.findings.append(
                {
                    "ts": f.events[-1].ts.isoformat() if f.events else None,
                    "rule": f.rule,
                    "severity": str(f.severity),
                    "subject": f.subject,
                    "action": str(f.action),
                    "summary": f.summary,
                }
            )

    def _progress(self) -> None:
        if self.progress is None:
            return
        now = time.perf_counter()
        if now - self._last_progress < PROGRESS_REDRAW:
            return
        self._last_progress = now
        done: int | None = None
        if self._total is not None:
            done = self._done_before
            if self._consumed is not None:
                with contextlib.suppress(OSError, ValueError):
                    done += self._consumed()
        width = _columns(self.progress)
        line = progress_line(self.parser.stats.lines, now - self._t0, done, self._total, width)
        self.progress.write("\r" + line[: max(20, width - 1)] + "\x1b[K")
        self.progress.flush()


def summary_dict(r: Replay, top: int = 10) -> dict[str, Any]:
    st = r.parser.stats
    s = r.summary
    return {
        "files": s.files,
        "lines": st.lines,
        "seconds": round(s.seconds, 3),
        "lines_per_second": round(st.lines / s.seconds) if s.seconds else None,
        "events": st.events,
        "kinds": {str(k): v for k, v in st.kinds.most_common()},
        "other_programs": st.other_programs,
        "malformed": st.malformed,
        "journalctl_notes": st.journal_note_samples,
        "parser_errors": st.errors,
        "unrecognized": st.kinds.get(Kind.UNRECOGNIZED, 0),
        "unrecognized_samples": st.unrecognized_samples,
        "first_event": s.first_ts.isoformat() if s.first_ts else None,
        "last_event": s.last_ts.isoformat() if s.last_ts else None,
        "top_offenders": [
            {
                "ip": str(int_address(key)),
                "failures": n,
                "user": s.offender_user.get(key),
            }
            for key, n in s.offenders.most_common(top)
        ],
        "distinct_offenders": len(s.offenders),
        "successful_logins": dict(s.successes.most_common(top)),
        "findings_by_rule": dict(s.finding_counts.most_common()),
        "bans_that_would_be_placed": s.would_ban,
        "findings": s.findings,
        "bans": s.bans,
        "parse_process_peak_rss_kb": max(r.worker_rss_kb, default=None),
    }


_RANK = {"info": 0, "warning": 1, "high": 2, "critical": 3}


def print_text(d: dict[str, Any], out: TextIO) -> None:
    w = out.write
    w(f"Replayed {len(d['files'])} file(s): {d['lines']:,} lines in {d['seconds']:.2f} s")
    if d["lines_per_second"]:
        w(f" ({d['lines_per_second']:,} lines/s)")
    w("\n")
    if d["first_event"]:
        w(f"Events from {d['first_event']} to {d['last_event']}\n")
    w(
        f"\nEvents: {d['events']:,}   other programs skipped: {d['other_programs']:,}   "
        f"malformed lines: {d['malformed']:,}   parser errors: {d['parser_errors']}\n"
    )
    for kind, n in d["kinds"].items():
        w(f"  {kind:<20} {n:>10,}\n")
    notes = d.get("journalctl_notes") or []
    if notes and not d["events"]:
        # What journalctl said itself ("-- No entries --") is why a replay of it found nothing.
        w(
            "journalctl said: " + "; ".join(visible(n) for n in notes[:3]) + "\n"
            "  (the ssh unit is ssh on Debian/Ubuntu, sshd elsewhere; reading the system "
            "journal needs root or the systemd-journal group)\n"
        )
    if d["unrecognized"]:
        w(
            f"\nUnrecognized sshd lines: {d['unrecognized']:,} (samples below; please report "
            "them so the catalogue can grow)\n"
        )
        for line in d["unrecognized_samples"]:
            w(f"  {line}\n")
    if d["top_offenders"]:
        w(f"\nTop offending addresses ({d['distinct_offenders']:,} in all):\n")
        for o in d["top_offenders"]:
            w(f"  {o['ip']:<40} {o['failures']:>8,}  {o['user'] or ''}\n")
    if d["successful_logins"]:
        w("\nSuccessful logins by user:\n")
        for u, n in d["successful_logins"].items():
            w(f"  {u:<30} {n:>8,}\n")
    if d["findings_by_rule"]:
        total = sum(d["findings_by_rule"].values())
        per_rule = ", ".join(f"{r} {n:,}" for r, n in d["findings_by_rule"].items())
        w(
            f"\nFindings the rules would raise: {total:,} ({per_rule}); "
            f"{d['bans_that_would_be_placed']:,} bans would be placed\n"
        )
        shown = sorted(d["findings"], key=lambda f: -_RANK.get(f["severity"], 0))[:20]
        for f in shown:
            w(f"  {f['ts'] or ''}  [{f['severity']}] {f['rule']} {f['subject']}: {f['summary']}\n")
        if total > len(shown):
            w(
                f"  ... {total - len(shown):,} more (--format json --summary lists up to "
                f"{MAX_FINDINGS_LISTED})\n"
            )
    if d["bans"]:
        w("\nBans the daemon would place (offence, length):\n")
        for b in d["bans"][:20]:
            w(f"  {b['ts']}  {b['net']:<40} {b['rule']}  #{b['offence']}, {b['seconds']:,}s\n")
        if d["bans_that_would_be_placed"] > 20:
            w(f"  ... {d['bans_that_would_be_placed'] - 20:,} more\n")


def default_jobs(cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """Two processes (parse, and detect) where there are two cores to run them: in the
    affinity mask, and within a cgroup v2 CPU quota if one is set (a container or a
    systemd unit with CPUQuota= below 200 % would only make them take turns)."""
    if len(os.sched_getaffinity(0)) < 2:
        return 1
    with contextlib.suppress(OSError, ValueError):
        with open(cpu_max, encoding="ascii") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max" and int(quota) < 2 * int(period):
            return 1
    return 2


def run(
    paths: list[str],
    fmt: str,
    summary_only: bool,
    since: str | None,
    until: str | None,
    timezone: str,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    config: Config | None = None,
    jobs: int | None = None,
) -> int:
    """The ``sshmonitor replay`` command, with the daemon's whole ``config`` (detection,
    response, allowlist). Returns the exit status."""
    zone = load_zone(timezone)
    now = datetime.now(UTC)
    try:
        # Naive times are the log's zone (its classic stamps carry none).
        t_from = parse_when(since, now, zone).astimezone(UTC) if since else None
        t_to = parse_when(until, now, zone).astimezone(UTC) if until else None
    except ValueError as exc:
        err.write(f"sshmonitor replay: {exc}\n")
        return 2
    if paths.count("-") > 1:
        err.write("sshmonitor replay: - (standard input) can be read only once\n")
        return 2
    for p in paths:
        if p != "-" and not os.path.isfile(p):
            err.write(f"sshmonitor replay: {p}: no such file\n")
            return 2
    r = Replay(
        zone,
        t_from,
        t_to,
        progress=err if err.isatty() else None,
        config=config,
        jobs=default_jobs() if jobs is None else jobs,
    )
    try:
        if fmt == "json" and not summary_only:
            write = out.write
            dumps = json.dumps
            for ev in r.events(paths):
                if ev.kind is Kind.UNRECOGNIZED or ev.kind is Kind.IGNORED:
                    continue
                write(dumps(event_json(ev), ensure_ascii=False) + "\n")
            json.dump(summary_dict(r), err, indent=2)
            err.write("\n")
            return 0
        for _ in r.events(paths):
            pass
    except (OSError, EOFError, zlib.error, pw.ParseProcessError) as exc:
        # A damaged or cut-off compressed file (EOFError, zlib.error): say which error, and
        # what was read before it.
        if r.progress is not None:
            r.progress.write("\r\033[K")
        err.write(f"sshmonitor replay: {exc or type(exc).__name__}; stopped there\n")
        print_text(summary_dict(r), err)
        return 1
    d = summary_dict(r)
    if fmt == "json":
        json.dump(d, out, indent=2)
        out.write("\n")
    else:
        print_text(d, out)
    return 0
