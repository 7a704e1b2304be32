"""``sshmonitor report``: the report of any period, from the store (the daemon need not run)."""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import sys
import time
from datetime import UTC, datetime
from typing import Any

from ... import timefmt
from .render import FORMATS, render_report

# The queries (the store package) and the scheduler's settings (asyncio) are imported where a
# report is built: `sshmonitor`'s parser registers this command for every other one too.


def parse_when(text: str, now: float) -> float:
    """``--since``/``--until`` as an epoch (timefmt.parse_when: ``now``, a duration ago, or
    ISO 8601 with a naive time in this machine's zone)."""
    return timefmt.parse_when(text, datetime.fromtimestamp(now, UTC)).timestamp()


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
    p.add_argument(
        "--fleet", action="store_true", help="the whole fleet's records (docs/fleet.md)"
    )
    p.add_argument("--host", dest="fleet_host", metavar="NAME", help="one host of the fleet")
    p.add_argument("--database", metavar="URL", help="the fleet's libpq URI (default: config)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from ... import config
    from ...store import DB_NAME, connect
    from .query import build_report
    from .schedule import report_settings

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
        from ...paths import load_for_cli, resolve_state_dir

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
    if args.fleet or args.fleet_host:
        return _fleet_report(args, since, until, top)
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


def _fleet_report(args: argparse.Namespace, since: float, until: float, top: int) -> int:
    """``report --fleet`` / ``--host NAME``: the fleet's rows of the period, copied into an
    in-memory store, reported on by the same code as one host's."""
    from ... import config
    from ...paths import load_for_cli
    from ...store.fleet import FleetUnavailable, conninfo, queries
    from .query import build_report

    err = sys.stderr
    try:
        cfg = (
            config.FleetConfig(database=args.database)
            if args.database
            else load_for_cli(args.config).fleet
        )
    except config.ConfigError as exc:
        print("\n".join(exc.lines()), file=err)
        return 1
    if not cfg.database:
        print(
            "sshmonitor report: no fleet database: give --database URL or set "
            "fleet.database in the config",
            file=err,
        )
        return 1
    try:
        import psycopg

        with psycopg.connect(conninfo(cfg, app="sshmonitor"), autocommit=True) as pg:
            mem = queries.snapshot(pg, since, until, args.fleet_host)
    except (FleetUnavailable, queries.TooMuch) as exc:
        print(f"sshmonitor report: {exc}", file=err)
        return 1
    except ImportError:
        print("sshmonitor report: --fleet needs psycopg 3 (apt install python3-psycopg)", file=err)
        return 1
    except psycopg.Error as exc:
        msg = " ".join(str(exc).split())
        print(f"sshmonitor report: cannot read the fleet database: {msg}", file=err)
        return 1
    try:
        report = build_report(mem, since, until, top)
    finally:
        mem.close()
    name = f"fleet host {args.fleet_host}" if args.fleet_host else "the fleet"
    sys.stdout.write(render_report(report, name, args.format))
    sys.stdout.flush()
    return 0
