"""``sshmonitor sessions``, ``sshmonitor session ID`` and ``sshmonitor events``: the audit
trail, read straight from the daemon's SQLite file (read-only; the daemon need not run).

``cli/__init__.py`` registers these with :func:`register`. See docs/audit-trail.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import sqlite3
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from .. import config

# The store's queries (``store.sessions``) are imported in the functions that read: the store
# package loads asyncio and the log, which `sshmonitor`'s other commands (replay above all)
# need not carry (issue #17, replay's memory).
from ..timefmt import fmt_duration, fmt_local, iso_utc, parse_when
from . import fleet, where
from .output import printable

SESSIONS_HELP = """\
List SSH sessions, newest first: who logged in, from where, how, when, for how long, and how
many commands and file transfers were attributed to the session.

states: open (still logged in), closed (its end was logged), lost (its end was never logged:
the sshd process is gone or nothing was heard of it for sessions.lost_after; the duration
shown is a lower bound).

examples:
  sshmonitor sessions --active
  sshmonitor sessions --user alice --since 7d
  sshmonitor sessions --from 203.0.113.0/24 --since 2026-11-01
"""

SESSION_HELP = """\
Show one session's full timeline: the login (method, key fingerprint), PAM and logind
session, every sudo/su command (and auditd exec), every file transferred over SFTP with its
byte count, renames and deletions, and the logout with the session's duration. An action
tied to the session by a guess (several sessions of the user open, no TTY to tell them
apart) is marked "(guess)".
"""

EVENTS_HELP = """\
Print stored events, oldest first, filtered by address, user, kind and time: a table for
people by default; with --json, JSON lines for a SIEM — one object per line with the keys of
`sshmonitor replay --format json` (ts, host, program, pid, kind, user, ip, port, method,
key_fp, count, detail).

examples:
  sshmonitor events --ip 203.0.113.7 --since 24h
  sshmonitor events --kind auth_success --kind sudo --since 7d --json > trail.jsonl
"""

MIN_SCHEMA_EVENTS = 3
MIN_SCHEMA_SESSIONS = 6


# ---------------------------------------------------------------------------- plumbing


class _Fail(Exception):
    """A message for stderr and exit status 1."""


def _common(p: argparse.ArgumentParser) -> None:
    where.config_arg(p, help="config file")
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="state directory holding sshmonitor.db (default: $STATE_DIRECTORY, else the "
        "config's store.dir)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


def db_path_for(args: argparse.Namespace) -> str:
    """``<state_dir>/sshmonitor.db``: --state-dir, else $STATE_DIRECTORY, else store.dir."""
    try:
        return where.db_path_for(args)
    except config.ConfigError as exc:
        raise _Fail("\n".join(exc.lines())) from None


def open_db(args: argparse.Namespace, min_schema: int) -> sqlite3.Connection:
    from ..store import connect
    from ..store.sessions import schema_version

    path = db_path_for(args)
    if not os.path.exists(path):
        raise _Fail(f"no database at {path} (has sshmonitord run? use --state-dir DIR)")
    try:
        conn = connect(path, readonly=True)
        version = schema_version(conn)
    except sqlite3.Error as exc:
        raise _Fail(f"cannot read {path}: {exc}") from None
    if version < min_schema:
        raise _Fail(
            f"{path} has schema version {version}; this command needs {min_schema} "
            "(start the new sshmonitord once to migrate it)"
        )
    return conn


def _run(fn: Any, args: argparse.Namespace) -> int:
    try:
        return int(fn(args, sys.stdout))
    except _Fail as exc:
        print(f"sshmonitor {args.command}: {exc}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        print(f"sshmonitor {args.command}: database error: {exc}", file=sys.stderr)
        return 1


def parse_time(text: str) -> float:
    """``24h``/``7d`` (ago), ``now`` or ISO 8601 (naive = this machine's local time) → epoch."""
    try:
        return parse_when(text, datetime.now(UTC)).timestamp()
    except ValueError as exc:
        raise _Fail(str(exc)) from None


def _addresses(conn: sqlite3.Connection, table: str, text: str) -> tuple[list[str], bool]:
    """``--from``/``--ip``: the stored addresses to match, and whether ``text`` was one address.

    Addresses are stored as text, so a network is resolved against the distinct addresses
    the table holds (a scan of its ip index, not of its rows).
    """
    from ..store import sessions as db

    try:
        if "/" not in text:
            ip = ipaddress.ip_address(text)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            return [str(ip)], True
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise _Fail(f"{text!r} is not an IP address or network") from None
    family = socket.AF_INET if net.version == 4 else socket.AF_INET6
    lo, hi = int(net.network_address), int(net.broadcast_address)
    pton, from_bytes = socket.inet_pton, int.from_bytes
    hits = []
    for ip_text in db.distinct_addresses(conn, table):
        try:
            n = from_bytes(pton(family, ip_text))
        except (OSError, ValueError):
            continue  # the other family
        if lo <= n <= hi:
            hits.append(ip_text)
    return hits, False


# The audit commands' names for the shared formats (sshmonitord/timefmt.py).
fmt_ts = fmt_local
iso = iso_utc


def fmt_bytes(n: int | None) -> str:
    """``12345 bytes`` (exact: it is evidence), with a rounded size when large."""
    if n is None:
        return "-"
    text = f"{n} bytes" if n != 1 else "1 byte"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            return text if n < 1024 else f"{text} ({size:.1f} {unit})"
    return text  # pragma: no cover


def _table(out: TextIO, header: list[str], rows: list[list[str]], right: set[int]) -> None:
    widths = [len(h) for h in header]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))

    def line(cells: list[str]) -> str:
        parts = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    out.write(line(header) + "\n")
    for r in rows:
        out.write(line(r) + "\n")


