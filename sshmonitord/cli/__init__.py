"""Command lines: ``sshmonitord`` (the daemon) and ``sshmonitor`` (operator commands).

One module per command group, each adding its subcommands with ``register(sub)``:

* ``daemon``: ``sshmonitord`` (and the collector settings it and replay share);
* ``status``: ``status``, ``reload`` and ``check-config``;
* ``bans``: ``bans``, ``ban`` and ``unban``;
* ``replay``: ``replay``;
* ``alerts``: ``test-alert``;
* ``fleet``: ``fleet init`` and ``fleet status`` (PostgreSQL, docs/fleet.md);
* ``audit``: ``sessions``, ``session`` and ``events``;
* ``report`` is registered from ``notify/report/command.py``, next to the report it prints.

Every command finds its config, state directory and control socket through ``where`` (which
applies ``sshmonitord/paths.py``, the daemon's own rules), and says what went wrong through
``output``. This package is the top layer: nothing else in sshmonitord imports it.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from .. import __version__
from .daemon import EX_CONFIG, daemon_main, daemon_parser, tune_gc

if TYPE_CHECKING:
    from .status import print_status

__all__ = ["EX_CONFIG", "daemon_main", "daemon_parser", "main", "parser", "print_status", "tune_gc"]


def __getattr__(name: str) -> Any:
    # The operator commands' modules load with `sshmonitor`'s parser, not with the daemon
    # (`sshmonitord` imports this package for daemon_main only: issue #17, its memory).
    if name == "print_status":
        from .status import print_status

        return print_status
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parser() -> argparse.ArgumentParser:
    from ..notify import report
    from . import alerts, audit, bans, fleet, replay, status

    p = argparse.ArgumentParser(
        prog="sshmonitor",
        description="Operator commands for sshmonitord (the SSH security monitor daemon).",
    )
    p.add_argument("--version", action="version", version=f"sshmonitor {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # The order is the order of `sshmonitor --help`.
    status.register_check_config(sub)
    replay.register(sub)
    bans.register(sub)
    report.register(sub)
    audit.register(sub)
    alerts.register(sub)
    fleet.register(sub)
    status.register(sub)
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
