"""Events in, Findings out: the detection rules over sliding windows. Pure and synchronous.

No clock and no I/O: time is the event's own, so ``replay`` of last week's log raises the
findings the live daemon would have raised. Login history (for ``new_source`` and
``new_key``) is handed in at construction and learned from the events as they pass.
:func:`logins` says what of a batch the history keeps; the pipeline stores it and the daemon
loads it (store/history.py); the engine never touches a connection.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import tzinfo
from operator import itemgetter
from typing import Any
from zoneinfo import ZoneInfo

from ..addresses import address_text, aggregable
from ..config import DetectionConfig, parse_hours
from ..events import Action, Event, Finding, Kind, Login, Severity
from ..measure import Sample, sample
from .windows import DistinctCounter, WindowCounter, drop_older, drop_oldest
from .windows import addr_key as prefix_key
from .windows import key_network as prefix_network

FAILURES = frozenset(
    {
        Kind.AUTH_FAILURE,
        Kind.INVALID_USER,
        Kind.MAX_AUTH_EXCEEDED,
        Kind.NOT_ALLOWED,
        Kind.PENALTY,
        Kind.PREAUTH_DISCONNECT,
        Kind.PROTOCOL_ERROR,
    }
)
# These count only for addresses that never logged in: scanners, not clumsy users.
SCANNER_ONLY = frozenset({Kind.PREAUTH_DISCONNECT, Kind.PROTOCOL_ERROR})
USER_FAILURES = frozenset({Kind.AUTH_FAILURE, Kind.INVALID_USER, Kind.MAX_AUTH_EXCEEDED})
KEY_METHODS = frozenset({"publickey", "hostbased", "gssapi-with-mic"})
# What sshd logs after a failure it already logged, on the same connection.
# The Failed lines that restate sshd's own "PAM: <error> for X from A" of the same prompt.
PAM_RESTATED_BY = frozenset({"keyboard-interactive/pam", "keyboard-interactive", "password"})
FOLLOW_UPS = frozenset({Kind.PREAUTH_DISCONNECT, Kind.PROTOCOL_ERROR, Kind.MAX_AUTH_EXCEEDED})
# A connection (sshd pid) is remembered this long after its last counted failure, log time:
# its follow-ups (closed, disconnected, maximum attempts) come within its life, which sshd's
# LoginGraceTime (120 s by default) ends before authentication; the connection memory
# (parse/connections.py, PREAUTH_MAX_AGE) trusts one no longer either. Longer, the pid may
# be another connection's: pids are reused, and its first line would be taken for a
# follow-up and not counted. It also bounds the memory: held by count alone (100,000), these
# dicts and their pid strings took ~16 MB of a 1M-line replay.
SESSION_MAX_AGE = 600.0
SESSION_EXPIRY_EVERY = 1023  # a mask: every 1,024 counted failures
EVIDENCE_KEEP = 6  # log lines kept per address as an alert's evidence
# A remembered time more than this after both the event being judged and the clock
# (Engine.set_clock) is not believed: a forged line stamped in the future must not stand
# for a connection or a finding of a genuine line's past. After both: the clock alone would
# disbelieve every memory under a wrong ``sources.timezone`` (every stamp hours ahead, all
# alike); the event alone, every newer memory when a late or forged line stamped in the
# past is judged. The slack covers a remote host's clock a little ahead of ours.
FUTURE_SKEW = 60.0
# What fired is remembered as long as the longest window of a rule that asks (``_since``);
# the memory is cleaned of older entries each time it doubles, from this size on.
FIRED_MIN = 4096
# Evidence is kept for the most recently active addresses only: a botnet of a million
# one-shot addresses must not hold a million log lines in memory. An address that keeps
# failing stays at the recent end, so the ones that trigger findings keep their evidence.
EVIDENCE_ADDRESSES = 5_000
# When several rules fire on one event (25 invalid names from one address reach bruteforce
# and enumeration together), the most specific one names the incident: first here, first
# in an alert's headline (notify/render.py).
SPECIFICITY: dict[str, int] = {
    rule: i
    for i, rule in enumerate(
        (
            "success_after_failures",
            "enumeration",
            "distributed",
            "slow_bruteforce",
            "bruteforce",
            "root_login",
            "new_key",
            "new_source",
            "off_hours",
        )
    )
}
# The hot path's names for what it compares against (see Engine._failure).
_AUTH_FAILURE = Kind.AUTH_FAILURE
_AUTH_SUCCESS = Kind.AUTH_SUCCESS
_INVALID_USER = Kind.INVALID_USER
_NOT_ALLOWED = Kind.NOT_ALLOWED
_IPv4 = ipaddress.IPv4Address
_IPv6 = ipaddress.IPv6Address
# Severity(text) and Action(text) are enum lookups by value (~0.5 µs each); these are dicts.
_SEVERITY = {str(s): s for s in Severity}
_ACTION = {str(a): a for a in Action}
SPRAY_KEEP = 100  # addresses remembered per user name failing against it
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
NEVER = float("-inf")
_NO_PAM = (0, NEVER)


@dataclass
class History:
    """What the store knows of past successful logins, for new_source and new_key."""

    sources: dict[str, set[str]] = field(default_factory=dict)  # user -> prefixes
    keys: dict[str, set[str]] = field(default_factory=dict)  # user -> key fingerprints
    since: float | None = None  # epoch of the first login ever recorded (learning start)


# An IPv6 address counted on its own (see addr_key); apart from windows' IPv4 ints and its
# _V6_TAG prefix keys (1 << 200).
_HOST6_TAG = 1 << 201


def addr_key(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, v6_prefix: int = 64) -> int:
    """The key an address is counted, and banned, under: global unicast IPv6 per /v6_prefix
    (one subscriber's network), every other address on its own. A link-local attacker must
    never get fe80::/64 banned, which is every neighbour on every link (addresses.aggregable,
    docs/firewall.md)."""
    if ip.version == 6 and not aggregable(ip):
        return _HOST6_TAG | int(ip)
    return prefix_key(ip, v6_prefix)


def key_network(key: int, v6_prefix: int = 64) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The network a key from :func:`addr_key` stands for: what a finding bans."""
    if key & _HOST6_TAG:
        return ipaddress.IPv6Network((key & ~_HOST6_TAG, 128))
    return prefix_network(key, v6_prefix)


def source_prefix(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, v4: int, v6: int) -> str:
    """The network a login came from, at the granularity new_source judges by: the text of
    ``ipaddress.ip_network(f"{ip}/{bits}", strict=False)``, computed on the address's
    integer. Spelling the address and parsing it back took ~15 µs, several times for every
    login (tests/test_detect.py compares the two)."""
    bits = v4 if ip.version == 4 else v6
    kind = type(ip)
    if kind is _IPv4:
        width = 32
    elif kind is _IPv6 and ip._scope_id is None:  # type: ignore[union-attr]
        width = 128
    else:  # a scope id or a subclass: ipaddress decides
        return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))
    if not 0 <= bits <= width:
        return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))  # its own error
    host = width - bits
    network = kind(ip._ip >> host << host)  # type: ignore[union-attr]
    return f"{address_text(network)}/{bits}"


