"""The ban policy: may this finding ban its network, and for how long? One pure function.

:func:`decide` takes plain data — the finding, what is known of the network's past bans
(:class:`BanHistory`), the response config with the allowlist (:class:`Policy`) and the time
``now`` — and returns a :class:`Ban` to place or a :class:`Skip` saying why not. No clock, no
store, no firewall: the daemon's :class:`~sshmonitord.respond.bans.BanManager` and ``replay``
both call it, so replay plans exactly the bans the daemon would place on the same lines.

Time: "already banned" means a ban on the network that lasts beyond ``now``. The daemon passes
the wall clock (its bans run in wall time); replay passes the event time of the finding's last
event (its simulated bans run in event time). On one log whose span is shorter than the ban,
both agree; over a log spanning days, replay judges expiry by the log's own clock, which is
what the daemon would have done had it followed that log live.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from ..addresses import IPNetwork, needs_force, never_bannable, normalize_network
from ..config import Config, ResponseConfig
from ..events import Action, Finding

ALWAYS_ALLOWED = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))

SkipKind = Literal[
    "no-ban",  # the finding does not ask for a ban (alert-only rule, no network)
    "disabled",  # response.enabled is false
    "invalid",  # its ban_net is not a network
    "banned",  # a ban on the network still runs at ``now``
    "never",  # never bannable (a /0, multicast, ...)
    "allowlisted",  # inside, or covering, the allowlist (or loopback)
    "force",  # wider than response.max_ban_prefix (only an operator with --force)
]


@dataclass(frozen=True)
class Ban:
    """A ban to place: ``net`` normalised, the ``offence``-th of that network, ``seconds`` long."""

    net: str
    rule: str
    reason: str
    offence: int
    seconds: int


@dataclass(frozen=True)
class Skip:
    """No ban, and why (``kind`` for counters, ``reason`` for the log)."""

    kind: SkipKind
    reason: str
    net: str | None = None


@dataclass(frozen=True)
class Policy:
    """What the decision depends on in the config: the response section and the allowlist
    (normalised, so ``::ffff:192.0.2.1`` and ``192.0.2.1`` are one entry)."""

    response: ResponseConfig = field(default_factory=ResponseConfig)
    allowlist: tuple[IPNetwork, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowlist", tuple(normalize_network(a) for a in self.allowlist))

    @classmethod
    def from_config(cls, cfg: Config) -> Policy:
        return cls(cfg.response, cfg.allowlist)


class BanHistory(Protocol):
    """What the policy reads of past bans; networks are normalised text (``str(net)``)."""

    def offences(self, net: str) -> int:
        """How many bans this network had so far (for escalation)."""
        ...

    def banned_until(self, net: str) -> float | None:
        """When the ban running on this network ends (epoch seconds), None if there is none."""
        ...


@dataclass
class MemoryHistory:
    """A :class:`BanHistory` in two dicts; :meth:`add` notes a ban placed at ``now``."""

    counts: dict[str, int] = field(default_factory=dict)
    until: dict[str, float] = field(default_factory=dict)

    def offences(self, net: str) -> int:
        return self.counts.get(net, 0)

    def banned_until(self, net: str) -> float | None:
        return self.until.get(net)

    def add(self, ban: Ban, now: float) -> None:
        self.counts[ban.net] = ban.offence
        self.until[ban.net] = now + ban.seconds


def ban_seconds(cfg: ResponseConfig, offence: int) -> int:
    """How long the offence-th ban (1-based) of a network lasts: fail2ban's
    ``bantime.increment``, ``bantime × factor^(n-1)`` capped at ``bantime_max``."""
    seconds = float(cfg.bantime) * (cfg.bantime_factor ** max(0, offence - 1))
    return int(min(seconds, float(cfg.bantime_max)))


def allowlisted(net: IPNetwork, allow: Iterable[IPNetwork]) -> IPNetwork | None:
    """The allowlist entry covering (or overlapping) ``net``, if any. ``net`` is normalised
    first (``::ffff:127.0.0.1`` is loopback); the entries are, by config and by
    :class:`Policy`."""
    net = normalize_network(net)
    n = int(net.network_address)
    for a in (*ALWAYS_ALLOWED, *allow):
        # CIDR blocks overlap only when one holds the other: equal in the shorter prefix.
        if a.version == net.version:
            shift = net.max_prefixlen - min(a.prefixlen, net.prefixlen)
            if (int(a.network_address) ^ n) >> shift == 0:
                return a
    return None


def refusal(net: IPNetwork, policy: Policy, force: bool) -> Skip | None:
    """Why ``net`` (normalised) must never be banned, or not without ``force``; None: it may
    be. Also what an operator's ``sshmonitor ban`` is checked against."""
    key = str(net)
    why = never_bannable(net)
    if why is not None:
        return Skip("never", why, key)
    hit = allowlisted(net, policy.allowlist)
    if hit is not None:
        what = "loopback, always allowed" if hit in ALWAYS_ALLOWED else "in the allowlist"
        if net.prefixlen >= hit.prefixlen:  # inside it
            return Skip("allowlisted", f"{net} is allowlisted ({hit}, {what})", key)
        return Skip("allowlisted", f"{net} covers the allowlisted {hit} ({what})", key)
    if not force:
        m = policy.response.max_ban_prefix
        why = needs_force(net, m.ipv4, m.ipv6)
        if why is not None:
            return Skip("force", why, key)
    return None


