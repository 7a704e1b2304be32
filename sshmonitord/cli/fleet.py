"""``sshmonitor fleet init`` and ``sshmonitor fleet status`` (docs/fleet.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from .. import config
from .output import fail, printable
from .where import config_arg, load_config

INIT_HELP = """\
Create or migrate the fleet's schema in the PostgreSQL database of fleet.database (or
--database), and print the SQL that lets each host in: its login role, member of the group
role sshmonitor_host, and the row of sshmonitor.hosts that ties the role to the host name.
Run it as the database's owner (a role that may create roles). Running it again is safe:
it only applies what is missing. Each --host prints that host's SQL (give it several times).
"""


def _database(args: argparse.Namespace) -> tuple[str, config.FleetConfig]:
    """The libpq connection string: --database, else the config's fleet section."""
    from ..store.fleet import conninfo

    cfg = config.FleetConfig()
    if getattr(args, "database", None):
        cfg = config.FleetConfig(database=args.database)
    else:
        try:
            cfg = load_config(args).fleet
        except config.ConfigError as exc:
            raise _Fail("\n".join(exc.lines())) from None
        if not cfg.database:
            raise _Fail(
                "no fleet database: give --database URL or set fleet.database in the config"
            )
    return conninfo(cfg, app="sshmonitor"), cfg


class _Fail(Exception):
    pass


def _connect(info: str) -> Any:
    try:
        import psycopg
    except ImportError:
        raise _Fail("fleet commands need psycopg 3 (Debian: apt install python3-psycopg)") from None
    try:
        return psycopg.connect(info, autocommit=True)
    except psycopg.Error as exc:
        raise _Fail(f"cannot connect to the fleet database: {str(exc).strip()}") from None


def cmd_init(args: argparse.Namespace) -> int:
    from ..store.fleet import schema as fs

    def migrate(conn: Any) -> tuple[int | None, int]:
        import psycopg

        try:
            return fs.migrate(conn)
        except fs.FleetSchemaError as exc:
            raise _Fail(str(exc)) from None
        except psycopg.errors.InsufficientPrivilege as exc:
            raise _Fail(
                "this role may not create the fleet schema (run `sshmonitor fleet init` as the "
                f"database's owner, a role that may create roles): {str(exc).strip()}"
            ) from None

    try:
        before, after = _read(args, migrate, "cannot create the fleet schema")
    except _Fail as exc:
        return fail(str(exc))
    if before == after:
        print(f"fleet schema is up to date (version {after})", file=sys.stderr)
    elif before is None:
        print(f"created the fleet schema (version {after})", file=sys.stderr)
    else:
        print(f"migrated the fleet schema from version {before} to {after}", file=sys.stderr)
    if args.host:
        print("-- Run as the database's owner, once per host (choose the passwords):")
        for host in args.host:
            print(fs.host_role_sql(host, password="CHANGE-ME" if not args.no_password else None))
        print(
            "-- Then, on each host, in /etc/sshmonitor.yaml:\n"
            '--   fleet: {database: "postgresql://ROLE@DBHOST/DBNAME?sslmode=verify-full",\n'
            "--           password_file: /etc/sshmonitor/db-password, host: HOST}"
        )
    return 0


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 90:
        return f"{int(seconds)}s ago"
    if seconds < 5400:
        return f"{int(seconds // 60)}m ago"
    return f"{seconds / 3600:.1f}h ago"


def cmd_status(args: argparse.Namespace) -> int:
    from ..store.fleet import queries
    from ..store.fleet import schema as fs

    def read(
        conn: Any,
    ) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]], str | None]:
        with conn.cursor() as cur:
            version = fs.current_version(cur)
        if version is None:
            raise _Fail("the fleet database has no sshmonitor schema: run `sshmonitor fleet init`")
        return version, queries.hosts(conn), queries.active_bans(conn), queries.leader(conn)

    try:
        version, hosts, bans, leader = _read(args, read)
    except _Fail as exc:
        return fail(str(exc))
    if args.json:
        json.dump(
            {
                "schema_version": version,
                "hosts": hosts,
                "active_bans": len(bans),
                "leader": leader,
                "at": time.time(),
            },
            sys.stdout,
            indent=2,
            default=str,
        )
        print()
        return 0
    print(
        f"fleet schema version {version}; {len(hosts)} hosts; {len(bans)} active fleet bans; "
        f"fleet rules run on {printable(leader) if leader else 'no host (none holds the lease)'}"
    )
    print(
        f"{'HOST':<20} {'VERSION':<10} {'LAST CONTACT':<14} {'BACKLOG':>8} {'LAG':>7} "
        f"{'SHIPPED':>10}"
    )
    for h in hosts:
        lag = "-" if h["lag"] is None else f"{h['lag']:.0f}s"
        backlog = "-" if h["backlog"] is None else str(h["backlog"])
        print(
            f"{printable(h['host'])[:20]:<20} {printable(h['version'] or '-')[:10]:<10} "
            f"{_ago(h['seconds_since_contact']):<14} {backlog:>8} {lag:>7} {h['shipped']:>10}"
        )
    return 0