def _span(seconds: float) -> str:
    s = int(seconds)
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n and s % n == 0:
            return f"{s // n}{unit}"
    return f"{s}s"


class Engine:
    """All rules over one event stream."""

    def __init__(
        self, cfg: DetectionConfig, history: History | None = None, zone: tzinfo | None = None
    ) -> None:
        self.history = history or History()
        self.zone = zone
        self.findings_total = 0
        r = cfg.rules
        self.by_ip = WindowCounter(1, 1, cfg.max_keys)
        # Connections that never tried a credential (scanners, health checks): they count
        # for bruteforce's short window, never for slow_bruteforce or a compromise — a
        # monitoring probe every five minutes is 288 "failures" a day and guesses nothing.
        self.by_ip_scan = WindowCounter(1, 1, cfg.max_keys)
        # The same failures per (address key, user name): which of an address's failures a
        # user's own login explains, and which were against other names.
        self.by_ip_user = WindowCounter(1, 1, cfg.max_keys)
        self.users_per_ip = DistinctCounter(
            r.enumeration.threshold, r.enumeration.window, max(1000, cfg.max_keys // 4)
        )
        self.ips_per_user = DistinctCounter(
            r.distributed.threshold, r.distributed.window, max(1000, cfg.max_keys // 4)
        )
        self.evidence: dict[int, list[Event]] = {}
        self.authenticated: set[int] = set()  # keys that logged in successfully
        self.fired: dict[tuple[str, Any], float] = {}  # (rule, subject) -> ts of last finding
        self._fired_limit = FIRED_MIN  # fired's size that sets off its next clean-up
        self._clock = math.inf  # the latest time a clean-up may run at (set_clock)
        # Connections (see _failure for the key) -> the time of their latest counted failure.
        self.counted_sessions: dict[str | tuple[str, str], float] = {}
        self.invalid_sessions: dict[str | tuple[str, str], float] = {}
        self._counted_n = 0  # failures counted for a connection: expiry runs every 1,024
        self._home_host: str | None = None
        # sshd's own "PAM: <error> for X from A" lines not yet restated by their
        # "Failed keyboard-interactive/pam" line (which INFO omits for a connection's first
        # three failures: auth.c raises it only from failures >= MaxAuthTries / 2).
        # Each value: (pending lines, the time of the latest).
        self.pam_pending: dict[str | tuple[str, str], tuple[int, float]] = {}
        # Unexplained failures against each valid name, from every address: a guess from one
        # host and the login from another (its /24 neighbour, the next /64, a botnet's loader).
        self.by_user = WindowCounter(1, 1, max(1000, cfg.max_keys // 4))
        # Fleet mode: the failed attempts counted per event (id(event) -> weight), for the
        # fleet's cross-host rules to add up attempts as this engine counts them, not lines.
        # None: not collected. The caller drains it (pipeline.py).
        self.attempts: dict[int, int] | None = None
        self.configure(cfg)

    def configure(self, cfg: DetectionConfig) -> None:
        """Take a new config (SIGHUP) without losing counters."""
        self.cfg = cfg
        r = self.rules = cfg.rules
        self.v6 = cfg.ipv6_prefix
        self._net_names: dict[int, str] = {}  # address key -> its network's text (at self.v6)
        self.weights = {Kind(k): v for k, v in cfg.failure_weights.items()}
        self.work_days = {DAYS.index(d) for d in r.off_hours.days}
        self.work_hours = parse_hours(r.off_hours.hours) or (0, 24 * 60)
        tz = r.off_hours.timezone
        self.off_zone = self.zone if tz == "local" else ZoneInfo(tz)
        # Keep enough history for the largest threshold and the longest window asked.
        self.by_ip.keep = max(
            self.by_ip.keep,
            r.bruteforce.threshold,
            r.slow_bruteforce.threshold,
            r.success_after_failures.threshold,
        )
        self.by_ip.horizon = max(
            r.bruteforce.window, r.slow_bruteforce.window, r.success_after_failures.window
        )
        self.by_ip.max_keys = cfg.max_keys
        self.by_ip_scan.keep = max(self.by_ip_scan.keep, r.bruteforce.threshold)
        self.by_ip_scan.horizon = r.bruteforce.window
        self.by_ip_scan.max_keys = cfg.max_keys
        self.by_ip_user.keep = self.by_ip.keep
        self.by_ip_user.horizon = self.by_ip.horizon
        # by_ip_user follows by_ip's addresses (pruned with them), never evicts on its own.
        self.by_ip_user.max_keys = 4 * cfg.max_keys
        self.by_user.keep = self.by_ip.keep
        self.by_user.horizon = self.by_ip.horizon
        self.users_per_ip.max_keys = self.ips_per_user.max_keys = max(1000, cfg.max_keys // 4)
        self.users_per_ip.keep = r.enumeration.threshold
        self.users_per_ip.horizon = r.enumeration.window
        sa = r.success_after_failures
        # More than any threshold asks: "this address took part in the spray" needs to
        # remember the sprayers, and only names under attack ever grow this large.
        self.ips_per_user.keep = max(r.distributed.threshold, sa.spray_threshold, SPRAY_KEEP)
        self.ips_per_user.horizon = max(r.distributed.window, sa.window)
        self.track_sprays = r.distributed.enabled or sa.enabled
        # The rules that read ``fired`` (through _since) and the longest of their windows.
        self._fired_horizon = max(
            r.bruteforce.window,
            r.slow_bruteforce.window,
            r.enumeration.window,
            r.distributed.window,
        )
        # The per-address counting rules a failure is checked against, enabled ones only;
        # scanners' connections count for bruteforce's short window alone.
        self._address_rules = tuple(
            (rule, c)
            for rule, c in (("bruteforce", r.bruteforce), ("slow_bruteforce", r.slow_bruteforce))
            if c.enabled
        )
        self._scan_rules = tuple(rc for rc in self._address_rules if rc[0] == "bruteforce")
        # Networks in the history stored at another granularity (new_source's prefixes
        # changed since): judged by containment, parsed once. None: every one is at today's.
        v4, v6 = r.new_source.ipv4_prefix, r.new_source.ipv6_prefix
        odd = {
            n
            for nets in self.history.sources.values()
            for n in nets
            if not n.endswith(f"/{v4}") and not n.endswith(f"/{v6}")
        }
        self._odd_nets: dict[str, ipaddress.IPv4Network | ipaddress.IPv6Network] | None = None
        if odd:
            self._odd_nets = {}
            for n in odd:
                try:
                    self._odd_nets[n] = ipaddress.ip_network(n, strict=False)
                except ValueError:
                    continue

    def set_clock(self, limit: float) -> None:
        """The latest time a genuine event can carry: the wall clock in the daemon, the
        file's modification time in replay (epoch seconds). Clean-ups (the counters' sweeps,
        the expiry of connections and of what fired) run at an event's time but never
        later than this, so a line stamped in the future — any local user can write one —
        cannot make everything genuine look older than every window. A clean-up run too
        early only keeps memory a little longer; counting always uses the event's own time.
        The first login ever recorded (the start of learning) is capped by it too.

        A remembered time more than FUTURE_SKEW after both the event at hand and this limit
        is not believed, and a clean-up drops it."""
        self._clock = limit
        h = self.history
        if h.since is not None and h.since > limit:
            h.since = limit  # stored from a forged first login (store/history.py keeps it)
        for c in (
            self.by_ip,
            self.by_ip_scan,
            self.by_ip_user,
            self.by_user,
            self.users_per_ip,
            self.ips_per_user,
        ):
            c.clock_limit = limit

    # ------------------------------------------------------------------ the stream

    def feed(self, ev: Event) -> list[Finding]:
        """One event → the findings it completes (usually none)."""
        k = ev.kind
        if k in FAILURES:
            out = self._failure(ev)
        elif k is _AUTH_SUCCESS:
            out = self._success(ev)
        else:
            return []
        if out:
            if len(out) > 1:
                out.sort(key=lambda f: SPECIFICITY.get(f.rule, len(SPECIFICITY)))
            if len(self.fired) >= self._fired_limit:
                ts = ev.ts.timestamp()
                self._expire_fired(min(ts, self._clock), self._believable(ts))
        return out

    def feed_all(self, events: Iterable[Event]) -> list[Finding]:
        out: list[Finding] = []
        for ev in events:
            out.extend(self.feed(ev))
        return out

    def _since(self, rule: str, subject: Any, ts: float, window: float) -> float:
        """Count from the window's start, or from just after this rule last fired on it."""
        last = self.fired.get((rule, subject), NEVER)
        start = ts - window
        if last < start or last > self._believable(ts):
            # Not believed (FUTURE_SKEW): a forged future finding would keep the rule from
            # counting the subject until its date.
            return start
        return last + 1e-6

    def _believable(self, ts: float) -> float:
        """The latest remembered time believed while judging an event at ``ts``."""
        clock = self._clock
        return (ts if ts > clock else clock) + FUTURE_SKEW

    def _failure(self, ev: Event) -> list[Finding]:
        # The hot path of an attack (every failure line): Kind members are module globals
        # here (Kind.X is an enum class attribute lookup, ~15x a global's cost).
        out: list[Finding] = []
        ts = ev.ts.timestamp()
        r = self.rules
        kind = ev.kind
        method = ev.method
        detail = ev.detail
        # One failed attempt shows up several times in a log: PAM's own line and sshd's
        # "Failed password" (UsePAM yes), then "Connection closed by authenticating user"
        # and, at MaxAuthTries, two "maximum authentication attempts" lines. Count sshd's
        # Failed line; PAM's lines restate it; the follow-ups count only for a connection
        # that showed no counted failure (a scanner that connects and leaves).
        # A connection is (host, sshd pid); the first host seen keys by the pid string
        # alone (a tuple per connection was a fifth of replay's memory in a flood), any
        # other host by both. A str never equals a tuple, so the two kinds cannot collide.
        session = ev.session
        sess: str | tuple[str, str] | None = session
        if session is not None:
            host = ev.host
            home = self._home_host
            if home is None:
                self._home_host = host
            elif host is not home and host != home:
                sess = (host, session)
        # sshd's own PAM error line ("reason") is one failed prompt; PAM modules' lines
        # (pam_unix, "PAM n more") restate it or a Failed line.
        if method == "pam":
            pam_sshd = "reason" in detail and kind is _AUTH_FAILURE
            restates = not pam_sshd
        else:
            pam_sshd = restates = False
        counted = self.counted_sessions
        # A connection's memory holds for SESSION_MAX_AGE after its last counted failure:
        # an older entry is another connection that got the same pid.
        # One stamped well after this line and the clock came from a forged line.
        clock = self._clock  # self._believable(ts), inline on the hot path
        recent, believable = ts - SESSION_MAX_AGE, (ts if ts > clock else clock) + FUTURE_SKEW
        if sess is not None:
            if pam_sshd:
                pending = self.pam_pending
                n, t = pending.get(sess, _NO_PAM)
                pending[sess] = (n + 1 if recent <= t <= believable else 1, ts)
            elif kind is _AUTH_FAILURE and method in PAM_RESTATED_BY:
                pending = self.pam_pending
                n, t = pending.get(sess, _NO_PAM)
                if n and recent <= t <= believable:
                    if n == 1:
                        del pending[sess]
                    else:
                        pending[sess] = (n - 1, t)
                    restates = True
            # A line whose address came from its connection (parse/connections.py) says more
            # about an attempt the connection already showed: a follow-up too.
            if (
                kind in FOLLOW_UPS or "address_from" in detail
            ) and recent <= counted.get(sess, NEVER) <= believable:
                restates = True
            # "Invalid user X" (or "User X from A not allowed": sshd treats X as invalid)
            # came first on this connection and was counted: the first "Failed password for
            # invalid user X" after it is the same attempt.
            if (
                not restates
                and kind is _AUTH_FAILURE
                and detail.get("invalid_user")
                and recent <= self.invalid_sessions.pop(sess, NEVER) <= believable
            ):
                restates = True
        ip = ev.ip
        if ip is None:
            return out
        if type(ip) is _IPv4:
            key: int = ip._ip  # type: ignore[attr-defined]  # addr_key's IPv4 case, fast
        else:
            key = addr_key(ip, self.v6)
        # A key the server does not know guesses no password; an agent offers several per
        # connection (LogLevel VERBOSE logs each), and a host that logs in offers stale ones.
        key_try = kind is _AUTH_FAILURE and method in KEY_METHODS
        if key_try and (
            key in self.authenticated
            or (sess is not None and recent <= counted.get(sess, NEVER) <= believable)
        ):
            restates = True
        store = self.evidence
        evidence = store.pop(key, None)  # re-inserted below: the dict's end is most recent
        if evidence is None:
            evidence = []
            if len(store) >= EVIDENCE_ADDRESSES:
                self._trim_evidence()
        evidence.append(ev)
        if len(evidence) > EVIDENCE_KEEP:
            del evidence[0]
        store[key] = evidence
        weight = 0 if restates else self.weights.get(kind, 0)
        scanner_only = kind in SCANNER_ONLY
        if scanner_only and key in self.authenticated:
            weight = 0
        if weight and sess is not None:
            counted[sess] = ts
            if kind is _INVALID_USER or kind is _NOT_ALLOWED:
                self.invalid_sessions[sess] = ts
            self._counted_n += 1
            if not self._counted_n & SESSION_EXPIRY_EVERY:
                self._expire_sessions(min(ts, self._clock), believable)
            if len(counted) > 100_000:
                self._trim_sessions()
        if weight:
            scan = scanner_only or key_try
            n_add = weight * ev.count
            if not scan and self.attempts is not None:
                self.attempts[id(ev)] = n_add
            by_ip = self.by_ip
            evicted = by_ip.evicted
            (self.by_ip_scan if scan else by_ip).add(key, ts, n_add)
            # Invalid names never log in, so nothing ever explains their failures: the
            # per-address total counts them, and a botnet's random names cost no entry here.
            if (
                not scan
                and ev.user is not None
                and kind is not _INVALID_USER
                and not detail.get("invalid_user")
            ):
                self.by_ip_user.add((key, ev.user), ts, n_add)
                self.by_user.add(ev.user, ts, n_add)
            if by_ip.evicted != evicted:
                self._prune_by_ip_user()
            for rule, c in self._scan_rules if scan else self._address_rules:
                since = self._since(rule, key, ts, c.window)
                n = by_ip.count(key, since)
                if rule == "bruteforce":
                    n += self.by_ip_scan.count(key, since)
                if n >= c.threshold:
                    self.fired[(rule, key)] = ts
                    out.append(
                        self._on_address(
                            rule,
                            c.severity,
                            c.action,
                            key,
                            evidence,
                            f"{c.threshold} or more failures within {_span(c.window)}",
                        )
                    )
        e = r.enumeration
        if e.enabled and kind is _INVALID_USER and ev.user is not None:
            self.users_per_ip.add(key, ev.user, ts)
            if (
                self.users_per_ip.count(key, self._since("enumeration", key, ts, e.window))
                >= e.threshold
            ):
                self.fired[("enumeration", key)] = ts
                names = self.users_per_ip.items(key, ts - e.window)
                out.append(
                    self._on_address(
                        "enumeration",
                        e.severity,
                        e.action,
                        key,
                        evidence,
                        f"{len(names)} invalid user names within {_span(e.window)}",
                    )
                )
        d = r.distributed
        if (
            self.track_sprays
            and ev.user is not None
            and (kind is _AUTH_FAILURE or kind is _INVALID_USER)
        ):
            self.ips_per_user.add(ev.user, key, ts)
            if (
                d.enabled
                and self.ips_per_user.count(
                    ev.user, self._since("distributed", ev.user, ts, d.window), d.threshold
                )
                >= d.threshold
            ):
                self.fired[("distributed", ev.user)] = ts
                n = self.ips_per_user.count(ev.user, ts - d.window)
                self.findings_total += 1
                out.append(
                    Finding(
                        "distributed",
                        Severity(d.severity),
                        f"user {ev.user}",
                        (ev,),
                        Action(d.action),
                        f"{n} addresses failing against user {ev.user!r} within {_span(d.window)}",
                    )
                )
        return out

    def _success(self, ev: Event) -> list[Finding]:
        out: list[Finding] = []
        ts = ev.ts.timestamp()
        r = self.rules
        key = addr_key(ev.ip, self.v6) if ev.ip is not None else None
        if r.success_after_failures.enabled:
            f = self._compromise(ev, key, ts)
            if f is not None:
                out.append(f)
        if key is not None:
            self.authenticated.add(key)
            if ev.method not in KEY_METHODS:  # a key login explains no password failure
                self._explain(key, ev.user or "")
        if r.root_login.enabled and ev.user == "root":
            routine = self._routine_root(ev)
            self.findings_total += 1
            out.append(
                Finding(
                    "root_login",
                    Severity(r.root_login.routine_severity if routine else r.root_login.severity),
                    "user root",
                    (ev,),
                    Action(r.root_login.action),
                    f"root logged in from {ev.ip or '?'} ({ev.method})"
                    + (": a known key, from a network it used before" if routine else ""),
                )
            )
        if r.off_hours.enabled and self.off_hours(ev):
            self.findings_total += 1
            out.append(
                Finding(
                    "off_hours",
                    Severity(r.off_hours.severity),
                    f"user {ev.user}",
                    (ev,),
                    Action(r.off_hours.action),
                    f"{ev.user} logged in from {ev.ip or '?'} outside working "
                    f"hours ({r.off_hours.hours}, {','.join(r.off_hours.days)})",
                )
            )
        out.extend(self._history(ev, ts))
        return out

    def _routine_root(self, ev: Event) -> bool:
        """A root login with a key root used before, from a network root logged in from
        before (the bastion's nightly job): recorded, not paged. Anything else about a root
        login (a password, a new key, a new network) keeps the rule's severity."""
        if ev.method not in KEY_METHODS or not ev.key_fp or ev.ip is None:
            return False
        ns = self.rules.new_source
        pfx = source_prefix(ev.ip, ns.ipv4_prefix, ns.ipv6_prefix)
        h = self.history
        return ev.key_fp in h.keys.get("root", ()) and pfx in h.sources.get("root", ())

    def _compromise(self, ev: Event, key: int | None, ts: float) -> Finding | None:
        """success_after_failures: was this login the fruit of the failures before it?

        The evidence is weighed against the signature of a user's own typos (few failures,
        their own name, their usual network); docs/detection.md has the reasoning."""
        sa = self.rules.success_after_failures
        since = ts - sa.window
        user = ev.user or ""
        password = ev.method not in KEY_METHODS
        ns = self.rules.new_source
        pfx = None if ev.ip is None else source_prefix(ev.ip, ns.ipv4_prefix, ns.ipv6_prefix)
        sources = self.history.sources.get(user)
        known = ev.ip is not None and sources is not None and self._contains(sources, ev.ip)
        own = foreign = 0
        if key is not None:
            total = self.by_ip.count(key, since)
            own = self.by_ip_user.count((key, user), since)
            foreign = total - own
            if foreign and pfx is not None:
                # Other people's typos behind the same address (an office NAT) are theirs to
                # explain: names known to log in from this network are not an attacker's.
                for other, nets in self.history.sources.items():
                    if other != user and ev.ip is not None and self._contains(nets, ev.ip):
                        foreign -= self.by_ip_user.count((key, other), since)
                foreign = max(0, foreign)
        attempts = own + foreign
        sprayers = self.ips_per_user.count(user, since) if user else 0
        in_spray = key is not None and (
            self.ips_per_user.seen(user, key, since)
            or self.by_ip_user.count((key, user), since) > 0
        )
        guesses = self.by_user.count(user, since) if user else 0
        slow = self.by_user.count(user, ts - self.rules.slow_bruteforce.window) if user else 0
        capped = key is not None and self.by_ip.count(key, since) >= self.by_ip.keep
        span = _span(sa.window)
        net = str(key_network(key, self.v6)) if key is not None else "?"
        h = self.history
        learning = ns.learning > 0 and (h.since is None or ts - h.since < ns.learning)
        if sources:
            new_net = not known
            where = (
                f"{user} had never logged in from {pfx}"
                if new_net
                else f"{pfx} is {user}'s usual network"
            )
        else:
            # A dormant account is an attacker's favourite; but on a fresh install every
            # user is "without history" until the learning period is over.
            # ... unless the network is one the server's users log in from every day.
            in_use = ev.ip is not None and any(
                self._contains(nets, ev.ip) for u, nets in h.sources.items() if u != user
            )
            new_net = not learning and not in_use
            where = (
                f"{user} has no earlier login on record"
                if new_net
                else f"{user} has no login history yet (learning)"
            )
        how = f"{ev.method or 'unknown method'}"
        # From the usual network, only what bruteforce itself calls an attack: names that
        # do not log in from there, as many as its threshold.
        inside = max(sa.threshold, self.rules.bruteforce.threshold)
        critical = reason = None
        if password and (
            (new_net and attempts >= sa.threshold)
            or foreign >= inside
            or (not sources and attempts >= inside)  # no history is no excuse for many
        ):
            critical, reason = True, self._attempts_text(attempts, foreign, own, net, span, capped)
        elif (
            password
            and sprayers >= sa.spray_threshold
            and not known
            and (new_net or in_spray)
        ):
            critical = True
            many = "at least " if sprayers >= self.ips_per_user.keep else ""
            reason = f"{many}{sprayers} addresses failed against {user} within {span}" + (
                ", this one among them" if in_spray else ""
            )
        elif password and new_net and (
            guesses >= sa.threshold or slow >= self.rules.bruteforce.threshold
        ):
            critical = True
            n, within = (
                (guesses, span)
                if guesses >= sa.threshold
                else (slow, _span(self.rules.slow_bruteforce.window))
            )
            reason = f"{n} failed attempts against {user} from any address within {within}"
        elif attempts >= (sa.threshold if new_net else inside):
            # Recorded, not paged: a key login (a key is not guessed), or more of the user's
            # own mistakes from their usual network than bruteforce allows anyone. A spray of
            # the user name from elsewhere says nothing about a login from the usual network
            # or with a key: not recorded.
            critical, reason = False, self._attempts_text(attempts, foreign, own, net, span, capped)
        if critical is None or reason is None:
            return None
        if critical:
            verdict = f"{where}: possible compromise"
            severity = Severity(sa.severity)
        else:
            verdict = (
                f"the login used a key ({how}), which failures cannot guess"
                if not password
                else f"{where}: probably the user's own mistakes"
            )
            severity = Severity(sa.weak_severity)
        subject = net if critical and attempts >= sa.threshold else f"user {user}"
        evidence = tuple(self.evidence.get(key, ())) if key is not None else ()
        self.findings_total += 1
        return Finding(
            "success_after_failures",
            severity,
            subject,
            (*evidence, ev),
            Action(sa.action),
            f"{user} logged in from {ev.ip or '?'} ({how}) after {reason}; {verdict}",
        )

    @staticmethod
    def _attempts_text(
        attempts: int, foreign: int, own: int, net: str, span: str, capped: bool = False
    ) -> str:
        many = "at least " if capped else ""
        text = f"{many}{attempts} failed attempts from {net} within {span}"
        if foreign and own:
            return f"{text} ({foreign} against other user names)"
        if foreign:
            return f"{text} (all against other user names)"
        return text

    def _explain(self, key: int, user: str) -> None:
        """A user's login explains their own failures from that address: gone from every
        count, so one more typo next hour is one typo, not the fifth failure. Only that
        user's name: logging in as guest never clears an attack on root."""
        stamps = self.by_ip_user.pop((key, user))
        if stamps:
            self.by_ip.remove(key, stamps)
            self.by_user.remove(user, stamps)
        self.ips_per_user.discard(user, key)

    def off_hours(self, ev: Event) -> bool:
        """Is the event's own time outside the configured working days and hours?"""
        local = ev.ts.astimezone(self.off_zone) if self.off_zone is not None else ev.ts
        if local.weekday() not in self.work_days:
            return True
        minute = local.hour * 60 + local.minute
        start, end = self.work_hours
        inside = start <= minute < end if start <= end else (minute >= start or minute < end)
        return not inside

    def _history(self, ev: Event, ts: float) -> list[Finding]:
        out: list[Finding] = []
        h = self.history
        if h.since is None:
            # Capped like the clean-ups (set_clock): a forged first login stamped in the
            # future would otherwise keep new_source and new_key learning until then.
            h.since = min(ts, self._clock)
        user = ev.user or ""
        ns, nk = self.rules.new_source, self.rules.new_key
        learning = ts - h.since < ns.learning
        if ev.ip is not None:
            pfx = source_prefix(ev.ip, ns.ipv4_prefix, ns.ipv6_prefix)
            seen = h.sources.setdefault(user, set())
            if pfx not in seen:
                if ns.enabled and not learning:
                    self.findings_total += 1
                    out.append(
                        Finding(
                            "new_source",
                            Severity(ns.severity),
                            f"user {user}",
                            (ev,),
                            Action(ns.action),
                            f"{user} logged in from {pfx} for the first time",
                        )
                    )
                seen.add(pfx)
        if ev.key_fp:
            keys = h.keys.setdefault(user, set())
            if ev.key_fp not in keys:
                if nk.enabled and not learning:
                    self.findings_total += 1
                    out.append(
                        Finding(
                            "new_key",
                            Severity(nk.severity),
                            f"user {user}",
                            (ev,),
                            Action(nk.action),
                            f"{user} logged in with a key never seen before: {ev.key_fp}",
                        )
                    )
                keys.add(ev.key_fp)
        return out

    # ------------------------------------------------------------------ helpers

    def _on_address(
        self,
        rule: str,
        severity: str,
        action: str,
        key: int,
        evidence: Iterable[Event],
        summary: str,
    ) -> Finding:
        self.findings_total += 1
        # Named once per key: an address still failing raises finding after finding.
        names = self._net_names
        net = names.get(key)
        if net is None:
            if len(names) >= 4096:
                names.clear()
            net = names[key] = str(key_network(key, self.v6))
        return Finding(
            rule, _SEVERITY[severity], net, tuple(evidence), _ACTION[action], summary, ban_net=net
        )

    def _contains(self, nets: set[str], ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """Is ``ip`` in one of a user's usual networks?"""
        ns = self.rules.new_source
        if source_prefix(ip, ns.ipv4_prefix, ns.ipv6_prefix) in nets:
            return True  # the common case: stored at today's granularity
        odd = self._odd_nets
        if odd is None:
            return False
        return any((net := odd.get(n)) is not None and ip in net for n in nets)

    def _prune_by_ip_user(self) -> None:
        """by_ip evicted addresses: their per-user entries go with them, or colleagues'
        typos left behind would read as "against other names" (an attack) next time."""
        live = self.by_ip.data
        dead = [k for k in self.by_ip_user.data if isinstance(k, tuple) and k[0] not in live]
        for k in dead:
            del self.by_ip_user.data[k]

    def _expire_sessions(self, now: float, until: float) -> None:
        """Forget connections whose last counted failure is SESSION_MAX_AGE old (log time).

        From the front of each dict, up to the first younger entry: the dicts are in the
        order connections were first counted, and a connection's failures and follow-ups
        come within its short life, so an entry refreshed later barely holds the rest up.
        Entries stamped after ``until`` (forged, see FUTURE_SKEW) go too."""
        horizon = now - SESSION_MAX_AGE
        drop_older(self.counted_sessions, horizon, until=until)
        drop_older(self.invalid_sessions, horizon, until=until)
        drop_older(self.pam_pending, horizon, itemgetter(1), until)

    def _trim_sessions(self) -> None:
        drop_oldest(self.pam_pending, 10_000)
        drop_oldest(self.counted_sessions, 10_000)
        drop_oldest(self.invalid_sessions, 10_000)

    def _trim_evidence(self) -> None:
        drop_oldest(self.evidence, EVIDENCE_ADDRESSES // 10)

    def _expire_fired(self, now: float, until: float) -> None:
        """Forget findings older than every window that asks about them. ``now`` is log time
        (a finding's, capped by set_clock), as the counters' own sweeps use: a daemon
        catching up an old backlog must not forget what fired a moment before in the log.
        Run when the memory has doubled since the last clean-up: O(1) a finding. Findings
        stamped after ``until`` (forged, see FUTURE_SKEW) go too."""
        limit = now - self._fired_horizon
        self.fired = {k: t for k, t in self.fired.items() if limit <= t <= until}
        self._fired_limit = max(FIRED_MIN, 2 * len(self.fired))

    def stats(self) -> dict[str, int]:
        return {
            "tracked_addresses": len(self.by_ip),
            "tracked_scanners": len(self.by_ip_scan),
            "evicted_addresses": self.by_ip.evicted,
            "expired_addresses": self.by_ip.expired,
            "tracked_users": len(self.ips_per_user),
            "findings": self.findings_total,
        }

    def metrics(self) -> list[Sample]:
        return [
            sample("sshmonitor_tracked_keys", len(self.by_ip), table="addresses"),
            sample("sshmonitor_tracked_keys", len(self.by_ip_scan), table="scanners"),
            sample("sshmonitor_tracked_keys", len(self.ips_per_user), table="addresses_per_user"),
            sample("sshmonitor_tracked_keys", len(self.users_per_ip), table="users_per_address"),
        ]


def logins(events: Iterable[Event], engine: Engine | None) -> list[Login]:
    """The successful logins among ``events``, as the login history keeps them (pure)."""
    ns = engine.rules.new_source if engine is not None else None
    v4, v6 = (ns.ipv4_prefix, ns.ipv6_prefix) if ns is not None else (24, 48)
    return [
        Login(
            ev.user or "",
            None if ev.ip is None else source_prefix(ev.ip, v4, v6),
            ev.key_fp,
            ev.ts.timestamp(),
        )
        for ev in events
        if ev.kind is Kind.AUTH_SUCCESS
    ]