# ---------------------------------------------------------------------------- sessions


def _session_dict(r: sqlite3.Row) -> dict[str, Any]:
    d = {k: r[k] for k in r.keys()}  # noqa: SIM118 - sqlite3.Row has no __iter__ over keys
    d["detail"] = json.loads(d["detail"]) if d.get("detail") else {}
    return d


def _duration(s: dict[str, Any], now: float) -> float | None:
    if s["state"] == "open":
        return now - s["start"]
    if s["end"] is None:
        return None
    return s["end"] - s["start"]


def _end_cell(s: dict[str, Any], now: float) -> str:
    dur = fmt_duration(_duration(s, now))
    if s["state"] == "open":
        return f"- (for {dur})"
    if s["state"] == "lost":
        return f"? (>= {dur})"
    end = fmt_ts(s["end"])
    if end[:10] == fmt_ts(s["start"])[:10]:
        end = end[11:]  # same day: the time is enough
    return f"{end} ({dur})"


def cmd_sessions(args: argparse.Namespace, out: TextIO) -> int:
    from ..store import sessions as db

    if fleet.wants_fleet(args):
        return fleet.run_fleet(args, "sessions")
    conn = open_db(args, MIN_SCHEMA_SESSIONS)
    addresses, single = (
        _addresses(conn, "sessions", args.from_addr) if args.from_addr else (None, False)
    )
    found = db.list_sessions(
        conn,
        user=args.user or None,
        addresses=addresses,
        single_address=single,
        active=bool(args.active),
        since=parse_time(args.since) if args.since else None,
        until=parse_time(args.until) if args.until else None,
        limit=int(args.limit or 0),
    )
    rows = [_session_dict(r) for r in found]
    now = time.time()
    if args.json:
        for s in rows:
            out.write(json.dumps(_session_json(s, now), ensure_ascii=False) + "\n")
        return 0
    if not rows:
        out.write("no sessions match\n")
        return 0
    table = []
    for s in rows:
        frm = "-" if s["ip"] is None else s["ip"]
        if s["port"] is not None:
            frm = f"[{frm}]:{s['port']}" if ":" in frm else f"{frm}:{s['port']}"
        table.append(
            [
                str(s["id"]),
                printable(s["user"]),
                frm,
                printable(s["method"] or "-"),
                fmt_ts(s["start"]),
                _end_cell(s, now),
                s["state"],
                str(s["commands"]),
                str(s["transfers"]),
            ]
        )
    _table(
        out,
        ["ID", "USER", "FROM", "METHOD", "START", "END (DURATION)", "STATE", "CMDS", "XFERS"],
        table,
        right={0, 7, 8},
    )
    if args.limit and len(rows) >= args.limit:
        out.write(f"(newest {args.limit} shown; --limit N for more)\n")
    return 0


