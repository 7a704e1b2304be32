"""The report's numbers: :func:`build_report` turns the store's rows into plain,
JSON-serialisable data (the SQL itself is in :mod:`sshmonitord.store.reports`).

**What one failure is** (the same idea as the detection rules, docs/detection.md): sshd's own
``Failed <method> …`` line counts (weighted by its ``count``: rsyslog's "message repeated N
times"); PAM's restatements (``method = pam``) do not; an ``Invalid user X from A port P`` line
counts only when no ``Failed … `` line from the same address and port follows within
:data:`ATTEMPT_WINDOW` (a scanner probing for names with keys only, never trying a password);
otherwise the ``Failed`` line already stands for that attempt.
"""

from __future__ import annotations

import ipaddress
import math
import sqlite3
import time
from typing import Any

from ...events import Kind
from ...store import reports as q
from ..alert import severity_rank
from ..render import LOGIN_RULES
from .times import local_time

REPORT_VERSION = 1
# An "Invalid user" line and sshd's "Failed … for invalid user" line for the same attempt are
# this close at most (sshd's LoginGraceTime defaults to 120 s).
ATTEMPT_WINDOW = 600.0
MAX_BUCKETS = 168  # chart columns at most (a week of hours); longer periods get wider buckets
LOGIN_GROUPS_MIN = 50  # successful-login rows shown at least (top N if larger)


def chart_axis(since: float, until: float) -> tuple[float, float, int]:
    """(origin, bucket seconds, number of buckets): buckets start on a local clock hour and
    are one hour wide, or a whole number of hours when the period is longer than a week."""
    dt = local_time(since)
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
    tables = q.tables(conn)
    origin, bucket, nb = chart_axis(since, until)
    rng = (since, until)
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "since": since,
        "until": until,
        "generated": now,
        "top": top,
        "schema_version": q.schema_version(conn),
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
            n = q.count_kind(conn, str(kind), *rng)
            if n:
                events_by_kind[str(kind)] = n
        passes: list[tuple[str, list[tuple[Any, ...]]]] = []
        if events_by_kind.get("auth_failure"):
            passes.append(("failed", q.failure_buckets(conn, origin, bucket, *rng)))
        if events_by_kind.get("invalid_user"):
            passes.append(
                (
                    "invalid",
                    q.unmatched_invalid_buckets(conn, origin, bucket, *rng, ATTEMPT_WINDOW),
                )
            )
        for what, rows in passes:
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
            users = q.users_tried(conn, ip, since, until)
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
        rows = q.invalid_user_groups(conn, *rng)
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
        rows = q.account_groups(conn, *rng)
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
        rows = q.login_groups(conn, *rng)
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
    return q.bans_overlapping(conn, since, until)


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
    active = active_dry = 0
    for r in rows:
        end, how = _ban_end(r)
        r["ended"], r["ended_by"] = end, how
        if end >= until:
            # Dry-run bans are counted apart: they are active, but not in the firewall.
            if r["dry_run"]:
                active_dry += 1
            else:
                active += 1
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
        "active_dry_run_at_end": active_dry,
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
        rows = q.finding_groups(conn, since, until)
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
        notable, out["notable_total"] = q.notable_findings(
            conn, since, until, LOGIN_RULES, top
        )
        out["notable"] = [
            {"ts": ts, "rule": r, "severity": s, "subject": subj, "summary": summ}
            for ts, r, s, subj, summ in notable
        ]
    if "alert_spool" in tables:
        out["pending"] = [
            {"channel": c, "count": int(n), "oldest": o, "attempts": int(a or 0)}
            for c, n, o, a in q.spool_pending(conn)
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
    try:
        rows = q.session_rows(conn, want.values(), start, end, since, until)
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
        try:
            if kind is None:
                by: dict[str, int] = {}
                total = q.count_rows(conn, table, ts, since, until)
            else:
                by = q.count_by(conn, table, ts, kind, since, until)
                total = sum(by.values())
            out[table] = {"total": total, "by": by}
            if table == "transfers":
                up, down = _pick(cols, "bytes_written"), _pick(cols, "bytes_read")
                for key, col in (("bytes_up", up), ("bytes_down", down)):
                    if col is not None:
                        out[table][key] = q.sum_column(conn, table, ts, col, since, until)
        except sqlite3.Error:
            continue
    return out
