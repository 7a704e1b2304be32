"""``sshmonitor replay``: the real parse, detect and ban-policy path over finished logs."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import config
from .daemon import tune_gc
from .where import config_arg, load_config

REPLAY_HELP = """\
Run the real parser over finished logs (plain or .gz, or - for stdin) and show what the
daemon would have seen. Nothing is banned and nothing is sent: the findings the daemon would
raise and the bans it would place (with the config's allowlist and ban lengths) are listed.

  --format text   a human summary: lines per event kind, unrecognized sshd lines with
                  samples, top offending addresses, successful logins (default)
  --format json   one JSON object per recognised event on stdout, with the keys ts, host,
                  program, pid, kind, user, ip, port, method, key_fp, count, detail;
                  the summary goes to stderr (or, with --summary, only it, to stdout)

examples:
  sshmonitor replay /var/log/auth.log /var/log/auth.log.1 /var/log/auth.log.2.gz
  sshmonitor replay --format json --since 24h /var/log/auth.log | jq 'select(.kind=="auth_success")'
  journalctl -u ssh -u sshd -o short --no-hostname | sshmonitor replay -
"""


def cmd_replay(args: argparse.Namespace) -> int:
    from .. import replay

    tune_gc()

    try:
        cfg = load_config(args)
    except config.ConfigError as exc:
        print("\n".join(exc.lines()), file=sys.stderr)
        return 1
    zone = args.timezone or cfg.sources.timezone
    return replay.run(
        args.files,
        args.format,
        args.summary,
        args.since,
        args.until,
        zone,
        config=cfg,
        jobs=args.jobs,
    )


def register(sub: Any) -> None:
    """Add ``replay``."""
    r = sub.add_parser(
        "replay",
        help="parse finished logs offline (like fail2ban-regex)",
        description=REPLAY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config_arg(r)
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
    r.add_argument(
        "--jobs",
        type=int,
        choices=[1, 2],
        default=None,
        help="processes: 2 parses in a second process while this one detects (the same "
        "results, faster on two free cores, more memory); default 2 where two cores are "
        "available, else 1",
    )
    r.set_defaults(func=cmd_replay)