_NETWORKS: dict[str, tuple[IPNetwork, str] | None] = {}


def _network(text: str) -> tuple[IPNetwork, str] | None:
    """A finding's ban_net as (normalised network, its text), None if it is not one.
    Remembered: an attacker's in-flight failures raise finding after finding on the same
    network (replay plans tens of thousands), and parsing one costs microseconds."""
    if text in _NETWORKS:
        return _NETWORKS[text]
    try:
        net = normalize_network(ipaddress.ip_network(text, strict=False))
        out: tuple[IPNetwork, str] | None = (net, str(net))
    except ValueError:
        out = None
    if len(_NETWORKS) >= 4096:
        _NETWORKS.clear()
    _NETWORKS[text] = out
    return out



def decide(finding: Finding, history: BanHistory, policy: Policy, now: float) -> Ban | Skip:
    """The ban ``finding`` calls for at time ``now``, or why none. Pure: the caller notes a
    returned :class:`Ban` in its history (so a second finding on the network is "banned")."""
    if finding.ban_net is None or finding.action not in (Action.BAN, Action.BOTH):
        return Skip("no-ban", "the finding asks for no ban")
    if not policy.response.enabled:
        return Skip("disabled", "bans are disabled (response.enabled: false)")
    parsed = _network(finding.ban_net)
    if parsed is None:
        return Skip("invalid", f"not a network: {finding.ban_net[:100]!r}")
    net, key = parsed
    until = history.banned_until(key)
    if until is not None and until > now:
        # In-flight failures of an address already banned: the finding stands, no second ban.
        return Skip("banned", f"{key} is banned already", key)
    refused = refusal(net, policy, force=False)
    if refused is not None:
        return refused
    offence = history.offences(key) + 1
    return Ban(key, finding.rule, finding.summary, offence, ban_seconds(policy.response, offence))


def plan(
    findings: Iterable[tuple[Finding, float]], policy: Policy, history: MemoryHistory | None = None
) -> list[tuple[Finding, Ban | Skip]]:
    """:func:`decide` over findings in order, each at its own ``now``, noting every ban: what
    replay (and the tests) run to see the daemon's bans."""
    history = history if history is not None else MemoryHistory()
    out: list[tuple[Finding, Ban | Skip]] = []
    for f, now in findings:
        d = decide(f, history, policy, now)
        if isinstance(d, Ban):
            history.add(d, now)
        out.append((f, d))
    return out
