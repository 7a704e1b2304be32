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

import gzip
import io
import ipaddress
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, TextIO

from .config import Config
from .detect.engine import Engine, History
from .events import Event, Finding, Kind
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
PROGRESS_EVERY = 65536
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
        "ip": None if ev.ip is None else str(ev.ip),
        "port": ev.port,
        "method": ev.method,
        "key_fp": ev.key_fp,
        "count": ev.count,
        "detail": ev.detail,
    }


def open_log(path: str) -> tuple[TextIO, datetime]:
    """A text stream over a plain or gzipped file (or stdin for ``-``) and its reference time."""
    if path == "-":
        stream = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
        return stream, datetime.now(UTC)
    mtime = datetime.fromtimestamp(os.stat(path).st_mtime, UTC)
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace"), mtime
    return open(path, encoding="utf-8", errors="replace", newline="\n"), mtime


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
    ) -> None:
        cfg = config or Config()
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

    def events(self, paths: list[str]) -> Iterator[Event]:
        parse = self.parser.parse_text
        since, until = self.since, self.until
        for path in paths:
            stream, reference = open_log(path)
            self.parser.time.set_reference(reference)
            self.summary.files.append(path)
            n = 0
            with stream:
                for line in stream:
                    n += 1
                    if n % PROGRESS_EVERY == 0:
                        self._progress()
                    ev = parse(line[:-1] if line.endswith("\n") else line)
                    if ev is None:
                        continue
                    if (since is not None and ev.ts < since) or (
                        until is not None and ev.ts > until
                    ):
                        continue
                    self._account(ev)
                    findings = self.engine.feed(ev)
                    if findings:
                        now = ev.ts.timestamp()
                        for f in findings:
                            self._finding(f, now)
                    yield ev
        self.summary.seconds = time.perf_counter() - self._t0
        if self.progress is not None and self._last_progress:
            self.progress.write("\r\x1b[K")
            self.progress.flush()

    def _account(self, ev: Event) -> None:
        s = self.summary
        if s.first_ts is None or ev.ts < s.first_ts:
            s.first_ts = ev.ts
        if s.last_ts is None or ev.ts > s.last_ts:
            s.last_ts = ev.ts
        if ev.kind in FAILURE_KINDS and ev.ip is not None:
            # Keyed by the address's integer (IPv6 negated): str() of an address costs a
            # microsecond, and a botnet log has hundreds of thousands of them. The private _ip,
            # not int(ip): __int__ is a Python-level call, ~100 ns more per failure event here.
            ip = ev.ip
            key = ip._ip if ip.version == 4 else -ip._ip - 1  # type: ignore[attr-defined]  # speed
            s.offenders[key] += ev.count
            if ev.user and key not in s.offender_user:
                s.offender_user[key] = ev.user
        elif ev.kind is Kind.AUTH_SUCCESS and ev.user:
            s.successes[ev.user] += 1

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
        if now - self._last_progress < 0.5:
            return
        self._last_progress = now
        n = self.parser.stats.lines
        rate = n / max(now - self._t0, 1e-9)
        self.progress.write(f"\r  {n:,} lines read, {rate / 1000:,.0f}k lines/s ...")
        self.progress.flush()


def _ip_text(key: int) -> str:
    if key >= 0:
        return str(ipaddress.IPv4Address(key))
    return str(ipaddress.IPv6Address(-key - 1))


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
        "parser_errors": st.errors,
        "unrecognized": st.kinds.get(Kind.UNRECOGNIZED, 0),
        "unrecognized_samples": st.unrecognized_samples,
        "first_event": s.first_ts.isoformat() if s.first_ts else None,
        "last_event": s.last_ts.isoformat() if s.last_ts else None,
        "top_offenders": [
            {
                "ip": _ip_text(key),
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
    except OSError as exc:
        err.write(f"sshmonitor replay: {exc}\n")
        return 1
    d = summary_dict(r)
    if fmt == "json":
        json.dump(d, out, indent=2)
        out.write("\n")
    else:
        print_text(d, out)
    return 0
