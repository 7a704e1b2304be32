"""``sshmonitor bans``, ``ban`` and ``unban``: the daemon's bans, over its control socket."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .. import addresses, control
from ..timefmt import fmt_local, parse_duration
from . import fleet
from .output import fail, failed, printable
from .where import config_arg, socket_arg, socket_for


def cmd_bans(args: argparse.Namespace) -> int:
    if fleet.wants_fleet(args):
        return fleet.run_fleet(args, "bans")
    try:
        res = control.request(socket_for(args), "bans")
    except control.ControlError as exc:
        return failed(exc)
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
                f"{b['net']:<28} {b['rule']:<22} {fmt_local(b['since']):<19}  "
                f"{fmt_local(b['until']):<19}  {b.get('times_banned', '?'):>5}  "
                f"{printable(b['reason'])}"
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
            seconds = int(parse_duration(args.duration))
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
        res = control.request(socket_for(args), "ban", **request)
    except control.ControlError as exc:
        return failed(exc)
    _notes(notes)
    print(
        f"banned {res['net']} for {res['seconds']}s (until {fmt_local(res['until'])})"
        + (" [dry run]" if res.get("dry_run") else "")
    )
    return 0


def cmd_unban(args: argparse.Namespace) -> int:
    parsed = _address_arg(args.address)
    if parsed is None:
        return 2
    net, notes = parsed
    try:
        res = control.request(socket_for(args), "unban", net=net)
    except control.ControlError as exc:
        return failed(exc)
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


def register(sub: Any) -> None:
    """Add ``bans``, ``ban`` and ``unban``."""
    b = sub.add_parser(
        "bans",
        help="list active bans",
        description="List active bans: address, rule, since, until, how many times banned, reason.",
    )
    config_arg(b)
    socket_arg(b)
    b.add_argument("--json", action="store_true", help="machine-readable output")
    fleet.fleet_arg(b)
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
    config_arg(bn)
    socket_arg(bn)
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
    config_arg(ub)
    socket_arg(ub)
    ub.add_argument("address", metavar="ADDR")
    ub.set_defaults(func=cmd_unban)