def _session_json(s: dict[str, Any], now: float) -> dict[str, Any]:
    d = dict(s)
    for k in ("start", "opened", "end", "last_seen"):
        d[k] = iso(s[k])
    d["duration_seconds"] = _duration(s, now)
    return d


# ---------------------------------------------------------------------------- one session


def timeline(conn: sqlite3.Connection, s: dict[str, Any]) -> list[dict[str, Any]]:
    """Every step of a session, in time order: dicts with ts, what, text and the details."""
    from ..store import sessions as db

    items: list[tuple[float, int, int, dict[str, Any]]] = []
    det = s["detail"]

    def add(ts: float | None, order: int, seq: int, entry: dict[str, Any]) -> None:
        if ts is not None:
            items.append((ts, order, seq, {"ts": ts, **entry}))

    how = s["method"] or "?"
    key = ""
    if s["key_fp"]:
        key = f" {det.get('key_type', '')} {s['key_fp']}".replace("  ", " ")
    if det.get("cert_id") is not None:
        key += f" certificate ID {det['cert_id']!r} serial {det.get('cert_serial')}"
    frm = s["ip"] or det.get("host") or "?"
    add(
        s["start"],
        0,
        0,
        {
            "what": "login",
            "text": f"{s['user']} from {frm} port {s['port']} by {how}{key}",
            "method": s["method"],
            "key_fp": s["key_fp"],
            "ip": s["ip"],
            "port": s["port"],
            "pid": s["pid"],
        },
    )
    add(s["opened"], 1, 0, {"what": "pam", "text": "PAM session opened"})
    for i, ch in enumerate(det.get("channels", [])):
        tty = f" on {ch['tty']}" if ch.get("tty") else ""
        add(
            ch.get("ts"), 2, ch.get("seq", i), {"what": "channel", "text": f"{ch.get('what')}{tty}"}
        )
    for i, x in enumerate(det.get("sftp", [])):
        g = " (guess)" if x.get("how") == "guess" else ""
        add(
            x.get("start"),
            2,
            x.get("seq", i),
            {"what": "sftp", "text": f"SFTP session started (pid {x.get('pid')}){g}"},
        )
        add(
            x.get("end"),
            2,
            x.get("end_seq", 1 << 62),
            {"what": "sftp", "text": f"SFTP session ended (pid {x.get('pid')})"},
        )
    for r in db.session_commands(conn, s["id"]):
        extra = json.loads(r["detail"]) if r["detail"] else {}
        kind = r["kind"]
        bits = []
        if kind in ("su", "su_failure"):
            text = f"{r['user']} -> {r['runas'] or '?'}"
        else:
            text = f"{r['user']} as {r['runas'] or 'root'}: {r['command'] or '?'}"
            if kind == "exec" and r["runas"] is None:
                text = f"{r['command'] or extra.get('exe') or '?'}"
        if kind.endswith("_failure"):
            text = f"FAILED ({extra.get('reason', 'denied')}) {text}"
        if r["tty"]:
            bits.append(f"tty {r['tty']}")
        if r["cwd"]:
            bits.append(f"in {r['cwd']}")
        if r["attribution"] == "guess":
            bits.append("guess")
        if bits:
            text += f"  ({', '.join(bits)})"
        add(
            r["ts"],
            2,
            r["seq"],
            {
                "what": kind,
                "text": text,
                "user": r["user"],
                "runas": r["runas"],
                "command": r["command"],
                "tty": r["tty"],
                "cwd": r["cwd"],
                "attribution": r["attribution"],
                **({"detail": extra} if extra else {}),
            },
        )
    for r in db.session_transfers(conn, s["id"]):
        op = r["op"]
        if op == "upload":
            text = f"{r['path']}  {fmt_bytes(r['bytes_written'])} written"
        elif op == "download":
            text = f"{r['path']}  {fmt_bytes(r['bytes_read'])} read"
        elif op == "read-write":
            text = (
                f"{r['path']}  {fmt_bytes(r['bytes_read'])} read, "
                f"{fmt_bytes(r['bytes_written'])} written"
            )
        elif r["new_path"] is not None:
            text = f"{r['path']} -> {r['new_path']}"
        else:
            text = f"{r['path']}"
        if r["attribution"] == "guess":
            text += "  (guess)"
        add(
            r["ts"],
            2,
            r["seq"],
            {
                "what": op,
                "text": text,
                "path": r["path"],
                "new_path": r["new_path"],
                "bytes_read": r["bytes_read"],
                "bytes_written": r["bytes_written"],
                "attribution": r["attribution"],
            },
        )
    if s["state"] == "closed":
        add(
            s["end"],
            5,
            0,
            {
                "what": "logout",
                "text": f"{s['end_reason'] or 'closed'}; session lasted "
                f"{fmt_duration(s['end'] - s['start'])}",
                "duration_seconds": s["end"] - s["start"],
            },
        )
    elif s["state"] == "lost":
        add(
            s["end"],
            5,
            0,
            {
                "what": "lost",
                "text": f"last seen; {s['end_reason'] or 'end never logged'} "
                f"(decided {fmt_ts(det.get('lost_at'))}); lasted at least "
                f"{fmt_duration(s['end'] - s['start'])}",
                "duration_seconds": s["end"] - s["start"],
            },
        )
    items.sort(key=lambda x: (x[0], x[1], x[2]))
    return [e for *_k, e in items]


