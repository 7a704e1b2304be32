"""The fleet's cross-host rules (docs/fleet.md), pure: tallies in, findings out.

Each host's detection counts failed *attempts* (engine.py: one per guess, however many lines
sshd writes for it) and ships the count with the event. The fleet's leader adds them up per
subject and host over a window and hands the tallies here:

* ``fleet_correlate``: one address (an IPv6 /64 counts as one) made at least
  ``correlate.threshold`` attempts on at least ``correlate.min_hosts`` hosts: a slow attack
  spread so that no single host crosses its own threshold. A fleet ban and a high alert.
* ``fleet_spray``: one user name got at least ``spray.threshold`` attempts on at least
  ``spray.min_hosts`` hosts. An alert (a user name cannot be banned; the addresses are
  many and each host's own rules judge them).

A subject already found within the window is not found again (``seen``): the leader keeps
that in the fleet's database, so a new leader after a takeover does not repeat it.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..config import FleetConfig
from ..events import FleetFinding, Tally


def _span(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60:
        return f"{int(seconds // 60)}m"
    return f"{int(seconds)}s"


def _group(tallies: Iterable[Tally]) -> dict[str, list[Tally]]:
    out: dict[str, list[Tally]] = {}
    for t in tallies:
        if t.attempts > 0:
            out.setdefault(t.subject, []).append(t)
    return out


def _rule(
    rule: str,
    tallies: Iterable[Tally],
    threshold: int,
    min_hosts: int,
    window: float,
    seen: set[str],
    what: str,
    severity: str,
    ban: bool,
) -> list[FleetFinding]:
    out: list[FleetFinding] = []
    for subject, rows in sorted(_group(tallies).items()):
        if subject in seen:
            continue
        hosts = tuple(sorted({r.host for r in rows}))
        total = sum(r.attempts for r in rows)
        if total < threshold or len(hosts) < min_hosts:
            continue
        most = max(r.attempts for r in rows)
        shown = ", ".join(hosts[:10]) + (f" and {len(hosts) - 10} more" if len(hosts) > 10 else "")
        out.append(
            FleetFinding(
                rule,
                severity,
                subject,
                total,
                hosts,
                min(r.first for r in rows),
                max(r.last for r in rows),
                f"{total} failed attempts {what} {subject} on {len(hosts)} hosts within "
                f"{_span(window)} (at most {most} on any one host): {shown}",
                ban,
            )
        )
    return out


def correlate(tallies: Iterable[Tally], cfg: FleetConfig, seen: set[str]) -> list[FleetFinding]:
    """Addresses attacking several hosts (tallies by address or /64 and host)."""
    c = cfg.correlate
    if not c.enabled:
        return []
    return _rule(
        "fleet_correlate", tallies, c.threshold, c.min_hosts, c.window, seen, "from", "high", True
    )


def spray(tallies: Iterable[Tally], cfg: FleetConfig, seen: set[str]) -> list[FleetFinding]:
    """User names tried on several hosts (tallies by user name and host)."""
    c = cfg.spray
    if not c.enabled:
        return []
    return _rule(
        "fleet_spray",
        tallies,
        c.threshold,
        c.min_hosts,
        c.window,
        seen,
        "against user",
        "warning",
        False,
    )


def evaluate(
    rule: str, tallies: Iterable[Tally], cfg: FleetConfig, seen: set[str]
) -> list[FleetFinding]:
    """One of the rules above by name (what the fleet's leader calls)."""
    if rule == "fleet_correlate":
        return correlate(tallies, cfg, seen)
    if rule == "fleet_spray":
        return spray(tallies, cfg, seen)
    raise ValueError(f"not a fleet rule: {rule}")
