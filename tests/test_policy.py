"""respond/policy.py: the one ban decision the daemon and replay share. Plain data in and out,
no clock, no store: every case is a call."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from sshmonitord import config
from sshmonitord.events import Action, Finding, Severity
from sshmonitord.respond.policy import (
    Ban,
    MemoryHistory,
    Policy,
    Skip,
    ban_seconds,
    decide,
    plan,
)

NOW = 1_800_000_000.0


def finding(net: str | None, action: Action = Action.BOTH, rule: str = "bruteforce") -> Finding:
    return Finding(rule, Severity.HIGH, net or "-", (), action, "5 or more failures", ban_net=net)


def policy(allow: tuple[str, ...] = ("192.0.2.0/24",), **response: object) -> Policy:
    return Policy(
        dataclasses.replace(config.ResponseConfig(), **response),  # type: ignore[arg-type]
        tuple(ipaddress.ip_network(a) for a in allow),
    )


def test_a_first_offence_is_banned_for_bantime():
    d = decide(finding("203.0.113.5/32"), MemoryHistory(), policy(), NOW)
    assert d == Ban("203.0.113.5/32", "bruteforce", "5 or more failures", 1, 600)


@pytest.mark.parametrize(
    ("net", "kind"),
    [
        ("192.0.2.9/32", "allowlisted"),  # inside the allowlist
        ("::ffff:192.0.2.9/128", "allowlisted"),  # the same, IPv4-mapped
        ("192.0.0.0/16", "allowlisted"),  # covers the allowlist: that, before its width
        ("192.0.2.0/23", "allowlisted"),  # covers the allowlist
        ("127.0.0.1/32", "allowlisted"),  # loopback, always
        ("::ffff:127.0.0.1/128", "allowlisted"),
        ("::1/128", "allowlisted"),
        ("224.0.0.1/32", "never"),
        ("0.0.0.0/0", "never"),
        ("198.0.0.0/8", "force"),  # wider than max_ban_prefix
        ("fe80::/64", "force"),  # a link-local network, not one address
        ("not an address", "invalid"),
    ],
)
def test_refused_networks(net, kind):
    d = decide(finding(net), MemoryHistory(), policy(allow=("192.0.2.0/24",)), NOW)
    assert isinstance(d, Skip)
    assert d.kind == kind


def test_alert_only_and_disabled():
    assert decide(finding("203.0.113.5/32", Action.ALERT), MemoryHistory(), policy(), NOW) == Skip(
        "no-ban", "the finding asks for no ban"
    )
    assert decide(finding(None), MemoryHistory(), policy(), NOW).kind == "no-ban"  # type: ignore[union-attr]
    d = decide(finding("203.0.113.5/32"), MemoryHistory(), policy(enabled=False), NOW)
    assert isinstance(d, Skip) and d.kind == "disabled"


def test_normalised_network_and_escalation_from_history():
    h = MemoryHistory(counts={"203.0.113.5/32": 2})
    d = decide(finding("::ffff:203.0.113.5/128"), h, policy(), NOW)
    assert isinstance(d, Ban)
    assert (d.net, d.offence, d.seconds) == ("203.0.113.5/32", 3, ban_seconds(policy().response, 3))
    assert d.seconds == 600 * 16
    assert h.counts == {"203.0.113.5/32": 2}  # pure: the caller notes the ban, not decide()


def test_already_banned_is_judged_at_now():
    """A ban running at ``now`` (wall time in the daemon, event time in replay): no second
    ban. One that ended at or before ``now``: a new, longer one."""
    h = MemoryHistory(counts={"203.0.113.5/32": 1}, until={"203.0.113.5/32": NOW + 10})
    d = decide(finding("203.0.113.5/32"), h, policy(), NOW)
    assert isinstance(d, Skip) and d.kind == "banned" and d.net == "203.0.113.5/32"
    d = decide(finding("203.0.113.5/32"), h, policy(), NOW + 10)
    assert isinstance(d, Ban) and d.offence == 2 and d.seconds == 2400


def test_plan_notes_each_ban_so_the_next_finding_sees_it():
    fs = [
        (finding("203.0.113.5/32"), NOW),
        (finding("203.0.113.5/32", rule="enumeration"), NOW + 1),  # raised, not banned again
        (finding("203.0.113.5/32"), NOW + 601),  # the first ban ended: the second offence
    ]
    out = plan(fs, policy())
    assert [type(d).__name__ for _, d in out] == ["Ban", "Skip", "Ban"]
    second = out[2][1]
    assert isinstance(second, Ban) and (second.offence, second.seconds) == (2, 2400)


def test_the_cap():
    p = policy(bantime_max=config.Duration(3600))
    h = MemoryHistory(counts={"203.0.113.5/32": 9})
    d = decide(finding("203.0.113.5/32"), h, p, NOW)
    assert isinstance(d, Ban) and d.seconds == 3600


def test_the_policy_module_has_no_clock_and_no_io():
    """Pure by construction: it imports nothing that reads a clock, a file or the store."""
    import ast
    from pathlib import Path

    import sshmonitord.respond.policy as policy_module

    tree = ast.parse(Path(policy_module.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(
                (node.module or "").split(".")[0]
                if node.level == 0
                else "." * node.level + (node.module or "")
            )
    assert not imported & {"time", "datetime", "sqlite3", "asyncio", "os", "subprocess", "socket"}
    assert not any("store" in m or "backend" in m for m in imported), imported
