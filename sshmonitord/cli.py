"""Command lines: ``sshmonitord`` (the daemon) and ``sshmonitor`` (operator commands)."""

from __future__ import annotations

import argparse
import faulthandler
import gc
import json
import os
import sys
from typing import Any

from . import __version__, addresses, config, control, log
from .paths import load_for_cli

EX_CONFIG = 78  # sysexits(3); the unit file stops restarting on it

DAEMON_HELP = """\
Follow sshd's authentication log, detect intrusion attempts, ban attackers in the firewall
and alert the operator. Normally started by systemd (systemctl enable --now sshmonitor).

signals:
  SIGHUP          re-read the config; on any error the running config stays in force
  SIGTERM/SIGINT  stop sources, finish in-flight work, save state, exit 0 (twice: at once)

files:
  /etc/sshmonitor.yaml              configuration (see docs/configuration.md)
  /var/lib/sshmonitor/sshmonitor.db state: positions, events, sessions, bans, alert spool
  /run/sshmonitor/control.sock      control socket used by `sshmonitor`
"""


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        default=None,
        help=f"config file (default: {config.DEFAULT_CONFIG_PATH})",
    )


def tune_gc() -> None:
    """Fewer, cheaper garbage collections. The pipeline allocates an object or two per log
    line and keeps windows of hundreds of thousands of small objects: with CPython's default
    thresholds, full collections of that heap took 0.2-0.35 s each under a botnet flood
    (bench/detect.py), stalls that delay bans. Reference counting frees almost everything."""
    gc.set_threshold(50_000, 50, 50)


def daemon_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sshmonitord",
        description=DAEMON_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _config_arg(p)
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="state directory (default: $STATE_DIRECTORY, else store.dir, "
        f"else {config.DEFAULT_STATE_DIR})",
    )
    p.add_argument(
        "--log-format",
        choices=["auto", "console", "json", "journal"],
        help="override log.format: auto picks journal under systemd, else console",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="detect and log what would be done, but ban nothing and send no alerts",
    )
    p.add_argument(
        "--trace-lines",
        action="store_true",
        help="also record every raw line read in the database table line_trace "
        "(for debugging sources; grows without bound)",
    )
    p.add_argument("--version", action="version", version=f"sshmonitord {__version__}")
    return p


def daemon_main(argv: list[str] | None = None) -> int:
    """``sshmonitord``: run the daemon in the foreground."""
    args = daemon_parser().parse_args(argv)
    # If the watchdog ever fires (SIGABRT), the journal gets every thread's stack.
    faulthandler.enable()
    tune_gc()
    try:
        cfg = load_for_cli(args.config)
    except config.ConfigError as exc:
        log.setup("info", args.log_format or "auto")
        for p in exc.problems:
            log.get("config").error(
                "invalid config; not starting", file=exc.path, key=p.key or None, problem=p.message
            )
        return EX_CONFIG
    log.setup(cfg.log.level, args.log_format or cfg.log.format)
    from . import daemon  # imported late: keeps `sshmonitor check-config` light

    return daemon.run(cfg, args.state_dir, args.log_format, args.dry_run, args.trace_lines)


# ---------------------------------------------------------------------- sshmonitor


def cmd_check_config(args: argparse.Namespace) -> int:
    path = args.file or args.config or config.DEFAULT_CONFIG_PATH
    try:
        cfg = config.load_config(path)
    except config.ConfigError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return 1
    for w in cfg.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print("ok")
    return 0


def _socket_for(args: argparse.Namespace) -> str:
    """The daemon's control socket: --socket, else the config's, else the default. A broken
    config must not stop ``status`` and ``reload``: that is exactly when reload is needed."""
    if getattr(args, "socket", None):
        return str(args.socket)
    try:
        cfg = load_for_cli(args.config)
    except config.ConfigError as exc:
        sock = control.resolve_socket(_socket_leniently(exc.path))
        n = len(exc.problems)
        warn(
            f"{exc.path} is not a valid config ({n} problem{'s' if n != 1 else ''}; "
            f"sshmonitor check-config lists them); trying the control socket {sock}"
        )
        return sock
    return control.resolve_socket(cfg.control.socket)


