"""The report: what happened over a period, as text, HTML or JSON — daily by mail, or on demand.

``sshmonitor report [--since 24h] [--format text|html|json]`` and the scheduled daily report
(``notify.report``) are the same summary, built by :func:`build_report` from the store alone:

* failed login attempts by address (top N, with first/last seen, user names tried, banned?);
* invalid user names tried (top N) and existing accounts attacked (top N);
* successful logins (user, address, method, keys, when; flagged when the address also failed);
* sessions, commands and file transfers when the store has those tables (else "not recorded");
* bans placed, expired and lifted in the period, and active at its end;
* alerts raised (findings by rule and severity; the login-related and critical ones listed),
  and alerts still waiting in the spool;
* an hourly chart of failures and bans: a Unicode sparkline in text, CSS bars in HTML.

**What one failure is** (the same idea as the detection rules, docs/detection.md): sshd's own
``Failed <method> …`` line counts (weighted by its ``count``: rsyslog's "message repeated N
times"); PAM's restatements (``method = pam``) do not; an ``Invalid user X from A port P`` line
counts only when no ``Failed … `` line from the same address and port follows within
:data:`ATTEMPT_WINDOW` (a scanner probing for names with keys only, never trying a password);
otherwise the ``Failed`` line already stands for that attempt.

Everything a client chose — user names, key fingerprints, ban reasons and finding summaries that
embed them — is attacker-controlled: text output goes through :func:`~.render.visible`, HTML
through :func:`~.render.h` (entity-escaped, quotes too), JSON through ``json.dumps`` with
``ensure_ascii`` (so a bidi override cannot reorder a terminal line either).

Queries use the events indexes (``events(kind, ts)``, ``events(ip, ts)``, ``events(ts)``) and
bucket in SQL; bench numbers are in docs/alerts.md ("Reports").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import math
import os
import re
import socket
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .. import log
from ..events import Kind
from .alert import DeliveryError, Message, severity_rank
from .render import COLOURS, LOGIN_RULES, MAX_SUBJECT, SUBJECT_PREFIX, h, one_line, visible

__all__ = [
    "ReportScheduler",
    "ReportSettings",
    "build_report",
    "cmd_report",
    "parse_clock",
    "parse_when",
    "register",
    "render_report",
    "report_message",
    "report_settings",
    "sparkline",
]

REPORT_VERSION = 1
# An "Invalid user" line and sshd's "Failed … for invalid user" line for the same attempt are
# this close at most (sshd's LoginGraceTime defaults to 120 s).
ATTEMPT_WINDOW = 600.0
MAX_BUCKETS = 168  # chart columns at most (a week of hours); longer periods get wider buckets
SPARK = "▁▂▃▄▅▆▇█"
LOGIN_GROUPS_MIN = 50  # successful-login rows shown at least (top N if larger)
NAME_WIDTH = 40  # attacker-controlled names are cut to this many characters in tables
FAILED_LINE = "kind = 'auth_failure' AND (method IS NULL OR method <> 'pam')"
FORMATS = ("text", "html", "json")


# ============================================================================ time helpers


def parse_when(text: str, now: float) -> float:
    """``--since``/``--until``: ``now``, a duration ago (``24h``, ``90m``, ``7d``) or an
    ISO 8601 time (``2026-11-24T07:00``; without a zone: this machine's local time)."""
    from ..config import parse_duration

    t = text.strip()
    if t.lower() == "now":
        return now
    try:
        return now - parse_duration(t)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (24h, 7d) nor an ISO 8601 time (2026-11-24T07:00)"
        ) from None
    return dt.timestamp()  # naive → local time (mktime), aware → its own zone


def parse_clock(text: str | int) -> tuple[int, int]:
    """``"07:00"`` → (7, 0). Raises ValueError for anything but a valid ``H:MM``/``HH:MM``.

    An int is minutes after midnight: YAML 1.1 (PyYAML) reads an unquoted ``23:30`` or
    ``7:30`` as the sexagesimal number 1410 or 450 (but ``07:00`` as a string)."""
    if isinstance(text, int) and not isinstance(text, bool):
        if not 0 <= text < 24 * 60:
            raise ValueError(f"{text!r} is not a time of day (HH:MM, 00:00-23:59)")
        return divmod(text, 60)
    m = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", str(text))
    if m is None or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError(f"{text!r} is not a time of day (HH:MM, 00:00-23:59)")
    return int(m.group(1)), int(m.group(2))


def _local(ts: float) -> datetime:
    return datetime.fromtimestamp(ts)  # naive local time: DST-correct arithmetic via mktime


def _short(ts: float | None) -> str:
    return "-" if ts is None else _local(ts).strftime("%m-%d %H:%M")


