"""``sshmonitord``: the daemon's command line. It loads the config, sets up logging and hands
over to :func:`sshmonitord.daemon.run`."""

from __future__ import annotations

import argparse
import faulthandler
import gc
import os
import sys

from .. import __version__, config
from .where import config_arg, load_config

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


def tune_gc() -> None:
    """Fewer, cheaper garbage collections. The pipeline allocates an object or two per log
    line and keeps windows of hundreds of thousands of small objects: with CPython's default
    thresholds, full collections of that heap took 0.2-0.35 s each under a botnet flood
    (bench/detect.py), stalls that delay bans. Reference counting frees almost everything."""
    gc.set_threshold(50_000, 50, 50)


M_ARENA_MAX = -8  # <malloc.h>
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (as ``MALLOC_ARENA_MAX`` does), before any thread starts.

    Every thread that allocates gets an arena of its own by default (up to 8 per core), and
    freed memory stays in it: the store's writer thread (SQLite's page cache, its
    statements) and asyncio's worker threads each kept pages the main thread could not reuse
    (issue #17: ~1 MB of peak RSS). The daemon's threads mostly wait (the GIL serialises
    the rest), so sharing two arenas costs no measurable contention. Not glibc (musl has no
    mallopt), or no ctypes: nothing is changed. True if the cap was set."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False  # the operator chose
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))


def help_width() -> int:
    """The width argparse would pick (``$COLUMNS``, else the terminal, else 80; minus 2),
    found without ``shutil``: argparse imports it for every formatter it makes, and with it
    zlib, bz2 and lzma, ~0.5 MB of a daemon that only formats help on ``--help``."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return (columns or 80) - 2


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str, width: int | None = None, **kw: int) -> None:
        super().__init__(prog, width=help_width() if width is None else width, **kw)


def daemon_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sshmonitord",
        description=DAEMON_HELP,
        formatter_class=_HelpFormatter,
    )
    config_arg(p)
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
    # Here, not at the top: replay takes tune_gc from this module and needs no structlog.
    from .. import log

    # If the watchdog ever fires (SIGABRT), the journal gets every thread's stack.
    faulthandler.enable()
    tune_gc()
    limit_malloc_arenas()
    try:
        cfg = load_config(args)
    except config.ConfigError as exc:
        log.setup("info", args.log_format or "auto")
        for p in exc.problems:
            log.get("config").error(
                "invalid config; not starting", file=exc.path, key=p.key or None, problem=p.message
            )
        return EX_CONFIG
    log.setup(cfg.log.level, args.log_format or cfg.log.format)
    from .. import daemon  # imported late: keeps `sshmonitor check-config` light

    return daemon.run(cfg, args.state_dir, args.log_format, args.dry_run, args.trace_lines)