def _socket_leniently(path: str) -> str | None:
    """``control.socket`` from a config file that does not validate, or None: the YAML may
    still parse, and nothing but this one key is looked at."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
        value = doc["control"]["socket"]
    except Exception:  # unreadable, not YAML, no such key: the default it is
        return None
    if isinstance(value, str) and os.path.isabs(value) and "${" not in value:
        return value
    return None


def warn(message: str) -> None:
    print(f"sshmonitor: warning: {message}", file=sys.stderr)


def fail(message: str, code: int = 1) -> int:
    """One line on stderr, never a traceback; returns the exit code."""
    print(f"sshmonitor: error: {control.one_line(message)}", file=sys.stderr)
    return code


def _failed(exc: control.ControlError) -> int:
    """A control request that failed: exit 2 when the request was wrong or refused."""
    usage = isinstance(exc, control.Refused) and exc.usage
    return fail(str(exc), 2 if usage else 1)


def _fmt_duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h}h {m}m"
    if h:
        return f"{h}h {m}m"
    return f"{m}m {s}s" if m else f"{s}s"


def print_status(st: dict[str, Any]) -> None:
    """The daemon's status for people. Tolerant: an older or newer daemon may lack keys."""
    g = st.get
    print(f"sshmonitord {g('version', '?')} running, pid {g('pid', '?')} on {g('host', '?')}")
    if "uptime_seconds" in st:
        print(f"  uptime:   {_fmt_duration(st['uptime_seconds'])} (since {g('started_at', '?')})")
    print(f"  status:   {g('status', '?')}")
    print(
        f"  config:   {g('config') or '(built-in defaults)'} (loaded {g('config_loaded_at', '?')})"
    )
    if g("last_reload_error"):
        print("  LAST RELOAD FAILED, the previous config is still in force:")
        for line in _lines(g("last_reload_error")):
            print(f"    {line}")
    print(f"  state:    {g('database', '?')} (schema v{g('schema_version', '?')})")
    store = g("store")
    if isinstance(store, dict):
        rec = store.get("recovered")
        if isinstance(rec, dict):
            print(
                f"    the database was damaged ({rec.get('error', '?')}) and moved aside to "
                f"{rec.get('moved_to', '?')} at {rec.get('at', '?')}; this store started empty"
            )
        if store.get("damaged"):
            print("    the database is damaged: restart the service to move it aside")
        if store.get("error"):
            print(
                f"    CANNOT WRITE: {store['error']}; {store.get('unstored_lines', '?')} lines "
                "held in memory (bans and alerts act on them all the same)"
            )
    if g("dry_run"):
        print("  mode:     DRY RUN (no bans, no alerts sent)")
    for w in _lines(g("warnings")):
        print(f"  warning: {w}")
    for stage in g("stages") or []:
        if not isinstance(stage, dict):
            continue
        print(f"  {str(stage.get('name', 'stage')) + ':':<9} {stage.get('summary', '')}")
        mode = stage.get("mode")
        if mode is not None and stage.get("forgeable", mode == "file"):
            print(
                f"            sources: {mode} mode (forgeable by local users: see docs/security.md)"
            )
        elif mode is not None:
            print(f"            sources: {mode} mode (trusted fields only)")
        rej = stage.get("rejected") or {}
        if rej:
            total = sum(rej.values()) if isinstance(rej, dict) else rej
            why = ", ".join(f"{k} {v}" for k, v in rej.items()) if isinstance(rej, dict) else ""
            print(f"            {total} journal record(s) rejected (untrusted sender: {why})")
            for sample in _lines(stage.get("rejected_samples"))[:3]:
                print(f"              e.g. {sample}")
        for w in _lines(stage.get("warnings")):
            print(f"            warning: {w}")
    counters = g("counters") or {}
    if counters:
        print("  counters:")
        for k, v in counters.items():
            print(f"    {k:<28} {v}")