def cmd_session(args: argparse.Namespace, out: TextIO) -> int:
    from ..store import sessions as db

    if fleet.wants_fleet(args):
        return fleet.run_fleet(args, "session")
    conn = open_db(args, MIN_SCHEMA_SESSIONS)
    r = db.get_session(conn, args.id)
    if r is None:
        raise _Fail(f"no session {args.id}")
    s = _session_dict(r)
    now = time.time()
    steps = timeline(conn, s)
    if args.json:
        doc = {
            "session": _session_json(s, now),
            "timeline": [{**e, "ts": iso(e["ts"])} for e in steps],
        }
        out.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")
        return 0
    det = s["detail"]
    dur = fmt_duration(_duration(s, now))
    state = {
        "open": f"open (logged in for {dur})",
        "closed": f"closed ({s['end_reason'] or 'logged out'}), lasted {dur}",
        "lost": f"lost: {s['end_reason'] or 'end never logged'}; lasted at least {dur}",
    }.get(s["state"], s["state"])
    frm = s["ip"] or det.get("host") or "?"
    out.write(f"Session {s['id']}: {printable(s['user'])} from {frm} port {s['port']}")
    out.write(f" on {printable(s['host'])}\n" if s["host"] else "\n")
    out.write(f"  state:    {state}\n")
    key = f", key {det.get('key_type', '')} {s['key_fp']}".replace("  ", " ") if s["key_fp"] else ""
    out.write(f"  login:    {fmt_ts(s['start'])} by {printable(s['method'])}{key}\n")
    if s["state"] == "closed":
        out.write(f"  end:      {fmt_ts(s['end'])}\n")
    elif s["state"] == "lost":
        out.write(f"  last seen: {fmt_ts(s['end'])} (its end was never logged)\n")
    ids = [f"{s['program'] or 'sshd'} pid {s['pid']}"]
    if s["child_pid"] is not None:
        ids.append(f"user child {s['child_pid']}")
    ids.append(f"tty {s['tty'] or '-'}")
    ids.append(f"logind session {s['logind_session'] or '-'}")
    if s["audit_ses"] is not None:
        ids.append(f"audit ses {s['audit_ses']}")
    out.write(f"  process:  {', '.join(ids)}\n")
    out.write(
        f"  activity: {s['commands']} command{'s' if s['commands'] != 1 else ''}, "
        f"{s['transfers']} file operation{'s' if s['transfers'] != 1 else ''} "
        f"({fmt_bytes(s['bytes_up'])} uploaded, {fmt_bytes(s['bytes_down'])} downloaded)\n"
    )
    out.write("\n")
    rows = [[fmt_ts(e["ts"]), e["what"], printable(e["text"])] for e in steps]
    _table(out, ["TIME", "WHAT", "DETAIL"], rows, right=set())
    return 0


# ---------------------------------------------------------------------------- events


def event_json(r: sqlite3.Row) -> dict[str, Any]:
    """A stored event in the ``sshmonitor replay --format json`` shape."""
    return {
        "ts": iso(r["ts"]),
        "host": r["host"],
        "program": r["program"],
        "pid": r["pid"],
        "kind": r["kind"],
        "user": r["user"],
        "ip": r["ip"],
        "port": r["port"],
        "method": r["method"],
        "key_fp": r["key_fp"],
        "count": r["count"],
        "detail": json.loads(r["detail"]) if r["detail"] else {},
    }


