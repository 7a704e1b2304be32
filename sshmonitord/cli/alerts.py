"""``sshmonitor test-alert``: a test message through the configured channels, sent from this
process (the daemon need not run)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import config
from .where import config_arg, load_config


def cmd_test_alert(args: argparse.Namespace) -> int:
    """Send a test message through the configured channels (no daemon needed)."""
    import asyncio
    import socket

    from ..notify.alert import DeliveryError
    from ..notify.build import build_channels
    from ..notify.render import test_message

    try:
        cfg = load_config(args)
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


def register(sub: Any) -> None:
    """Add ``test-alert``."""
    ta = sub.add_parser(
        "test-alert",
        help="send a test message through the alert channels",
        description="Send a test message through every configured channel "
        "(or --channel NAME) and print each server's answer or the exact "
        "error. Talks to the servers directly; the daemon need not run.",
    )
    config_arg(ta)
    ta.add_argument("--channel", metavar="NAME", help="only this channel (its name or type)")
    ta.set_defaults(func=cmd_test_alert)