def _lines(value: Any) -> list[str]:
    """A list of strings from a status field (a list, one string, or nothing), each one line
    (warnings and samples may quote attacker-made text: no line breaks, no escapes)."""
    if not value:
        return []
    items = value if isinstance(value, list | tuple) else [value]
    return [control.one_line(_printable(str(x)), 300) for x in items]


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def cmd_status(args: argparse.Namespace) -> int:
    path = _socket_for(args)
    try:
        st = control.request(path, "status")
    except control.ControlError as exc:
        return _failed(exc)
    if args.json:
        print(json.dumps(st, indent=2))
    else:
        print_status(st)
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    path = _socket_for(args)
    try:
        res = control.request(path, "reload")
    except control.ControlError as exc:
        return _failed(exc)
    if res["reloaded"]:
        print("reloaded")
        return 0
    print("reload FAILED; the running config stays in force:", file=sys.stderr)
    for line in res.get("errors") or []:
        print(f"  {line}", file=sys.stderr)
    return 1


def cmd_replay(args: argparse.Namespace) -> int:
    from . import replay

    tune_gc()

    try:
        cfg = load_for_cli(args.config)
    except config.ConfigError as exc:
        print("\n".join(exc.lines()), file=sys.stderr)
        return 1
    zone = args.timezone or cfg.sources.timezone
    return replay.run(
        args.files, args.format, args.summary, args.since, args.until, zone, config=cfg
    )


REPLAY_HELP = """\
Run the real parser over finished logs (plain or .gz, or - for stdin) and show what the
daemon would have seen. Nothing is banned and nothing is sent.

  --format text   a human summary: lines per event kind, unrecognized sshd lines with
                  samples, top offending addresses, successful logins (default)
  --format json   one JSON object per recognised event on stdout, with the keys ts, host,
                  program, pid, kind, user, ip, port, method, key_fp, count, detail;
                  the summary goes to stderr (or, with --summary, only it, to stdout)

examples:
  sshmonitor replay /var/log/auth.log /var/log/auth.log.1 /var/log/auth.log.2.gz
  sshmonitor replay --format json --since 24h /var/log/auth.log | jq 'select(.kind=="auth_success")'
  journalctl -u ssh -o short --no-hostname | sshmonitor replay -   # (needs a host column)
"""