def _long(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()


def _span(seconds: float) -> str:
    """``1d 2h``, ``3h 5m``, ``42s``."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    d, s = divmod(s, 86400)
    hh, s = divmod(s, 3600)
    m = s // 60
    parts = [f"{d}d"] if d else []
    if hh:
        parts.append(f"{hh}h")
    if m and not d:
        parts.append(f"{m}m")
    return " ".join(parts) or "0m"


def _n(x: int | float) -> str:
    return f"{int(x):,}"


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{_n(n)} {word if n == 1 else (plural or word + 's')}"


# ============================================================================ building


def _tables(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """Every table in the database and its columns (the schema may be older or newer)."""
    out: dict[str, list[str]] = {}
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for name in names:
        out[name] = [r[1] for r in conn.execute(f'PRAGMA table_info("{name}")')]
    return out


def chart_axis(since: float, until: float) -> tuple[float, float, int]:
    """(origin, bucket seconds, number of buckets): buckets start on a local clock hour and
    are one hour wide, or a whole number of hours when the period is longer than a week."""
    dt = _local(since)
    origin = dt.replace(minute=0, second=0, microsecond=0).timestamp()
    if origin > since:  # a DST gap at the start of the hour
        origin -= 3600
    hours = max(1, math.ceil((until - origin) / 3600))
    width = max(1, math.ceil(hours / MAX_BUCKETS))
    bucket = 3600.0 * width
    return origin, bucket, max(1, math.ceil((until - origin) / bucket))


def build_report(
    conn: sqlite3.Connection,
    since: float,
    until: float,
    top: int = 10,
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """The summary of ``[since, until)`` as plain, JSON-serialisable data. Pure over the DB:
    read-only queries, no clock but ``now`` (when it was built; defaults to the real time)."""
    started = time.perf_counter()
    now = time.time() if now is None else now
    top = max(1, int(top))
    tables = _tables(conn)
    origin, bucket, nb = chart_axis(since, until)
    rng = (since, until)
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "since": since,
        "until": until,
        "generated": now,
        "top": top,
        "schema_version": conn.execute("PRAGMA user_version").fetchone()[0],
        "chart": {"origin": origin, "bucket": bucket, "failures": [0] * nb, "bans": [0] * nb},
    }
    fail_chart: list[int] = report["chart"]["failures"]
    ban_chart: list[int] = report["chart"]["bans"]

    def slot(b: int) -> int:
        return min(max(int(b), 0), nb - 1)

    # -------------------------------------------------------------- failures
    by_ip: dict[str | None, list[Any]] = {}  # ip -> [count, first, last]
    failed_lines = unmatched_invalid = 0
    events_by_kind: dict[str, int] = {}
    if "events" in tables:
        # One count per kind on the (kind, ts) index: index-only, no row is read.
        for kind in Kind:
            n = conn.execute(
                "SELECT COUNT(*) FROM events WHERE kind = ? AND ts >= ? AND ts < ?",
                (str(kind), *rng),
            ).fetchone()[0]
            if n:
                events_by_kind[str(kind)] = int(n)
        buckets = f"CAST((ts - {origin!r}) / {bucket!r} AS INTEGER)"
        # (what, sql, params): params are (since, until) plus the window for 'invalid'.
        queries: list[tuple[str, str, tuple[float, ...]]] = []
        if events_by_kind.get("auth_failure"):
            queries.append(
                (
                    "failed",
                    f"SELECT ip, {buckets} AS b, SUM(count), MIN(ts), MAX(ts) FROM events "
                    f"WHERE {FAILED_LINE} AND ts >= ? AND ts < ? GROUP BY ip, b",
                    rng,
                )
            )
        if events_by_kind.get("invalid_user"):
            queries.append(
                (
                    "invalid",
                    f"SELECT e.ip, CAST((e.ts - {origin!r}) / {bucket!r} AS INTEGER) AS b, "
                    "COUNT(*), MIN(e.ts), MAX(e.ts) FROM events AS e "
                    "WHERE e.kind = 'invalid_user' AND e.ts >= ? AND e.ts < ? AND NOT EXISTS ("
                    "SELECT 1 FROM events AS f INDEXED BY events_ip_ts "
                    "WHERE f.ip = e.ip AND f.ts >= e.ts AND f.ts <= e.ts + ? "
                    "AND f.kind = 'auth_failure' AND (f.method IS NULL OR f.method <> 'pam') "
                    "AND (e.port IS NULL OR f.port IS NULL OR f.port = e.port)) "
                    "GROUP BY e.ip, b",
                    (*rng, ATTEMPT_WINDOW),
                )
            )
        for what, sql, params in queries:
            try:
                rows = conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError:  # an index missing: same query, planner's choice
                rows = conn.execute(sql.replace(" INDEXED BY events_ip_ts", ""), params).fetchall()
            for ip, b, n, first, last in rows:
                n = int(n or 0)
                if what == "failed":
                    failed_lines += n
                else:
                    unmatched_invalid += n
                fail_chart[slot(b)] += n
                cur = by_ip.get(ip)
                if cur is None:
                    by_ip[ip] = [n, first, last]
                else:
                    cur[0] += n
                    cur[1] = min(cur[1], first)
                    cur[2] = max(cur[2], last)
    report["events"] = dict(sorted(events_by_kind.items()))

    bans_rows = _ban_rows(conn, tables, since, until)
    banned_lookup = _BanLookup(bans_rows)
    ranked = sorted(by_ip.items(), key=lambda kv: (-kv[1][0], kv[1][1], str(kv[0])))
    top_ips = []
    for ip, (n, first, last) in ranked[:top]:
        users = 0
        if ip is not None:
            users = conn.execute(
                "SELECT COUNT(DISTINCT user) FROM events WHERE ip = ? AND ts >= ? AND ts < ? "
                "AND kind IN ('auth_failure', 'invalid_user')",
                (ip, since, until),
            ).fetchone()[0]
        top_ips.append(
            {
                "ip": ip,
                "count": n,
                "first": first,
                "last": last,
                "users": int(users or 0),
                "banned": banned_lookup.banned(ip),
            }
        )
    report["failures"] = {
        "total": failed_lines + unmatched_invalid,
        "failed_lines": failed_lines,
        "invalid_user_only": unmatched_invalid,
        "addresses": len(by_ip),
        "top": top_ips,
        "more": max(0, len(by_ip) - len(top_ips)),
    }

    # -------------------------------------------------------------- user names
    inv_total = inv_names = 0
    inv_top: list[dict[str, Any]] = []
    if events_by_kind.get("invalid_user"):
        # Every name in one pass (totals from the groups), the top N picked here.
        rows = conn.execute(
            "SELECT user, COUNT(*) AS n, COUNT(DISTINCT ip), MIN(ts), MAX(ts) FROM events "
            "WHERE kind = 'invalid_user' AND ts >= ? AND ts < ? GROUP BY user",
            rng,
        ).fetchall()
        inv_total, inv_names = sum(int(r[1]) for r in rows), len(rows)
        rows.sort(key=lambda r: (-r[1], r[3], str(r[0])))
        inv_top = [
            {"user": u, "count": int(n), "addresses": int(a), "first": f, "last": la}
            for u, n, a, f, la in rows[:top]
        ]
    report["invalid_users"] = {
        "total": int(inv_total or 0),
        "names": int(inv_names or 0),
        "top": inv_top,
        "more": max(0, int(inv_names or 0) - len(inv_top)),
    }
    acc_top: list[dict[str, Any]] = []
    acc_names = 0
    if events_by_kind.get("auth_failure"):
        rows = conn.execute(
            "SELECT user, SUM(count) AS n, COUNT(DISTINCT ip), MIN(ts), MAX(ts) FROM events "
            f"WHERE {FAILED_LINE} AND ts >= ? AND ts < ? AND user IS NOT NULL "
            "AND (detail IS NULL OR json_extract(detail, '$.invalid_user') IS NOT 1) "
            "GROUP BY user ORDER BY n DESC, MIN(ts)",
            rng,
        ).fetchall()
        acc_names = len(rows)
        acc_top = [
            {"user": u, "count": int(n), "addresses": int(a), "first": f, "last": la}
            for u, n, a, f, la in rows[:top]
        ]
    report["accounts"] = {"names": acc_names, "top": acc_top, "more": acc_names - len(acc_top)}

    # -------------------------------------------------------------- logins
    groups: list[dict[str, Any]] = []
    logins = 0
    if events_by_kind.get("auth_success"):
        rows = conn.execute(
            "SELECT user, ip, method, COUNT(*), MIN(ts), MAX(ts), "
            "GROUP_CONCAT(DISTINCT key_fp) FROM events "
            "WHERE kind = 'auth_success' AND ts >= ? AND ts < ? "
            "GROUP BY user, ip, method ORDER BY MIN(ts)",
            rng,
        ).fetchall()
        for user, ip, method, n, first, last, keys in rows:
            logins += int(n)
            groups.append(
                {
                    "user": user,
                    "ip": ip,
                    "method": method,
                    "count": int(n),
                    "first": first,
                    "last": last,
                    "keys": sorted(str(k) for k in (keys or "").split(",") if k),
                    "failures_from_ip": int(by_ip[ip][0]) if ip in by_ip else 0,
                }
            )
    limit = max(LOGIN_GROUPS_MIN, top)
    report["logins"] = {
        "total": logins,
        "users": len({g["user"] for g in groups}),
        "addresses": len({g["ip"] for g in groups}),
        "groups": groups[:limit],
        "more": max(0, len(groups) - limit),
    }

    # -------------------------------------------------------------- sessions, audit trail
    report["sessions"] = _sessions(conn, tables, since, until, top)
    report["activity"] = _activity(conn, tables, since, until)

    # -------------------------------------------------------------- bans
    report["bans"] = _bans(bans_rows, since, until, top, ban_chart, origin, bucket, nb)

    # -------------------------------------------------------------- alerts
    report["alerts"] = _alerts(conn, tables, since, until, top)
    report["build_seconds"] = round(time.perf_counter() - started, 4)
    return report


class _BanLookup:
    """Was an address covered by a ban that overlapped the period? (by prefix length)"""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.nets: dict[tuple[int, int], set[str]] = {}
        for r in rows:
            try:
                net = ipaddress.ip_network(r["net"], strict=False)
            except ValueError:
                continue
            self.nets.setdefault((net.version, net.prefixlen), set()).add(str(net))

    def banned(self, ip: str | None) -> bool:
        if ip is None or not self.nets:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        for (version, plen), nets in self.nets.items():
            if version == addr.version and (
                str(ipaddress.ip_network(f"{addr}/{plen}", strict=False)) in nets
            ):
                return True
        return False


def _ban_rows(
    conn: sqlite3.Connection, tables: dict[str, list[str]], since: float, until: float
) -> list[dict[str, Any]]:
    """Bans that existed at some moment of the period (or were placed in it)."""
    if "bans" not in tables:
        return []
    return [
        dict(
            zip(
                (
                    "net",
                    "rule",
                    "reason",
                    "offence",
                    "created",
                    "expires",
                    "active",
                    "lifted",
                    "lifted_by",
                    "dry_run",
                ),
                r,
                strict=True,
            )
        )
        for r in conn.execute(
            "SELECT net, rule, reason, offence, created, expires, active, lifted, lifted_by, "
            "dry_run FROM bans WHERE created < ? AND expires >= ? "
            "AND (lifted IS NULL OR lifted >= ?) ORDER BY created",
            (until, since, since),
        )
    ]


def _ban_end(r: dict[str, Any]) -> tuple[float, str]:
    """When and how a ban ended (or will end): (time, "expired" | who lifted it)."""
    lifted, by, expires = r["lifted"], r["lifted_by"], float(r["expires"])
    if lifted is None or by == "expired" or float(lifted) >= expires:
        return expires, "expired"
    return float(lifted), str(by or "operator")


def _bans(
    rows: list[dict[str, Any]],
    since: float,
    until: float,
    top: int,
    chart: list[int],
    origin: float,
    bucket: float,
    nb: int,
) -> dict[str, Any]:
    placed = [r for r in rows if since <= r["created"] < until]
    by_rule: dict[str, int] = {}
    for r in placed:
        by_rule[r["rule"]] = by_rule.get(r["rule"], 0) + 1
        chart[min(max(int((r["created"] - origin) // bucket), 0), nb - 1)] += 1
    expired = 0
    lifted: list[dict[str, Any]] = []
    lifted_by: dict[str, int] = {}
    active = 0
    for r in rows:
        end, how = _ban_end(r)
        r["ended"], r["ended_by"] = end, how
        if end >= until:
            active += 0 if r["dry_run"] else 1
            r["state"] = "active"
        elif how == "expired":
            r["state"] = "expired"
        else:
            r["state"] = f"lifted by {how}"
        if not since <= end < until:
            continue
        if how == "expired":
            expired += 1
        else:
            lifted_by[how] = lifted_by.get(how, 0) + 1
            lifted.append(r)

    def public(r: dict[str, Any]) -> dict[str, Any]:
        keys = ("net", "rule", "reason", "offence", "created", "expires", "dry_run", "state")
        d = {k: r[k] for k in keys}
        d["dry_run"] = bool(d["dry_run"])
        if r["state"] != "active":
            d["ended"] = r["ended"]
        return d

    recent = sorted(placed, key=lambda r: -r["created"])[:top]
    return {
        "placed": len(placed),
        "placed_dry_run": sum(1 for r in placed if r["dry_run"]),
        "by_rule": dict(sorted(by_rule.items(), key=lambda kv: (-kv[1], kv[0]))),
        "expired": expired,
        "lifted": len(lifted),
        "lifted_by": dict(sorted(lifted_by.items())),
        "active_at_end": active,
        "recent": [public(r) for r in recent],
        "lifted_list": [public(r) for r in lifted[-top:]],
        "more": max(0, len(placed) - len(recent)),
    }


def _alerts(
    conn: sqlite3.Connection, tables: dict[str, list[str]], since: float, until: float, top: int
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "total": 0,
        "by_severity": {},
        "by_rule": [],
        "notable": [],
        "pending": [],
    }
    if "findings" in tables:
        rows = conn.execute(
            "SELECT rule, severity, COUNT(*), COUNT(DISTINCT subject) FROM findings "
            "WHERE ts >= ? AND ts < ? GROUP BY rule, severity",
            (since, until),
        ).fetchall()
        by_rule = [
            {"rule": r, "severity": s, "count": int(n), "subjects": int(k)} for r, s, n, k in rows
        ]
        by_rule.sort(key=lambda d: (-severity_rank(d["severity"]), -d["count"], d["rule"]))
        sev: dict[str, int] = {}
        for d in by_rule:
            sev[d["severity"]] = sev.get(d["severity"], 0) + d["count"]
        out["total"] = sum(d["count"] for d in by_rule)
        out["by_severity"] = dict(sorted(sev.items(), key=lambda kv: -severity_rank(kv[0])))
        out["by_rule"] = by_rule
        marks = ",".join("?" * len(LOGIN_RULES))
        out["notable"] = [
            {"ts": ts, "rule": r, "severity": s, "subject": subj, "summary": summ}
            for ts, r, s, subj, summ in conn.execute(
                "SELECT ts, rule, severity, subject, summary FROM findings "
                f"WHERE ts >= ? AND ts < ? AND (severity = 'critical' OR rule IN ({marks})) "
                "ORDER BY ts DESC LIMIT ?",
                (since, until, *sorted(LOGIN_RULES), top),
            )
        ]
        out["notable_total"] = conn.execute(
            "SELECT COUNT(*) FROM findings "
            f"WHERE ts >= ? AND ts < ? AND (severity = 'critical' OR rule IN ({marks}))",
            (since, until, *sorted(LOGIN_RULES)),
        ).fetchone()[0]
    if "alert_spool" in tables:
        out["pending"] = [
            {"channel": c, "count": int(n), "oldest": o, "attempts": int(a or 0)}
            for c, n, o, a in conn.execute(
                "SELECT channel, COUNT(*), MIN(created), MAX(attempts) FROM alert_spool "
                "GROUP BY channel ORDER BY channel"
            )
        ]
    return out


def _pick(cols: list[str], *candidates: str) -> str | None:
    return next((c for c in candidates if c in cols), None)


def _sessions(
    conn: sqlite3.Connection, tables: dict[str, list[str]], since: float, until: float, top: int
) -> dict[str, Any]:
    """Sessions overlapping the period, from the audit trail's ``sessions`` table when the
    store has one (schema 6+). Columns are looked up by name, so an older or newer layout
    degrades to "not recorded" instead of failing the whole report."""
    cols = tables.get("sessions")
    if cols is None:
        return {"available": False, "reason": "this store has no sessions table"}
    start = _pick(cols, "start", "started", "start_ts", "opened", "login_ts", "begin", "ts")
    end = _pick(cols, "end", "ended", "end_ts", "closed", "logout_ts", "finished", "stopped")
    if start is None or end is None:
        return {"available": False, "reason": "sessions table has no start/end time columns"}
    want = {
        "id": _pick(cols, "id", "session_id", "sid"),
        "user": _pick(cols, "user", "username"),
        "ip": _pick(cols, "ip", "addr", "address", "remote_ip", "source"),
        "method": _pick(cols, "method"),
        "start": start,
        "end": end,
        "state": _pick(cols, "state", "status"),
        "commands": _pick(cols, "commands"),
        "transfers": _pick(cols, "transfers"),
    }
    select = ", ".join(f'"{c}"' if c else "NULL" for c in want.values())
    try:
        rows = conn.execute(
            f'SELECT {select} FROM sessions WHERE "{start}" < ? '
            f'AND ("{end}" IS NULL OR "{end}" >= ?) ORDER BY "{start}"',
            (until, since),
        ).fetchall()
    except sqlite3.Error as exc:
        return {"available": False, "reason": f"cannot read sessions: {exc}"}
    items = []
    for row in rows:
        d = dict(zip(want, row, strict=True))
        try:
            d["start"] = float(d["start"])
            d["end"] = None if d["end"] is None else float(d["end"])
        except (TypeError, ValueError):
            continue
        # Open at the period's end: no end yet, or an end after it (a "lost" session's end
        # is the last moment it was seen alive, so it was alive then).
        d["open_at_end"] = d["end"] is None or d["end"] > until
        d["duration"] = (until if d["open_at_end"] else d["end"]) - d["start"]
        items.append(d)

    def lost(d: dict[str, Any]) -> bool:
        return str(d["state"] or "").lower() == "lost"

    active = [d for d in items if d["open_at_end"]]
    longest = sorted(items, key=lambda d: -d["duration"])[: min(top, 5)]
    return {
        "available": True,
        "total": len(items),
        "started": sum(1 for d in items if since <= d["start"] < until),
        "ended": sum(1 for d in items if not d["open_at_end"] and d["end"] >= since),
        "lost": sum(1 for d in items if lost(d) and not d["open_at_end"]),
        "active_at_end": len(active),
        "active": active[:top],
        "longest": longest,
        "users": len({d["user"] for d in items}),
    }


def _activity(
    conn: sqlite3.Connection, tables: dict[str, list[str]], since: float, until: float
) -> dict[str, Any]:
    """What the audit trail recorded in the period: commands (by kind: sudo, su, exec) and
    SFTP file operations (by op: upload, download, remove, ...) with bytes moved."""
    out: dict[str, Any] = {}
    for table in ("commands", "transfers"):
        cols = tables.get(table)
        ts = None if cols is None else _pick(cols, "ts", "time", "created")
        if cols is None or ts is None:
            continue
        kind = _pick(cols, "kind", "op")
        bounds = f'WHERE "{ts}" >= ? AND "{ts}" < ?'
        try:
            if kind is None:
                by: dict[str, int] = {}
                n = conn.execute(f'SELECT COUNT(*) FROM "{table}" {bounds}', (since, until))
                total = int(n.fetchone()[0])
            else:
                by = {
                    str(k): int(c)
                    for k, c in conn.execute(
                        f'SELECT "{kind}", COUNT(*) AS c FROM "{table}" {bounds} '
                        f'GROUP BY "{kind}" ORDER BY c DESC, "{kind}"',
                        (since, until),
                    )
                }
                total = sum(by.values())
            out[table] = {"total": total, "by": by}
            if table == "transfers":
                up, down = _pick(cols, "bytes_written"), _pick(cols, "bytes_read")
                for key, col in (("bytes_up", up), ("bytes_down", down)):
                    if col is not None:
                        out[table][key] = int(
                            conn.execute(
                                f'SELECT COALESCE(SUM("{col}"), 0) FROM "{table}" {bounds}',
                                (since, until),
                            ).fetchone()[0]
                        )
        except sqlite3.Error:
            continue
    return out


# ============================================================================ rendering


def sparkline(values: Sequence[int | float], vmax: float | None = None) -> str:
    """One character per value, linear from ``▁`` (up to 1/8 of ``vmax``) to ``█`` (``vmax``);
    zero is a blank, so "none" and "a few" look different."""
    top = max(values, default=0) if vmax is None else vmax
    out = []
    for v in values:
        if v <= 0 or top <= 0:
            out.append(" ")
        else:
            out.append(SPARK[min(len(SPARK), max(1, math.ceil(v * len(SPARK) / top))) - 1])
    return "".join(out)


def _period_text(r: dict[str, Any]) -> str:
    return f"{_long(r['since'])} → {_long(r['until'])} ({_span(r['until'] - r['since'])})"


def _summary_lines(r: dict[str, Any]) -> list[tuple[str, str]]:
    f, inv, lg, b, al, se = (
        r["failures"],
        r["invalid_users"],
        r["logins"],
        r["bans"],
        r["alerts"],
        r["sessions"],
    )
    rows = [
        (
            "Failed logins",
            f"{_plural(f['total'], 'attempt')} from "
            f"{_plural(f['addresses'], 'address', 'addresses')}",
        ),
        (
            "Invalid user names",
            f"{_plural(inv['names'], 'name')} in {_plural(inv['total'], 'try', 'tries')}",
        ),
        (
            "Successful logins",
            f"{_n(lg['total'])} ({_plural(lg['users'], 'user')} from "
            f"{_plural(lg['addresses'], 'address', 'addresses')})",
        ),
    ]
    if se.get("available"):
        rows.append(
            (
                "Sessions",
                f"{_n(se['total'])} ({_n(se['started'])} started, {_n(se['active_at_end'])} "
                f"open at the end" + (f", {_n(se['lost'])} lost" if se["lost"] else "") + ")",
            )
        )
    act = r.get("activity") or {}
    if act:
        bits = []
        if "commands" in act:
            c = act["commands"]
            what = ", ".join(f"{_name(k, 20)} {_n(v)}" for k, v in list(c["by"].items())[:4])
            bits.append(_plural(c["total"], "command") + (f" ({what})" if what else ""))
        if "transfers" in act:
            t = act["transfers"]
            what = ", ".join(f"{_name(k, 20)} {_n(v)}" for k, v in list(t["by"].items())[:4])
            moved = [
                f"{_bytes(t[k])} {arrow}"
                for k, arrow in (("bytes_up", "up"), ("bytes_down", "down"))
                if t.get(k)
            ]
            bits.append(
                _plural(t["total"], "file operation")
                + (f" ({what})" if what else "")
                + (f", {' and '.join(moved)}" if moved else "")
            )
        rows.append(("Audit trail", "; ".join(bits)))
    dry = f" ({_n(b['placed_dry_run'])} dry run)" if b["placed_dry_run"] else ""
    rows.append(
        (
            "Bans",
            f"{_n(b['placed'])} placed{dry}, {_n(b['expired'])} expired, {_n(b['lifted'])} "
            f"lifted, {_n(b['active_at_end'])} active at the end",
        )
    )
    sev = ", ".join(f"{_n(n)} {s}" for s, n in al["by_severity"].items())
    rows.append(("Alerts", f"{_n(al['total'])}" + (f" ({sev})" if sev else "")))
    pend = sum(p["count"] for p in al["pending"])
    if pend:
        rows.append(("Undelivered alerts", f"{_n(pend)} waiting in the spool"))
    return rows


def _name(text: Any, width: int = NAME_WIDTH) -> str:
    """An attacker-controlled value for a text table: visible, one line, capped."""
    if text is None:
        return "-"
    return one_line(str(text), width) or '""'


def _table(head: Sequence[str], rows: list[Sequence[str]], right: set[int]) -> list[str]:
    widths = [max([len(hd)] + [len(row[i]) for row in rows]) for i, hd in enumerate(head)]

    def fmt(cells: Sequence[str]) -> str:
        out = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        return ("  " + "  ".join(out)).rstrip()

    return [fmt(head), *(fmt(r) for r in rows)]


TEXT_ROW = 24  # sparkline characters per line; longer charts wrap, one line per 24 columns


def _hour_axis(origin: float, bucket: float, n: int) -> str:
    """Local clock hours (``07 10 13``) every 3 columns under ``n`` one-hour columns."""
    line = [" "] * n
    for i in range(0, n, 3):
        label = _local(origin + i * bucket).strftime("%H")
        if i + len(label) <= n:
            line[i : i + len(label)] = list(label)
    return "".join(line).rstrip()


def _text_chart(r: dict[str, Any]) -> list[str]:
    c = r["chart"]
    origin, bucket = c["origin"], c["bucket"]
    fails, bans = c["failures"], c["bans"]
    nb = len(fails)
    width = "hour" if bucket == 3600 else f"{int(bucket // 3600)} hours"
    scales = {}
    for label, values in (("failures", fails), ("bans", bans)):
        vmax = max(values, default=0)
        scales[label] = f"max {_n(vmax)}/{width}, total {_n(sum(values))}" if vmax else "none"
    if nb <= TEXT_ROW:
        out = [f"Failures and bans per {width} (local time; one character per {width})"]
        out.append(f"  {'failures':<8} |{sparkline(fails)}| {scales['failures']}")
        out.append(f"  {'bans':<8} |{sparkline(bans)}| {scales['bans']}")
        if bucket == 3600:
            out.append(f"  {'':<8}  {_hour_axis(origin, bucket, nb)}")
    else:
        # One line per TEXT_ROW columns (a day, in hours), both series side by side, each
        # on one scale for the whole period.
        span = "day" if bucket == 3600 else f"{_span(bucket * TEXT_ROW)}"
        out = [
            f"Failures and bans per {width} (local time; one character per {width}, "
            f"one line per {span})"
        ]
        fline, bline = sparkline(fails), sparkline(bans)
        pad = " " * TEXT_ROW
        out.append(f"  {'':<11}  {'failures':<{TEXT_ROW + 2}}  bans")
        for i in range(0, nb, TEXT_ROW):
            start = _local(origin + i * bucket).strftime("%m-%d %H:%M")
            f = (fline[i : i + TEXT_ROW] + pad)[:TEXT_ROW]
            b = (bline[i : i + TEXT_ROW] + pad)[:TEXT_ROW]
            out.append(f"  {start}  |{f}|  |{b}|")
        if bucket == 3600:
            axis = _hour_axis(origin, bucket, TEXT_ROW)
            out.append(f"  {'':<11}   {axis:<{TEXT_ROW}}    {axis}")
        out.append(f"  failures: {scales['failures']}; bans: {scales['bans']}")
    out.append("  scale: linear per series, ▁ up to 1/8 of its max, █ = max, blank = none")
    return out


SESSION_HEAD = ("ID", "USER", "FROM", "START", "DURATION", "STATE", "CMDS", "FILES")


def _session_cells(x: dict[str, Any], esc: Callable[..., str]) -> tuple[str, ...]:
    """One session's table cells; ``esc`` renders attacker-controlled values."""
    return (
        "-" if x["id"] is None else esc(x["id"], 20),
        esc(x["user"]),
        esc(x["ip"] or "-"),
        _short(x["start"]),
        _span(x["duration"]) + ("+" if x["open_at_end"] else ""),
        "open" if x["open_at_end"] else esc(x["state"] or "closed", 20),
        "-" if x["commands"] is None else _n(x["commands"]),
        "-" if x["transfers"] is None else _n(x["transfers"]),
    )


def _text(r: dict[str, Any], host: str) -> str:
    out = [f"sshmonitor report for {visible(host)}", f"Period: {_period_text(r)}", ""]
    rows = _summary_lines(r)
    w = max(len(k) for k, _ in rows) + 1
    out += [f"  {k + ':':<{w}} {v}" for k, v in rows]
    out.append("")
    out += _text_chart(r)
    out.append("")

    f = r["failures"]
    out.append(f"Top addresses by failed logins ({_n(f['addresses'])} in all)")
    if f["top"]:
        out += _table(
            ("ADDRESS", "FAILURES", "USERS", "FIRST", "LAST", "BANNED"),
            [
                (
                    _name(a["ip"] or "(no address)"),
                    _n(a["count"]),
                    _n(a["users"]),
                    _short(a["first"]),
                    _short(a["last"]),
                    "yes" if a["banned"] else "no",
                )
                for a in f["top"]
            ],
            {1, 2},
        )
    else:
        out.append("  none")
    out.append("")

    for key, title in (
        ("invalid_users", "Invalid user names tried"),
        ("accounts", "Existing accounts attacked (failed logins)"),
    ):
        sec = r[key]
        total = sec["names"]
        out.append(f"{title} ({_plural(total, 'name')})")
        if sec["top"]:
            out += _table(
                ("USER", "TRIES", "ADDRESSES", "FIRST", "LAST"),
                [
                    (
                        _name(u["user"]),
                        _n(u["count"]),
                        _n(u["addresses"]),
                        _short(u["first"]),
                        _short(u["last"]),
                    )
                    for u in sec["top"]
                ],
                {1, 2},
            )
            if sec["more"]:
                out.append(f"  … and {_n(sec['more'])} more")
        else:
            out.append("  none")
        out.append("")

    lg = r["logins"]
    out.append(f"Successful logins ({_n(lg['total'])})")
    if lg["groups"]:
        out += _table(
            ("USER", "FROM", "METHOD", "TIMES", "FIRST", "LAST", "NOTE"),
            [
                (
                    _name(g["user"]),
                    _name(g["ip"] or "(no address)"),
                    _name(g["method"], 24),
                    _n(g["count"]),
                    _short(g["first"]),
                    _short(g["last"]),
                    f"! {_plural(g['failures_from_ip'], 'failure')} from this address"
                    if g["failures_from_ip"]
                    else "",
                )
                for g in lg["groups"]
            ],
            {3},
        )
        keys = [(g, k) for g in lg["groups"] for k in g["keys"]]
        if keys:
            out.append("  keys:")
            out += [f"    {_name(g['user'])}: {_name(k, 80)}" for g, k in keys[:20]]
        if lg["more"]:
            out.append(f"  … and {_n(lg['more'])} more (user, address, method) combinations")
    else:
        out.append("  none")
    out.append("")

    se = r["sessions"]
    if se.get("available"):
        out.append(f"Sessions ({_n(se['total'])} in the period)")
        if se["longest"]:
            out.append("  longest:")
            out += _table(
                SESSION_HEAD, [_session_cells(x, _name) for x in se["longest"]], {0, 4, 6, 7}
            )
        if se["active"]:
            out.append(f"  open at the end: {_n(se['active_at_end'])}")
            out += [
                f"    {_name(x['user'])} from {_name(x['ip'] or '-')} since {_short(x['start'])}"
                + (f" (session {_name(x['id'], 20)})" if x["id"] is not None else "")
                for x in se["active"]
            ]
        if se["total"]:
            out.append("  the full timeline of one: sshmonitor session ID")
    else:
        out.append(f"Sessions: not recorded ({visible(se.get('reason', ''))})")
    out.append("")

    b = r["bans"]
    out.append(
        f"Bans: {_n(b['placed'])} placed, {_n(b['expired'])} expired, {_n(b['lifted'])} "
        f"lifted, {_n(b['active_at_end'])} active at the end"
    )
    if b["by_rule"]:
        out.append(
            "  placed by rule: " + ", ".join(f"{_name(k)} {_n(v)}" for k, v in b["by_rule"].items())
        )
    if b["lifted_by"]:
        out.append(
            "  lifted by: " + ", ".join(f"{_name(k)} {_n(v)}" for k, v in b["lifted_by"].items())
        )
    if b["recent"]:
        out.append("  most recent:")
        out += _table(
            ("NETWORK", "RULE", "#", "PLACED", "UNTIL", "STATE"),
            [
                (
                    _name(x["net"]),
                    _name(x["rule"], 24),
                    _n(x["offence"]),
                    _short(x["created"]),
                    _short(x["expires"]),
                    _name(x["state"], 30) + (" (dry run)" if x["dry_run"] else ""),
                )
                for x in b["recent"]
            ],
            {2},
        )
        if b["more"]:
            out.append(f"  … and {_n(b['more'])} more")
    out.append("")

    al = r["alerts"]
    out.append(f"Alerts raised ({_n(al['total'])})")
    if al["by_rule"]:
        out += _table(
            ("RULE", "SEVERITY", "COUNT", "SUBJECTS"),
            [
                (_name(a["rule"], 30), _name(a["severity"], 10), _n(a["count"]), _n(a["subjects"]))
                for a in al["by_rule"]
            ],
            {2, 3},
        )
    else:
        out.append("  none")
    if al["notable"]:
        out.append("  logins and critical alerts (most recent first):")
        for a in al["notable"]:
            out.append(
                f"    {_short(a['ts'])}  {_name(a['severity'], 10).upper()}  "
                f"{_name(a['rule'], 30)}: {_name(a['summary'], 160)}"
            )
        more = int(al.get("notable_total", 0)) - len(al["notable"])
        if more > 0:
            out.append(f"    … and {_n(more)} more")
    for p in al["pending"]:
        out.append(
            f"  waiting for delivery on {_name(p['channel'])}: {_n(p['count'])} "
            f"(oldest {_short(p['oldest'])}, {_plural(p['attempts'], 'attempt')})"
        )
    out += ["", "-- ", f"sshmonitord on {visible(host)}, built {_long(r['generated'])}"]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- HTML

_FONT = "font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif"
_MONO = "font-family:SFMono-Regular,Consolas,'Liberation Mono',Menlo,monospace"
_TH = (
    "text-align:left;padding:3px 10px 3px 0;color:#616161;font-weight:normal;"
    "border-bottom:1px solid #e0e0e0;white-space:nowrap"
)
_TD = "padding:3px 10px 3px 0;border-bottom:1px solid #f0f0f0;vertical-align:top"
_NUM = _TD + ";text-align:right;white-space:nowrap"
_H2 = "font-size:15px;margin:18px 0 6px 0"
_BOX = "background:#ffffff;padding:12px 16px;margin:0 0 14px 0"
_NOTE = "font-size:12px;color:#757575;margin:4px 0 0 0"
_BAR_H = 60  # px, the tallest bar


def _h_table(head: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    """``rows`` are already-escaped HTML cells."""
    th = "".join(
        f'<th style="{_TH}{";text-align:right" if i in right else ""}">{h(x)}</th>'
        for i, x in enumerate(head)
    )
    body = "".join(
        "<tr>"
        + "".join(f'<td style="{_NUM if i in right else _TD}">{c}</td>' for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return (
        f'<table style="border-collapse:collapse;font-size:13px;width:100%">'
        f"<tr>{th}</tr>{body}</table>"
    )


def _hn(text: Any, width: int = NAME_WIDTH) -> str:
    """An attacker-controlled value for HTML: capped like the text, then escaped."""
    if text is None:
        return "-"
    return h(one_line(str(text), width) or '""')


def _code(text: Any, width: int = NAME_WIDTH) -> str:
    return f'<code style="{_MONO};font-size:12px">{_hn(text, width)}</code>'


def _html_bars(values: list[int], colour: str, label: str, origin: float, bucket: float) -> str:
    vmax = max(values, default=0)
    cells = []
    for i, v in enumerate(values):
        start = _local(origin + i * bucket).strftime("%m-%d %H:%M")
        height = 0 if v <= 0 else max(2, round(v * _BAR_H / vmax))
        bar = (
            f'<div style="height:{height}px;background:{colour};font-size:0;line-height:0">'
            "&nbsp;</div>"
            if height
            else ""
        )
        cells.append(
            f'<td title="{h(start)}: {_n(v)} {h(label)}" style="vertical-align:bottom;'
            f'height:{_BAR_H}px;padding:0 1px;border-bottom:1px solid #9e9e9e">{bar}</td>'
        )
    return "".join(cells)


def _html_chart(r: dict[str, Any]) -> str:
    c = r["chart"]
    nb = len(c["failures"])
    width = "hour" if c["bucket"] == 3600 else f"{int(c['bucket'] // 3600)} hours"
    span = nb * c["bucket"]
    long = span > 86400 + 3600  # more than a day: labels carry the date
    step = next(x for x in (1, 2, 3, 6, 12, 24, 48, 96, 192, 10**9) if nb / x <= (6 if long else 8))
    labels = []
    for i in range(nb):
        t = _local(c["origin"] + i * c["bucket"])
        text = ""
        if i % step == 0:
            text = t.strftime("%m-%d %H:%M" if long else "%H:%M")
        labels.append(
            f'<td style="font-size:10px;color:#757575;padding:2px 0 0 1px;'
            f'white-space:nowrap;overflow:visible">{h(text)}</td>'
        )
    rows: list[str] = []
    for label, values, colour in (
        ("failures", c["failures"], "#e65100"),
        ("bans", c["bans"], "#1565c0"),
    ):
        vmax = max(values, default=0)
        scale = f"max {_n(vmax)}/{width}, total {_n(sum(values))}" if vmax else "none"
        if rows:  # a gap between the series
            rows.append(f'<tr><td colspan="{nb + 1}" style="height:10px"></td></tr>')
        rows.append(
            f'<tr><td style="font-size:12px;padding:0 8px 0 0;vertical-align:bottom;'
            f'overflow:hidden">{h(label)}<br><span style="color:#757575;'
            f'font-size:10px">{h(scale)}</span></td>'
            f"{_html_bars(values, colour, label, c['origin'], c['bucket'])}</tr>"
        )
    rows.append(f"<tr><td></td>{''.join(labels)}</tr>")
    return (
        f'<table style="border-collapse:collapse;width:100%;table-layout:fixed" '
        f'role="img" aria-label="failures and bans per {h(width)}">'
        f'<col style="width:120px">{"".join(rows)}</table>'
        f'<p style="{_NOTE}">Per {h(width)}, local time; each row is scaled to its own '
        "maximum (hover a bar for its value).</p>"
    )


def _html(r: dict[str, Any], host: str, subject: str) -> str:
    parts: list[str] = []
    summary = "".join(
        f'<tr><td style="padding:2px 14px 2px 0;color:#616161;white-space:nowrap">{h(k)}</td>'
        f'<td style="padding:2px 0">{h(v)}</td></tr>'
        for k, v in _summary_lines(r)
    )
    parts.append(
        f'<div style="{_BOX}"><table style="border-collapse:collapse;font-size:14px">'
        f"{summary}</table></div>"
    )
    parts.append(f'<div style="{_BOX}">{_html_chart(r)}</div>')

    f = r["failures"]
    sec = [f'<h2 style="{_H2}">Top addresses by failed logins ({_n(f["addresses"])} in all)</h2>']
    if f["top"]:
        sec.append(
            _h_table(
                ("Address", "Failures", "Users", "First", "Last", "Banned"),
                [
                    (
                        _code(a["ip"] or "(no address)"),
                        _n(a["count"]),
                        _n(a["users"]),
                        h(_short(a["first"])),
                        h(_short(a["last"])),
                        "yes" if a["banned"] else "no",
                    )
                    for a in f["top"]
                ],
                {1, 2},
            )
        )
    else:
        sec.append('<p style="margin:0">none</p>')
    for key, title in (
        ("invalid_users", "Invalid user names tried"),
        ("accounts", "Existing accounts attacked"),
    ):
        s = r[key]
        sec.append(f'<h2 style="{_H2}">{h(title)} ({h(_plural(s["names"], "name"))})</h2>')
        if s["top"]:
            sec.append(
                _h_table(
                    ("User", "Tries", "Addresses", "First", "Last"),
                    [
                        (
                            _code(u["user"]),
                            _n(u["count"]),
                            _n(u["addresses"]),
                            h(_short(u["first"])),
                            h(_short(u["last"])),
                        )
                        for u in s["top"]
                    ],
                    {1, 2},
                )
            )
            if s["more"]:
                sec.append(f'<p style="{_NOTE}">… and {_n(s["more"])} more</p>')
        else:
            sec.append('<p style="margin:0">none</p>')
    parts.append(f'<div style="{_BOX}">{"".join(sec)}</div>')

    lg = r["logins"]
    sec = [f'<h2 style="{_H2}">Successful logins ({_n(lg["total"])})</h2>']
    if lg["groups"]:
        rows = []
        for g in lg["groups"]:
            note = ""
            if g["failures_from_ip"]:
                note = (
                    '<span style="color:#b71c1c;font-weight:bold">'
                    f"{h(_plural(g['failures_from_ip'], 'failure'))} from this address</span>"
                )
            if g["keys"]:
                note += "".join(f"<br>{_code(k, 80)}" for k in g["keys"][:3])
            rows.append(
                (
                    _code(g["user"]),
                    _code(g["ip"] or "(no address)"),
                    _hn(g["method"], 24),
                    _n(g["count"]),
                    h(_short(g["first"])),
                    h(_short(g["last"])),
                    note,
                )
            )
        sec.append(_h_table(("User", "From", "Method", "Times", "First", "Last", ""), rows, {3}))
        if lg["more"]:
            sec.append(f'<p style="{_NOTE}">… and {_n(lg["more"])} more</p>')
    else:
        sec.append('<p style="margin:0">none</p>')
    se = r["sessions"]
    if se.get("available"):
        sec.append(f'<h2 style="{_H2}">Sessions ({_n(se["total"])})</h2>')
        if se["longest"]:
            sec.append(
                _h_table(
                    SESSION_HEAD,
                    [_session_cells(x, lambda v, w=NAME_WIDTH: _code(v, w)) for x in se["longest"]],
                    {0, 4, 6, 7},
                )
            )
        if se["active"]:
            items = "".join(
                f"<li>{_code(x['user'])} from {_code(x['ip'] or '-')} since "
                f"{h(_short(x['start']))}"
                + (f" (session {_code(x['id'], 20)})" if x["id"] is not None else "")
                + "</li>"
                for x in se["active"]
            )
            sec.append(
                '<p style="margin:6px 0 0 0;font-size:13px">'
                f"Open at the end: {_n(se['active_at_end'])}</p>"
                f'<ul style="margin:2px 0;padding-left:20px;font-size:13px">{items}</ul>'
            )
    else:
        sec.append(f'<p style="{_NOTE}">Sessions: not recorded ({h(se.get("reason", ""))})</p>')
    parts.append(f'<div style="{_BOX}">{"".join(sec)}</div>')

    b = r["bans"]
    sec = [
        f'<h2 style="{_H2}">Bans: {_n(b["placed"])} placed, {_n(b["expired"])} expired, '
        f"{_n(b['lifted'])} lifted, {_n(b['active_at_end'])} active at the end</h2>"
    ]
    if b["by_rule"]:
        sec.append(
            '<p style="margin:0 0 6px 0;font-size:13px">Placed by rule: '
            + ", ".join(f"{_hn(k)} {_n(v)}" for k, v in b["by_rule"].items())
            + "</p>"
        )
    if b["lifted_by"]:
        sec.append(
            '<p style="margin:0 0 6px 0;font-size:13px">Lifted by: '
            + ", ".join(f"{_hn(k)} {_n(v)}" for k, v in b["lifted_by"].items())
            + "</p>"
        )
    if b["recent"]:
        sec.append(
            _h_table(
                ("Network", "Rule", "#", "Placed", "Until", "State"),
                [
                    (
                        _code(x["net"]),
                        _hn(x["rule"], 24),
                        _n(x["offence"]),
                        h(_short(x["created"])),
                        h(_short(x["expires"])),
                        _hn(x["state"], 30) + (" (dry run)" if x["dry_run"] else ""),
                    )
                    for x in b["recent"]
                ],
                {2},
            )
        )
        if b["more"]:
            sec.append(f'<p style="{_NOTE}">… and {_n(b["more"])} more</p>')
    parts.append(f'<div style="{_BOX}">{"".join(sec)}</div>')

    al = r["alerts"]
    sec = [f'<h2 style="{_H2}">Alerts raised ({_n(al["total"])})</h2>']
    if al["by_rule"]:
        rule_rows = []
        for a in al["by_rule"]:
            accent, fg = COLOURS.get(str(a["severity"]).lower(), COLOURS["warning"])
            badge = (
                f'<span style="background:{accent};color:{fg};font-size:11px;font-weight:bold;'
                f'padding:1px 5px;border-radius:3px">{_hn(str(a["severity"]).upper(), 10)}</span>'
            )
            rule_rows.append((_hn(a["rule"], 30), badge, _n(a["count"]), _n(a["subjects"])))
        sec.append(_h_table(("Rule", "Severity", "Count", "Subjects"), rule_rows, {2, 3}))
    else:
        sec.append('<p style="margin:0">none</p>')
    if al["notable"]:
        items = "".join(
            f'<li style="margin:2px 0">{h(_short(a["ts"]))} <b>{_hn(a["severity"], 10).upper()}'
            f"</b> {_hn(a['rule'], 30)}: {_hn(a['summary'], 300)}</li>"
            for a in al["notable"]
        )
        more = int(al.get("notable_total", 0)) - len(al["notable"])
        if more > 0:
            items += f"<li>… and {_n(more)} more</li>"
        sec.append(
            '<p style="margin:8px 0 2px 0;font-size:13px">Logins and critical alerts:</p>'
            f'<ul style="margin:0;padding-left:20px;font-size:13px">{items}</ul>'
        )
    for p in al["pending"]:
        sec.append(
            f'<p style="{_NOTE}">Waiting for delivery on {_hn(p["channel"])}: {_n(p["count"])} '
            f"(oldest {h(_short(p['oldest']))})</p>"
        )
    parts.append(f'<div style="{_BOX}">{"".join(sec)}</div>')

    return (
        "<!DOCTYPE html>\n"
        '<html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width">'
        f"<title>{h(subject)}</title></head>\n"
        f'<body style="margin:0;padding:16px;background:#f5f5f5;color:#212121;{_FONT}">'
        '<div style="max-width:780px;margin:0 auto">'
        f'<h1 style="font-size:18px;margin:0 0 4px 0">sshmonitor report for {h(host)}</h1>'
        f'<p style="font-size:13px;color:#616161;margin:0 0 12px 0">{h(_period_text(r))}</p>\n'
        + "\n".join(parts)
        + f'\n<p style="{_NOTE}">sshmonitord on {h(host)}, built {h(_long(r["generated"]))}</p>'
        "</div></body></html>\n"
    )


def report_subject(report: dict[str, Any], host: str) -> str:
    f, b, lg, al = report["failures"], report["bans"], report["logins"], report["alerts"]
    crit = al["by_severity"].get("critical", 0)
    bits = [
        _plural(f["total"], "failure"),
        _plural(b["placed"], "ban"),
        _plural(lg["total"], "login"),
    ]
    if crit:
        bits.append(f"{_n(crit)} CRITICAL")
    span = _span(report["until"] - report["since"])
    when = _local(report["until"]).strftime("%Y-%m-%d %H:%M")
    return one_line(
        f"{SUBJECT_PREFIX} report {host}: {', '.join(bits)} ({span} to {when})", MAX_SUBJECT
    )


def render_report(report: dict[str, Any], host: str, fmt: str) -> str:
    """The report as ``text``, ``html`` (a whole document, no external resources, no script)
    or ``json`` (the report dict, plus ``host``)."""
    if fmt == "json":
        return json.dumps({"host": host, **report}, indent=2, ensure_ascii=True) + "\n"
    if fmt == "text":
        return _text(report, host)
    if fmt == "html":
        return _html(report, host, report_subject(report, host))
    raise ValueError(f"unknown report format {fmt!r} (text, html or json)")


def report_message(report: dict[str, Any], host: str) -> Message:
    """The report as one message for any channel (subject, text and HTML; no alerts)."""
    subject = report_subject(report, host)
    return Message(
        subject=subject,
        text=_text(report, host),
        html=_html(report, host, subject),
        alerts=[],
        suppressed=0,
        host=host,
    )


# ============================================================================ the schedule


@dataclass(frozen=True)
class ReportSettings:
    """``notify.report``, read defensively (a config without the section means defaults)."""

    enabled: bool = False
    time: str = "07:00"
    period: float = 86400.0
    top: int = 10
    channels: tuple[str, ...] = ()


def _clock_text(value: Any) -> str:
    """``notify.report.time`` as ``HH:MM`` (YAML's sexagesimal ints too); else as given, for
    :meth:`ReportScheduler.next_slot` to report as invalid."""
    try:
        return "{:02d}:{:02d}".format(*parse_clock(value))
    except (ValueError, TypeError):
        return str(value)


def report_settings(cfg: Any) -> ReportSettings:
    """From a whole Config, a NotifyConfig, or a ``notify.report`` object or mapping."""
    if isinstance(cfg, ReportSettings):
        return cfg
    if isinstance(cfg, dict) or (hasattr(cfg, "enabled") and hasattr(cfg, "time")):
        rc = cfg
    else:
        rc = getattr(getattr(cfg, "notify", cfg), "report", None)
    if rc is None:
        return ReportSettings()

    def get(key: str, default: Any) -> Any:
        if isinstance(rc, dict):
            return rc.get(key, default)
        return getattr(rc, key, default)

    d = ReportSettings()
    return ReportSettings(
        enabled=bool(get("enabled", d.enabled)),
        time=_clock_text(get("time", d.time)),
        period=float(get("period", d.period)),
        top=int(get("top", d.top)),
        channels=tuple(str(c) for c in (get("channels", d.channels) or ())),
    )


RETRY_DELAYS = (30.0, 120.0, 480.0, 1800.0)  # seconds before retry 1, 2, 3, 4
SEND_TIMEOUT = 120.0
TICK = 60.0  # the scheduler looks at the clock (and config changes) at least this often
CATCH_UP = 6 * 3600.0  # a report missed while the daemon was down is sent late, within this
SETTLE = 5.0  # wait this long after the slot so the pipeline has stored the slot's last events
META_KEY = "report.last_slot"


class ReportScheduler:
    """Sends the report at ``notify.report.time`` (local) every day, over the ``period`` that
    ends at that time, to the ``notify.report.channels`` (empty: every channel given).

    * Reads through its own read-only SQLite connection (WAL: never blocks the writer).
    * A transient delivery error is retried after each of ``retry_delays`` (at least the
      server's Retry-After); a permanent one is logged and not retried.
    * The last slot sent is kept in the store's meta table: a report missed while the daemon
      was down is sent at start when the slot is less than :data:`CATCH_UP` ago.
    * With no channel (or ``dry_run``), the report goes to the journal only.
    * ``clock``/``sleep`` are injectable: tests run a day in milliseconds.

    Channels are shared with the alert queue and never closed here.
    """

    name = "report"

    def __init__(
        self,
        store: Any,
        cfg: Any,
        channels: Sequence[Any],
        host: str,
        *,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        settle: float = SETTLE,
    ) -> None:
        self.store = store
        self.db_path = os.fspath(getattr(store, "path", store))
        self.settings = report_settings(cfg)
        self.channels = list(channels)
        self.host = host
        self.dry_run = dry_run
        self.clock = clock
        self._sleep = sleep
        self.retry_delays = tuple(float(x) for x in retry_delays)
        self.settle = float(settle)
        self.due: float | None = None
        self.last_slot: float | None = None
        self.last_error: dict[str, str] = {}
        self.config_error: str | None = None
        self.stats = {"reports": 0, "sent": 0, "failed": 0, "retries": 0}
        self._changed_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self.log = log.get("report")

    # ------------------------------------------------------------------ schedule

    def next_slot(self, after: float) -> float | None:
        """The first report time strictly after ``after`` (None when disabled or invalid)."""
        s = self.settings
        if not s.enabled:
            return None
        try:
            hh, mm = parse_clock(s.time)
        except ValueError as exc:
            self.config_error = str(exc)
            return None
        self.config_error = None
        day = _local(after).replace(hour=0, minute=0, second=0, microsecond=0)
        for i in range(3):
            cand = (day + timedelta(days=i)).replace(hour=hh, minute=mm).timestamp()
            if cand > after:
                return cand
        return None  # pragma: no cover - a day always has the time

    def prev_slot(self, at: float) -> float | None:
        """The last report time at or before ``at``."""
        nxt = self.next_slot(at)
        if nxt is None:
            return None
        back = _local(nxt) - timedelta(days=1)
        return back.timestamp()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.last_slot = await self._load_last()
        now = self.clock()
        self.due = self.next_slot(now)
        prev = self.prev_slot(now)
        if (
            prev is not None
            and self.last_slot is not None
            and self.last_slot < prev
            and now - prev <= CATCH_UP
        ):
            self.due = prev  # missed while down: send it now
        self._task = asyncio.create_task(self._run(), name="report")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def apply_config(self, cfg: Any, channels: Sequence[Any] | None = None) -> None:
        """A reload: new settings (and, when given, the new channel objects)."""
        new = report_settings(cfg)
        if channels is not None:
            self.channels = list(channels)
        if new != self.settings:
            self.settings = new
            # Slots are counted from the moment of the change, not from when the loop
            # next looks (up to TICK later): enabling at 06:59:30 still sends at 07:00.
            self._changed_at = self.clock()

    def describe(self) -> dict[str, Any]:
        s = self.settings
        if not s.enabled:
            summary = "daily report off"
        elif self.config_error:
            summary = f"daily report: {self.config_error}"
        else:
            names = ", ".join(c.name for c in self.targets()) or "journal only"
            summary = f"daily report at {s.time} over {_span(s.period)} to {names}"
        return {
            "name": self.name,
            "summary": summary,
            "next": None if self.due is None else _long(self.due),
            "last": None if self.last_slot is None else _long(self.last_slot),
            "stats": dict(self.stats),
            "last_error": dict(self.last_error),
        }

    def healthy(self) -> bool:
        return self._task is not None and not self._task.done()

    def targets(self) -> list[Any]:
        """The channels the report goes to: those named in ``notify.report.channels`` (by
        name or type), or all of them."""
        names = self.settings.channels
        if not names:
            return list(self.channels)
        return [c for c in self.channels if c.name in names or getattr(c, "type", None) in names]

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        while True:
            if self._changed_at is not None:
                self.due = self.next_slot(self._changed_at)
                self._changed_at = None
            now = self.clock()
            if self.due is None:
                await self._sleep(TICK)
                continue
            if now < self.due + self.settle:
                await self._sleep(min(TICK, self.due + self.settle - now))
                continue
            slot = self.due
            try:
                await self.run_once(slot)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("daily report failed", slot=_long(slot))
            # Next slot after this one, or after now when the clock jumped past several.
            self.due = self.next_slot(max(slot, self.clock() - self.settle))

    async def run_once(self, slot: float | None = None) -> dict[str, str]:
        """Build and send the report for the period ending at ``slot`` (default: now).
        Returns {channel name: what the server said, or the final error}."""
        until = self.clock() if slot is None else slot
        since = until - self.settings.period
        top = self.settings.top
        report = await asyncio.to_thread(self._build, since, until, top)
        msg = report_message(report, self.host)
        self.stats["reports"] += 1
        targets = [] if self.dry_run else self.targets()
        f, b, lg, al = report["failures"], report["bans"], report["logins"], report["alerts"]
        fields: dict[str, Any] = {
            "since": _long(since),
            "until": _long(until),
            "failures": f["total"],
            "addresses": f["addresses"],
            "invalid_names": report["invalid_users"]["names"],
            "logins": lg["total"],
            "bans_placed": b["placed"],
            "alerts": al["total"],
            "channels": [c.name for c in targets],
            "build_seconds": report["build_seconds"],
        }
        if not targets:
            fields["report"] = msg.text
            if self.settings.channels and not self.dry_run:
                self.log.warning(
                    "notify.report.channels names no configured channel; journal only",
                    wanted=list(self.settings.channels),
                    configured=[c.name for c in self.channels],
                )
        self.log.info("daily report" + (" (DRY RUN: not sent)" if self.dry_run else ""), **fields)
        results: dict[str, str] = {}
        if targets:
            answers = await asyncio.gather(*(self._deliver(c, msg) for c in targets))
            results = {c.name: a for c, a in zip(targets, answers, strict=True)}
        if slot is not None:
            self.last_slot = slot
            await self._save_last(slot)
        return results

    def _build(self, since: float, until: float, top: int) -> dict[str, Any]:
        from ..store import connect

        conn = connect(self.db_path, readonly=True)
        try:
            return build_report(conn, since, until, top)
        finally:
            conn.close()

    async def _deliver(self, ch: Any, msg: Message) -> str:
        attempt = 0
        while True:
            try:
                answer = await asyncio.wait_for(ch.send(msg), SEND_TIMEOUT)
            except (DeliveryError, TimeoutError, OSError) as exc:
                err = (
                    exc
                    if isinstance(exc, DeliveryError)
                    else DeliveryError(f"{type(exc).__name__}: {exc}")
                )
            except Exception as exc:  # a channel bug: treat as transient
                self.log.exception("channel raised unexpectedly", channel=ch.name)
                err = DeliveryError(repr(exc))
            else:
                self.stats["sent"] += 1
                self.last_error.pop(ch.name, None)
                self.log.info("daily report delivered", channel=ch.name, answer=str(answer)[:200])
                return str(answer)
            self.last_error[ch.name] = str(err)
            if err.permanent or attempt >= len(self.retry_delays):
                self.stats["failed"] += 1
                self.log.error(
                    "daily report not delivered",
                    channel=ch.name,
                    attempts=attempt + 1,
                    permanent=err.permanent,
                    error=str(err),
                )
                return f"FAILED: {err}"
            delay = self.retry_delays[attempt]
            if err.retry_after is not None:
                delay = max(delay, min(err.retry_after, 3600.0))
            attempt += 1
            self.stats["retries"] += 1
            self.log.warning(
                "daily report delivery failed; will retry",
                channel=ch.name,
                attempt=attempt,
                in_seconds=round(delay, 1),
                error=str(err),
            )
            await self._sleep(delay)

    async def _load_last(self) -> float | None:
        get = getattr(self.store, "get_meta", None)
        run = getattr(self.store, "run", None)
        if get is None or run is None:
            return None
        try:
            value = await run(lambda _c: get(META_KEY))
            return None if value is None else float(value)
        except Exception:
            return None

    async def _save_last(self, slot: float) -> None:
        put = getattr(self.store, "set_meta", None)
        run = getattr(self.store, "run", None)
        if put is None or run is None:
            return
        try:
            await run(lambda _c: put(META_KEY, repr(float(slot))))
        except Exception as exc:
            self.log.warning("cannot record the report time", error=str(exc))


# ============================================================================ the command

REPORT_HELP = """\
Summarise what happened over a period, from the store (the daemon need not run): failed
logins by address, invalid user names, successful logins, sessions, bans placed / expired /
lifted, alerts raised, and an hourly chart of failures and bans. The same summary as the
daily report (notify.report).

  --format text   for a terminal (default); the chart is a sparkline
  --format html   a self-contained page (inline styles, no scripts, nothing loaded)
  --format json   the numbers, for scripts

examples:
  sshmonitor report
  sshmonitor report --since 7d --top 20
  sshmonitor report --since 2026-11-23T07:00 --until 2026-11-24T07:00 --format html > r.html
"""


def register(sub: Any) -> None:
    """Add ``sshmonitor report`` to the CLI's subparsers."""
    p = sub.add_parser(
        "report",
        help="summary of a period: failures, logins, bans, alerts, hourly chart",
        description=REPORT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config", "-c", metavar="FILE", default=None, help="config file (for store.dir)"
    )
    p.add_argument("--state-dir", metavar="DIR", help="state directory holding sshmonitor.db")
    p.add_argument(
        "--since",
        "--from",
        dest="since",
        metavar="TS",
        default="24h",
        help="start: a duration ago (24h, 7d) or an ISO 8601 time (default: 24h)",
    )
    p.add_argument(
        "--until", "--to", dest="until", metavar="TS", default=None, help="end (default: now)"
    )
    p.add_argument("--format", choices=FORMATS, default="text")
    p.add_argument(
        "--top",
        type=int,
        metavar="N",
        default=None,
        help="rows per table (default: notify.report.top, 10)",
    )
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from .. import config
    from ..store import DB_NAME, connect

    err = sys.stderr
    now = time.time()
    try:
        since = parse_when(args.since, now)
        until = now if args.until is None else parse_when(args.until, now)
    except ValueError as exc:
        print(f"sshmonitor report: {exc}", file=err)
        return 2
    if until <= since:
        print("sshmonitor report: --until must be after --since", file=err)
        return 2
    top = args.top
    if top is not None and top < 1:
        print("sshmonitor report: --top must be at least 1", file=err)
        return 2
    state_dir = getattr(args, "state_dir", None)
    if state_dir is None or top is None:
        from ..paths import load_for_cli, resolve_state_dir

        try:
            cfg = load_for_cli(args.config)
        except config.ConfigError as exc:
            if state_dir is None:
                print("\n".join(exc.lines()), file=err)
                return 1
            cfg = None
        if cfg is not None:
            state_dir = state_dir or resolve_state_dir(None, cfg)
            top = top or report_settings(cfg).top
    top = top or 10
    path = os.path.join(str(state_dir), DB_NAME)
    if not os.path.exists(path):
        print(
            f"sshmonitor report: no database at {path} (has sshmonitord run here? "
            "--state-dir or store.dir points elsewhere?)",
            file=err,
        )
        return 1
    try:
        conn = connect(path, readonly=True)
        try:
            report = build_report(conn, since, until, top)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        print(f"sshmonitor report: cannot read {path}: {exc}", file=err)
        return 1
    sys.stdout.write(render_report(report, socket.gethostname(), args.format))
    sys.stdout.flush()
    return 0