def register(sub: Any) -> None:
    """Add ``fleet`` with ``init`` and ``status``."""
    f = sub.add_parser(
        "fleet",
        help="fleet mode on PostgreSQL: create the schema, see the hosts",
        description="Fleet mode (docs/fleet.md): many hosts ship their store to one "
        "PostgreSQL, share bans and detect attacks spread over hosts.",
    )
    fsub = f.add_subparsers(dest="fleet_command", metavar="SUBCOMMAND", required=True)
    init = fsub.add_parser(
        "init",
        help="create or migrate the fleet schema; print each host's role SQL",
        description=INIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config_arg(init)
    init.add_argument("--database", metavar="URL", help="libpq URI (default: fleet.database)")
    init.add_argument(
        "--host", action="append", default=[], metavar="NAME", help="print SQL for this host"
    )
    init.add_argument(
        "--no-password", action="store_true", help="roles without a password (peer/cert auth)"
    )
    init.set_defaults(func=cmd_init)
    st = fsub.add_parser(
        "status",
        help="hosts of the fleet: last contact, backlog, version, lag",
        description="Each host of the fleet with its last contact, the records it has not "
        "shipped yet (backlog), its version and lag; and the number of active fleet bans.",
    )
    config_arg(st)
    st.add_argument("--database", metavar="URL", help="libpq URI (default: fleet.database)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_status)


# ---------------------------------------------------------------------------- --fleet reads


def fleet_arg(p: argparse.ArgumentParser) -> None:
    """``--fleet`` and ``--host NAME``: read the fleet's database instead of this host's."""
    p.add_argument(
        "--fleet",
        action="store_true",
        help="read the fleet's PostgreSQL (fleet.database): every host's records",
    )
    p.add_argument(
        "--host", dest="fleet_host", metavar="NAME", help="with the fleet: only this host's"
    )
    p.add_argument("--database", metavar="URL", help="the fleet's libpq URI (default: config)")


def wants_fleet(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "fleet", False) or getattr(args, "fleet_host", None))


def _read(args: argparse.Namespace, fn: Any, what: str = "cannot read the fleet database") -> Any:
    """``fn(connection)`` on the fleet's database; every failure as :class:`_Fail`."""
    from ..store.fleet import FleetUnavailable

    try:
        info, _cfg = _database(args)
        conn = _connect(info)
    except FleetUnavailable as exc:
        raise _Fail(str(exc)) from None
    import psycopg

    with conn:
        try:
            return fn(conn)
        except psycopg.Error as exc:
            raise _Fail(f"{what}: {str(exc).strip()}") from None


def _since(args: argparse.Namespace, default: float) -> float:
    from datetime import UTC, datetime

    from ..timefmt import parse_when

    text = getattr(args, "since", None)
    if not text:
        return time.time() - default
    try:
        return parse_when(text, datetime.now(UTC)).timestamp()
    except ValueError as exc:
        raise _Fail(str(exc)) from None


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(ts)))


def run_fleet(args: argparse.Namespace, what: str) -> int:
    """``events|sessions|bans --fleet``: one query, printed as a table or JSON lines."""
    from ..store.fleet import queries

    try:
        if what == "events":
            kinds = [k for arg in getattr(args, "kind", None) or [] for k in arg.split(",") if k]
            rows = _read(
                args,
                lambda c: queries.events(
                    c,
                    _since(args, 86400),
                    host=args.fleet_host,
                    ip=args.ip,
                    user=args.user,
                    kind=kinds[0] if len(kinds) == 1 else None,
                    limit=int(args.limit or 1000),
                ),
            )
            if len(kinds) > 1:
                rows = [r for r in rows if r["kind"] in kinds]
        elif what == "sessions":
            rows = _read(
                args,
                lambda c: queries.sessions(
                    c,
                    _since(args, 7 * 86400),
                    host=args.fleet_host,
                    user=args.user,
                    limit=int(args.limit or 1000),
                ),
            )
        elif what == "session":
            if not args.fleet_host:
                raise _Fail("with --fleet, say which host's session: --host NAME")
            one = _read(args, lambda c: queries.session(c, args.fleet_host, int(args.id)))
            if one is None:
                raise _Fail(f"no session {args.id} of host {args.fleet_host} in the fleet")
            rows = [one]
        else:
            rows = _read(args, lambda c: queries.active_bans(c, host=args.fleet_host))
    except _Fail as exc:
        return fail(str(exc))
    if args.json:
        for r in rows:
            print(json.dumps(r, ensure_ascii=False, default=str))
        return 0
    if not rows:
        print(f"no {what} match in the fleet")
        return 0
    if what == "session":
        s = rows[0]
        print(
            f"Session {s['local_id']} on {printable(s['host'])}: {printable(s['username'])} "
            f"from {s['ip'] or '?'} port {s['port']} by {printable(s['method'] or '-')}"
        )
        print(
            f"  state:    {s['state']}"
            + (f" ({printable(s['end_reason'])})" if s["end_reason"] else "")
        )
        print(f"  login:    {_iso(s['start'])}   end: {_iso(s['ended']) or '-'}")
        print(f"  activity: {s['commands']} commands, {s['transfers']} file operations")
        for e in s["timeline"]:
            print(f"  {_iso(e['ts'])}  {printable(e['what']):<10} {printable(e['text'])}")
        return 0
    for r in rows:
        if what == "events":
            frm = "-" if r["ip"] is None else f"{r['ip']} port {r['port']}"
            print(
                f"{_iso(r['ts'])}  {printable(r['host'])[:12]:<12} {r['kind']:<18} "
                f"{printable(r['username'] or '-')[:16]:<16} {frm}"
            )
        elif what == "sessions":
            print(
                f"{printable(r['host'])[:12]:<12} {r['local_id']:>6} "
                f"{printable(r['username'] or '-')[:16]:<16} {r['ip'] or '-':<20} "
                f"{_iso(r['start'])}  {_iso(r['ended']) or '-':<20}  {r['state']}  "
                f"{r['commands']} cmds  {r['transfers']} xfers"
            )
        else:
            print(
                f"{r['net']:<20} by {printable(r['host'])[:12]:<12} {r['rule']:<16} "
                f"{r['seconds_left']}s left  {printable(r['reason'])[:80]}"
            )
    return 0