def cmd_events(args: argparse.Namespace, out: TextIO) -> int:
    from ..store import sessions as db

    if fleet.wants_fleet(args):
        return fleet.run_fleet(args, "events")
    conn = open_db(args, MIN_SCHEMA_EVENTS)
    addresses, single = _addresses(conn, "events", args.ip) if args.ip else (None, False)
    kinds = [k for arg in args.kind or [] for k in arg.split(",") if k]
    # With --limit: the newest N, printed oldest first.
    rows = db.list_events(
        conn,
        addresses=addresses,
        single_address=single,
        user=args.user or None,
        kinds=kinds,
        since=parse_time(args.since) if args.since else None,
        until=parse_time(args.until) if args.until else None,
        limit=int(args.limit or 0),
    )
    write = out.write
    n = 0
    if args.json:
        dumps = json.dumps
        for r in rows:
            write(dumps(event_json(r), ensure_ascii=False) + "\n")
            n += 1
        return 0
    for r in rows:
        n += 1
        who = printable(r["user"]) if r["user"] is not None else "-"
        where_from = "-"
        if r["ip"] is not None:
            where_from = r["ip"] if r["port"] is None else f"{r['ip']} port {r['port']}"
        extra = []
        if r["method"]:
            extra.append(r["method"])
        if r["count"] and r["count"] != 1:
            extra.append(f"x{r['count']}")
        if r["detail"]:
            d = json.loads(r["detail"])
            for k in ("command", "path", "reason", "op", "tty"):
                if d.get(k) is not None:
                    extra.append(f"{k}={d[k]}")
        write(
            f"{fmt_ts(r['ts'])}  {r['kind']:<18} {who:<16} {where_from:<28} "
            f"{printable(' '.join(str(x) for x in extra))}".rstrip()
            + "\n"
        )
    if n == 0:
        write("no events match\n")
    return 0


# ---------------------------------------------------------------------------- registration


def register(sub: Any) -> None:
    """Add ``sessions``, ``session`` and ``events`` to the ``sshmonitor`` subparsers."""
    raw = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "sessions", help="list SSH sessions (the audit trail)", description=SESSIONS_HELP,
        formatter_class=raw,
    )  # fmt: skip
    _common(p)
    p.add_argument("--user", "-u", metavar="USER", help="only this user's sessions")
    p.add_argument(
        "--from",
        dest="from_addr",
        metavar="ADDR",
        help="only sessions from this address or network (CIDR)",
    )
    p.add_argument(
        "--since", metavar="T", help="started at or after T (ISO 8601, or a duration ago: 24h)"
    )
    p.add_argument("--until", metavar="T", help="started at or before T")
    p.add_argument("--active", action="store_true", help="only sessions still open")
    p.add_argument(
        "--limit", type=int, default=100, metavar="N", help="newest N (default 100; 0: all)"
    )
    fleet.fleet_arg(p)
    p.set_defaults(func=lambda a: _run(cmd_sessions, a), command="sessions")

    s = sub.add_parser(
        "session", help="one session's full timeline", description=SESSION_HELP,
        formatter_class=raw,
    )  # fmt: skip
    _common(s)
    s.add_argument("id", type=int, metavar="ID", help="session id (from `sshmonitor sessions`)")
    fleet.fleet_arg(s)
    s.set_defaults(func=lambda a: _run(cmd_session, a), command="session")

    e = sub.add_parser(
        "events", help="stored events: a table, or JSON lines for a SIEM (--json)",
        description=EVENTS_HELP,
        formatter_class=raw,
    )  # fmt: skip
    _common(e)
    e.add_argument("--ip", metavar="ADDR", help="only this address or network (CIDR)")
    e.add_argument("--user", "-u", metavar="USER", help="only this user")
    e.add_argument(
        "--kind",
        "-k",
        action="append",
        metavar="KIND",
        help="only this kind (repeat, or comma-separate; see docs/events.md)",
    )
    e.add_argument("--since", metavar="T", help="at or after T (ISO 8601, or a duration ago)")
    e.add_argument("--until", metavar="T", help="at or before T")
    e.add_argument("--limit", type=int, default=0, metavar="N", help="only the newest N")
    fleet.fleet_arg(e)
    e.set_defaults(func=lambda a: _run(cmd_events, a), command="events")