def _when(epoch: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def cmd_bans(args: argparse.Namespace) -> int:
    try:
        res = control.request(_socket_for(args), "bans")
    except control.ControlError as exc:
        return _failed(exc)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    bans = res["bans"]
    note = " (DRY RUN: nothing is in the firewall)" if res.get("dry_run") else ""
    print(
        f"{len(bans)} active ban{'s' if len(bans) != 1 else ''}, backend {res.get('backend')}{note}"
    )
    if bans:
        print(f"{'ADDRESS':<28} {'RULE':<22} {'SINCE':<19}  {'UNTIL':<19}  {'TIMES':>5}  REASON")
        for b in bans:
            print(
                f"{b['net']:<28} {b['rule']:<22} {_when(b['since']):<19}  "
                f"{_when(b['until']):<19}  {b.get('times_banned', '?'):>5}  "
                f"{_printable(b['reason'])}"
                + ("  [in the firewall, not yet stored]" if b.get("stored") is False else "")
            )
    return 0


def _address_arg(text: str) -> tuple[str, list[str]] | None:
    """The normalised address/network of a ban or unban, checked here before connecting (a
    typo is not the daemon's business), with notes on what normalising changed (host bits
    cleared, IPv4-mapped form). None after printing the error."""
    try:
        net, notes = addresses.parse_network(text)
    except addresses.AddressError as exc:
        fail(str(exc), 2)
        return None
    return str(net), notes


def _notes(notes: list[str]) -> None:
    # Only after success: on a refusal the error line names the normalised address itself.
    for note in notes:
        print(f"sshmonitor: note: {note}", file=sys.stderr)


def cmd_ban(args: argparse.Namespace) -> int:
    seconds = None
    if args.duration:
        try:
            seconds = int(config.parse_duration(args.duration))
        except ValueError:
            return fail(f"bad duration {args.duration!r} (e.g. 1h, 30m, 2d)", 2)
        if seconds < 1:
            return fail(f"bad duration {args.duration!r}: a ban lasts at least 1s", 2)
    parsed = _address_arg(args.address)
    if parsed is None:
        return 2
    net, notes = parsed
    why = addresses.never_bannable(addresses.parse_network(net)[0])
    if why is not None:
        return fail(why, 2)
    request: dict[str, Any] = {"net": net, "seconds": seconds, "reason": args.reason}
    if args.force:
        request["force"] = True
    try:
        res = control.request(_socket_for(args), "ban", **request)
    except control.ControlError as exc:
        return _failed(exc)
    _notes(notes)
    print(
        f"banned {res['net']} for {res['seconds']}s (until {_when(res['until'])})"
        + (" [dry run]" if res.get("dry_run") else "")
    )
    return 0


def cmd_unban(args: argparse.Namespace) -> int:
    parsed = _address_arg(args.address)
    if parsed is None:
        return 2
    net, notes = parsed
    try:
        res = control.request(_socket_for(args), "unban", net=net)
    except control.ControlError as exc:
        return _failed(exc)
    if res.get("unbanned"):
        _notes(notes)
        print(f"unbanned {res.get('net') or net}")
        return 0
    # Nothing to lift is no error worth a traceback, but no success either: exit 1, so a
    # script can tell.
    covered = res.get("covered_by")
    print(
        f"{args.address} was not banned"
        + (f" (it is inside the ban on {covered}: unban that)" if covered else ""),
        file=sys.stderr,
    )
    return 1


def cmd_test_alert(args: argparse.Namespace) -> int:
    """Send a test message through the configured channels (no daemon needed)."""
    import asyncio
    import socket

    from .notify.alert import DeliveryError
    from .notify.build import build_channels
    from .notify.render import test_message

    try:
        cfg = load_for_cli(args.config)
    except config.ConfigError as exc:
        print("\n".join(exc.lines()), file=sys.stderr)
        return 1
    host = socket.gethostname()
    chans = build_channels(cfg.notify.channels, host, include_log=True)
    if args.channel:
        names = ", ".join(c.name for c in chans)
        chans = [c for c in chans if c.name == args.channel]
        if not chans:
            print(
                f"sshmonitor test-alert: no channel named {args.channel!r} "
                f"(configured: {names or 'none'})",
                file=sys.stderr,
            )
            return 1
    if not chans:
        print(
            "no notify.channels configured: alerts go to the journal only "
            "(journalctl -u sshmonitor)"
        )
        return 0

    async def go() -> int:
        rc = 0
        for ch in chans:
            try:
                answer = await ch.send(test_message(host))
                print(f"{ch.name} ({ch.type}): sent; the server said: {answer}")
            except DeliveryError as exc:
                kind = "permanent" if exc.permanent else "temporary"
                print(f"{ch.name} ({ch.type}): FAILED ({kind}): {exc}", file=sys.stderr)
                rc = 1
            finally:
                await ch.close()
        return rc

    return asyncio.run(go())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sshmonitor",
        description="Operator commands for sshmonitord (the SSH security monitor daemon).",
    )
    p.add_argument("--version", action="version", version=f"sshmonitor {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser(
        "check-config",
        help="validate a config file; prints ok or every error",
        description="Validate a config file without starting anything. Exit 0 "
        "and 'ok' when valid, else every problem and exit 1.",
    )
    _config_arg(c)
    c.add_argument("file", nargs="?", help="config file (same as --config)")
    c.set_defaults(func=cmd_check_config)

    r = sub.add_parser(
        "replay",
        help="parse finished logs offline (like fail2ban-regex)",
        description=REPLAY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _config_arg(r)
    r.add_argument("files", nargs="+", metavar="FILE", help="log files (.gz ok) or - for stdin")
    r.add_argument("--format", choices=["text", "json"], default="text")
    r.add_argument(
        "--summary",
        action="store_true",
        help="with --format json: print only the summary, to stdout",
    )
    r.add_argument(
        "--from",
        "--since",
        dest="since",
        metavar="TS",
        help="only events at or after TS (ISO 8601, or a duration ago: 24h)",
    )
    r.add_argument(
        "--to", "--until", dest="until", metavar="TS", help="only events at or before TS"
    )
    r.add_argument(
        "--timezone",
        metavar="ZONE",
        help="zone of classic syslog timestamps (default: sources.timezone, local)",
    )
    r.set_defaults(func=cmd_replay)

    b = sub.add_parser(
        "bans",
        help="list active bans",
        description="List active bans: address, rule, since, until, how many times banned, reason.",
    )
    _config_arg(b)
    b.add_argument("--socket", metavar="PATH", help="control socket (default: from config)")
    b.add_argument("--json", action="store_true", help="machine-readable output")
    b.set_defaults(func=cmd_bans)
    bn = sub.add_parser(
        "ban",
        help="ban an address or network now",
        description="Ban ADDR (an address or CIDR) now. Without --for, the "
        "escalating ban time applies (response.bantime x factor per repeat). "
        "::ffff:a.b.c.d is a.b.c.d; host bits of a network are cleared (and said so). "
        "Exit 0 banned, 1 failed (daemon not running, store or firewall error), "
        "2 refused (not an address, allowlisted, too wide without --force).",
    )
    _config_arg(bn)
    bn.add_argument("--socket", metavar="PATH", help="control socket (default: from config)")
    bn.add_argument("address", metavar="ADDR")
    bn.add_argument("--for", dest="duration", metavar="DURATION", help="e.g. 1h, 30m, 2d")
    bn.add_argument("--reason", default="operator ban")
    bn.add_argument(
        "--force",
        action="store_true",
        help="ban a network wider than response.max_ban_prefix (or a link-local network); "
        "a /0, multicast and allowlisted addresses are refused all the same",
    )
    bn.set_defaults(func=cmd_ban)
    ub = sub.add_parser(
        "unban",
        help="lift a ban now",
        description="Lift the ban on ADDR now. Exit 0 unbanned, 1 it was not banned "
        "(or the daemon failed), 2 not an address.",
    )
    _config_arg(ub)
    ub.add_argument("--socket", metavar="PATH", help="control socket (default: from config)")
    ub.add_argument("address", metavar="ADDR")
    ub.set_defaults(func=cmd_unban)

    from .notify import report

    report.register(sub)
    from . import audit_cli

    audit_cli.register(sub)

    ta = sub.add_parser(
        "test-alert",
        help="send a test message through the alert channels",
        description="Send a test message through every configured channel "
        "(or --channel NAME) and print each server's answer or the exact "
        "error. Talks to the servers directly; the daemon need not run.",
    )
    _config_arg(ta)
    ta.add_argument("--channel", metavar="NAME", help="only this channel (its name or type)")
    ta.set_defaults(func=cmd_test_alert)

    for name, func, text in (
        ("status", cmd_status, "show the running daemon's state (exit 1 if not running)"),
        ("reload", cmd_reload, "reload the daemon's config and report errors (like SIGHUP)"),
    ):
        s = sub.add_parser(name, help=text, description=text)
        _config_arg(s)
        s.add_argument("--socket", metavar="PATH", help="control socket (default: from config)")
        if name == "status":
            s.add_argument("--json", action="store_true", help="machine-readable output")
        s.set_defaults(func=func)
    return p


def main(argv: list[str] | None = None) -> int:
    """``sshmonitor``: operator commands."""
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
