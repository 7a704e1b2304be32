"""sshd's messages (sshd, sshd-session, sshd-auth) → Events.

Safety rule: user names are attacker-controlled, and sshd writes them *before* the address.
Every pattern here anchors the address at the **end** of the message and lets the user name
be greedy, so the address is always the last one in the line — the one sshd wrote. A user
name such as ``x from 6.6.6.6 port 1 ssh2`` stays a user name. The one place where attacker
text can also follow the address (a certificate's key ID in publickey lines) is checked for
ambiguity, and an ambiguous line is attributed to no address at all.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from ..addresses import normalize_address
from ..events import Event, Kind
from .prefix import Prefix

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=65536)
def addr(text: str) -> tuple[IP | None, str | None]:
    """(ip, hostname): an IP normalised (IPv4-mapped IPv6 → IPv4), or a name, or neither."""
    t = text
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    # inet_pton is C and strict (no leading zeros, no spaces); ipaddress's own parser is
    # five times slower, and botnet logs are full of addresses seen once.
    try:
        return ipaddress.IPv4Address(int.from_bytes(socket.inet_pton(socket.AF_INET, t))), None
    except (OSError, ValueError):  # ValueError: embedded NUL, non-ASCII
        pass
    try:
        ip: IP = ipaddress.IPv6Address(int.from_bytes(socket.inet_pton(socket.AF_INET6, t)))
    except (OSError, ValueError):
        if "%" in t:  # fe80::1%eth0: scope ids are not part of the address
            try:
                ip = ipaddress.ip_address(t.split("%", 1)[0])
            except ValueError:
                return None, None
        elif t in ("UNKNOWN", "") or len(t) > 255 or " " in t:
            return None, None
        else:
            return None, t  # a host name (UseDNS yes): kept as text, never banned by name
    return normalize_address(ip), None  # ::ffff:a.b.c.d is a.b.c.d, everywhere after this


# Building blocks. USER is greedy on purpose (see the module docstring).
A = r"(?P<addr>\S+)"
P = r"(?P<port>\d+)"
KEYINFO = (
    r"(?:: (?P<ktype>[A-Za-z0-9@._-]+)(?: (?P<fp>(?:SHA256|MD5):[A-Za-z0-9+/=:]+))?"
    r"(?: ID (?P<cid>.*) \(serial (?P<serial>\d+)\) CA (?P<catype>\S+) (?P<cafp>\S+))?"
    r"(?:, client user \"(?P<cuser>.*)\", client host \"(?P<chost>.*)\")?)?"
)

Builder = Callable[[Prefix, "re.Match[str]", dict[str, Any]], Event | None]


def _ev(
    pre: Prefix,
    kind: Kind,
    m: re.Match[str] | None = None,
    *,
    user: str | None = None,
    method: str | None = None,
    key_fp: str | None = None,
    detail: dict[str, Any] | None = None,
) -> Event | None:
    return _ev_gd(
        pre,
        kind,
        m.groupdict() if m is not None else {},
        user,
        method,
        key_fp,
        detail if detail is not None else {},
    )


def _ev_gd(
    pre: Prefix,
    kind: Kind,
    gd: dict[str, str | None],
    user: str | None,
    method: str | None,
    key_fp: str | None,
    d: dict[str, Any],
) -> Event | None:
    """The hot path: an Event from a match's named groups (addr, port, user)."""
    ip = None
    a = gd.get("addr")
    if a is not None:
        ip, host = addr(a)
        if host is not None:
            d["host"] = host
    p = gd.get("port")
    if p is not None and (len(p) > 5 or int(p) > 65535):
        return None  # not a port sshd could have logged: let the line be unrecognized
    if user is None:
        user = gd.get("user")
    pid = pre.pid
    return Event(
        pre.ts,
        pre.host,
        pre.program,
        pid,
        kind,
        user,
        ip,
        int(p) if p is not None else None,
        method,
        key_fp,
        1,
        str(pid) if pid is not None else None,
        d,
        "",
    )


# ---------------------------------------------------------------------------- catalogue
# first word of the message → [(compiled regex, builder)]; tried in order.
CATALOGUE: dict[str, list[tuple[re.Pattern[str], Builder]]] = {}


def rule(first: str, pattern: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        CATALOGUE.setdefault(first, []).append((re.compile(pattern, re.S), fn))
        return fn

    return deco


def simple(first: str, pattern: str, kind: Kind, method: str | None = None, **fixed: Any) -> None:
    """A catalogue entry whose Event is read straight off the named groups."""
    fixed_user = fixed.get("user")
    fixed_detail = fixed.get("detail")

    def build(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
        gd = m.groupdict()
        if gd.get("inv"):
            d["invalid_user"] = True
        if gd.get("reason"):
            d["reason"] = gd["reason"]
        if gd.get("what"):
            d["what"] = gd["what"]
        if fixed_detail:
            d.update(fixed_detail)
        return _ev_gd(pre, kind, gd, fixed_user, method, None, d)

    CATALOGUE.setdefault(first, []).append((re.compile(pattern, re.S), build))


def _key(gd: dict[str, Any], d: dict[str, Any]) -> str | None:
    if gd["cid"] is not None:
        d["cert_id"] = gd["cid"]
        d["cert_serial"] = int(gd["serial"])
        d["ca_fp"] = gd["cafp"]
    if gd["ktype"]:
        d["key_type"] = gd["ktype"]
    if gd["cuser"] is not None:
        d["client_user"] = gd["cuser"]
        d["client_host"] = gd["chost"]
    return gd["fp"]


def _ambiguous(gd: dict[str, Any], msg: str) -> bool:
    """Attacker text after the address (a certificate key ID, a hostbased client user or
    host) could hide a fake address: then the line is attributed to no address."""
    if gd["cid"] is None and gd["cuser"] is None:
        return False
    return len(re.findall(r" from \S+ port \d+ ssh2[:,]", msg)) > 1


@rule(
    "Failed",
    r"Failed (?P<method>\S+) for (?P<inv>invalid user )?(?P<user>.*) from "
    + A
    + " port "
    + P
    + " ssh2"
    + KEYINFO
    + r"$",
)
def _failed(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    gd = m.groupdict()
    if gd["inv"]:
        d["invalid_user"] = True
    fp = _key(gd, d)
    ev = _ev_gd(pre, Kind.AUTH_FAILURE, gd, None, gd["method"], fp, d)
    return _strip_ip(ev) if ev is not None and _ambiguous(gd, m.string) else ev


@rule(
    "Accepted",
    r"Accepted (?P<method>\S+) for (?P<user>.*) from "
    + A
    + " port "
    + P
    + " ssh2"
    + KEYINFO
    + r"$",
)
def _accepted(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    gd = m.groupdict()
    fp = _key(gd, d)
    ev = _ev_gd(pre, Kind.AUTH_SUCCESS, gd, None, gd["method"], fp, d)
    return _strip_ip(ev) if ev is not None and _ambiguous(gd, m.string) else ev


def _strip_ip(ev: Event) -> Event:
    ev.detail["ambiguous"] = True
    ev.ip = None
    ev.port = None
    return ev


simple("Invalid", r"Invalid user (?P<user>.*) from " + A + " port " + P + "$", Kind.INVALID_USER)
simple("Invalid", r"Invalid user (?P<user>.*) from " + A + "$", Kind.INVALID_USER)
simple(
    "input_userauth_request:",
    r"input_userauth_request: invalid user (?P<user>.*)$",
    Kind.INVALID_USER,
)
simple(
    "User",
    r"User (?P<user>.*) from " + A + r" not allowed because (?P<reason>"
    r"not listed in AllowUsers|listed in DenyUsers|not in any group|"
    r"none of user's groups are listed in AllowGroups|a group is listed in DenyGroups|"
    r"shell \S+ is not executable|shell \S+ does not exist|account is locked|"
    r"its shell is not executable|[^ ].*)$",
    Kind.NOT_ALLOWED,
)
simple(
    "User",
    r"User (?P<user>.*) not allowed because (?P<reason>account is locked|"
    r"shell \S+ does not exist|shell \S+ is not executable)$",
    Kind.NOT_ALLOWED,
)
simple(
    "ROOT",
    r"ROOT LOGIN REFUSED FROM " + A + r"(?: port " + P + ")?$",
    Kind.NOT_ALLOWED,
    user="root",
    detail={"reason": "PermitRootLogin"},
)

# max auth
simple(
    "error:",
    r"error: maximum authentication attempts exceeded for (?P<inv>invalid user )?"
    r"(?P<user>.*) from " + A + " port " + P + " ssh2$",
    Kind.MAX_AUTH_EXCEEDED,
)
simple(
    "maximum",
    r"maximum authentication attempts exceeded for (?P<inv>invalid user )?"
    r"(?P<user>.*) from " + A + " port " + P + " ssh2$",
    Kind.MAX_AUTH_EXCEEDED,
)
simple(
    "Disconnecting",
    r"Disconnecting (?:authenticating|(?P<inv>invalid)) user (?P<user>.*) "
    + A
    + " port "
    + P
    + r": Too many authentication failures$",
    Kind.MAX_AUTH_EXCEEDED,
)
simple(
    "Disconnecting",
    r"Disconnecting: Too many authentication failures(?: for "
    r"(?P<inv>invalid user )?(?P<user>.*))?$",
    Kind.MAX_AUTH_EXCEEDED,
)

# pre-auth disconnects: the address is last (before the port) in every form.
simple(
    "Connection",
    r"Connection (?P<what>closed|reset) by (?:(?:authenticating|(?P<inv>invalid)) "
    r"user (?P<user>.*) )?" + A + " port " + P + "$",
    Kind.PREAUTH_DISCONNECT,
)
simple("Connection", r"Connection (?P<what>closed|reset) by " + A + "$", Kind.PREAUTH_DISCONNECT)
simple(
    "Disconnected",
    r"Disconnected from (?:authenticating|(?P<inv>invalid)) user "
    r"(?P<user>.*) " + A + " port " + P + "$",
    Kind.PREAUTH_DISCONNECT,
)
simple(
    "Timeout",
    r"Timeout before authentication for " + A + "(?: port " + P + ")?$",
    Kind.PREAUTH_DISCONNECT,
    detail={"reason": "timeout"},
)
simple(
    "Did",
    r"Did not receive identification string from " + A + "(?: port " + P + ")?$",
    Kind.PREAUTH_DISCONNECT,
    detail={"reason": "no identification"},
)

# protocol errors
simple(
    "banner",
    r"banner exchange: Connection from " + A + " port " + P + r": (?P<reason>.*)$",
    Kind.PROTOCOL_ERROR,
)
simple(
    "kex_exchange_identification:",
    r"kex_exchange_identification: (?P<reason>.*?)"
    r"(?: from " + A + " port " + P + ")?$",
    Kind.PROTOCOL_ERROR,
)
simple(
    "Unable",
    r"Unable to negotiate with " + A + " port " + P + r": no matching "
    r"(?P<what>.+?) found\.?(?: Their offer: .*)?$",
    Kind.PROTOCOL_ERROR,
)
simple(
    "ssh_dispatch_run_fatal:",
    r"ssh_dispatch_run_fatal: Connection from (?:"
    r"(?:authenticating|(?P<inv>invalid)) user (?P<user>.*) )?"
    + A
    + " port "
    + P
    + r": (?P<reason>.*)$",
    Kind.PROTOCOL_ERROR,
)
simple(
    "Bad",
    r"Bad protocol version identification '.*' from " + A + "(?: port " + P + ")?$",
    Kind.PROTOCOL_ERROR,
    detail={"reason": "bad protocol version"},
)
simple(
    "Protocol",
    r"Protocol major versions differ for " + A + "(?: port " + P + r")?: .*$",
    Kind.PROTOCOL_ERROR,
)
simple(
    "fatal:",
    r"fatal: Timeout before authentication for " + A + "(?: port " + P + ")?$",
    Kind.PREAUTH_DISCONNECT,
    detail={"reason": "timeout"},
)
simple("fatal:", r"fatal: (?P<reason>.*?) from " + A + " port " + P + "$", Kind.PROTOCOL_ERROR)
simple(
    "Timeout",
    r"Timeout before authentication for connection from " + A + r" to \S+, pid = \d+$",
    Kind.PREAUTH_DISCONNECT,
    detail={"reason": "timeout"},
)
simple("error:", r"error: kex_exchange_identification: (?P<reason>.*)$", Kind.PROTOCOL_ERROR)
simple("error:", r"error: Protocol major versions differ: .*$", Kind.PROTOCOL_ERROR)


# penalties (OpenSSH 9.8+ PerSourcePenalties, logged by the listener)
@rule(
    "drop",
    r"drop connection #\d+ from \[(?P<addr>[^\]]+)\]:(?P<port>\d+) on "
    r"\[(?P<laddr>[^\]]+)\]:(?P<lport>\d+) penalty: (?P<reason>.*)$",
)
def _drop(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    d["reason"] = m.group("reason")
    d["local"] = f"{m.group('laddr')}:{m.group('lport')}"
    return _ev(pre, Kind.PENALTY, m, detail=d)


@rule(
    "srclimit_penalise:",
    r"srclimit_penalise: (?P<addr>[0-9A-Fa-f:.]+)/(?P<bits>\d+): "
    r"(?:activating|extending) (?:ipv4|ipv6) penalty of (?P<secs>\d+(?:\.\d+)?) "
    r"seconds? for (?P<reason>.*)$",
)
@rule(
    "srclimit_penalise:",
    r"srclimit_penalise: (?:ipv4|ipv6): new (?P<addr>[0-9A-Fa-f:.]+)/(?P<bits>\d+) "
    r"active penalty of (?P<secs>\d+(?:\.\d+)?) seconds? for (?P<reason>.*)$",
)
def _penalise(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    # sshd names the client address with the prefix length it penalises; the penalty
    # covers the whole network, so that is the address we report.
    try:
        net = ipaddress.ip_network(f"{m.group('addr')}/{m.group('bits')}", strict=False)
    except ValueError:
        return None
    d["reason"] = m.group("reason").removeprefix("penalty: ")
    d["prefix"] = f"{m.group('addr')}/{m.group('bits')}"
    secs = m.group("secs")
    d["seconds"] = float(secs) if "." in secs else int(secs)
    ev = _ev(pre, Kind.PENALTY, None, detail=d)
    if ev is not None:
        ip = net.network_address
        ev.ip = ip.ipv4_mapped if ip.version == 6 and ip.ipv4_mapped else ip
    return ev


@rule(
    "Postponed", r"Postponed (?P<method>\S+) for (?P<user>.*) from " + A + " port " + P + " ssh2.*$"
)
def _postponed(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    return _ev(pre, Kind.IGNORED, m, method=m.group("method"), detail=d)


@rule(
    "reverse",
    r"reverse mapping checking getaddrinfo for (?P<name>.*) "
    r"\[(?P<addr>[^\]]+)\] failed.*$",
)
def _reverse(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    d["name"] = m.group("name")
    return _ev(pre, Kind.IGNORED, m, detail=d)


# successes' companions
simple(
    "Disconnected",
    r"Disconnected from user (?P<user>.*) " + A + " port " + P + "$",
    Kind.DISCONNECT,
)


@rule("Disconnected", r"Disconnected from " + A + " port " + P + "$")
def _disconnected(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    return _ev(pre, Kind.PREAUTH_DISCONNECT if d.get("preauth") else Kind.DISCONNECT, m, detail=d)


@rule(
    "error:",
    r"error: Received disconnect from "
    + A
    + "(?: port "
    + P
    + r")?: ?(?P<code>\d+): (?P<reason>.*)$",
)
@rule(
    "Received",
    r"Received disconnect from " + A + "(?: port " + P + r")?: ?(?P<code>\d+): (?P<reason>.*)$",
)
def _received(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    # Before authentication it is a scanner or a failed client; after it, a normal logout.
    d["reason"] = m.group("reason")
    d["code"] = int(m.group("code"))
    return _ev(pre, Kind.PREAUTH_DISCONNECT if d.get("preauth") else Kind.DISCONNECT, m, detail=d)


# recognised, recorded, never scored
for _first, _pat in (
    ("Server", r"Server listening on .*$"),
    ("Connection", r"Connection from " + A + " port " + P + r" on \S+ port \d+.*$"),
    ("Address", r"Address " + A + r" maps to .*$"),
    ("Starting", r"Starting session: .*$"),
    ("Close", r"Close session: user (?P<user>.*) from " + A + " port " + P + ".*$"),
    ("User", r"User child is on pid \d+$"),
    ("Received", r"Received signal \d+; terminating\.?$"),
    ("Received", r"Received SIGHUP; restarting\.?$"),
    ("Transferred:", r"Transferred: sent \d+, received \d+ bytes.*$"),
    ("Connection", r"Connection closed by UNKNOWN port \d+$"),
    ("Changed", r"Changed root directory to .*$"),
    ("Set", r"Set /proc/self/oom_score_adj .*$"),
    ("Exiting", r"Exiting on signal \d+$"),
    ("pam_unix(sshd:account):", r".*$"),
    ("pam_systemd(sshd:session):", r".*$"),
    ("pam_env(sshd:session):", r".*$"),
    ("Accepted", r"Accepted key .*$"),
    ("Authorized", r"Authorized to .*$"),
    ("Nasty", r"Nasty PTR record .*$"),
    ("debug1:", r".*$"),
    ("debug2:", r".*$"),
    ("debug3:", r".*$"),
    ("rexec", r".*$"),
    ("Failed", r"Failed to .*$"),
):
    simple(_first, _pat, Kind.IGNORED)


# ---------------------------------------------------------------------------- PAM (in sshd)

_KV = re.compile(r"(\w+)=(\S*)")


def _pam_fields(tail: str) -> dict[str, str]:
    # "logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.5  user=root": user is last and
    # may itself contain '=' or spaces; take it from the end.
    out: dict[str, str] = {}
    u = tail.rfind(" user=")
    if u >= 0:
        out["user"] = tail[u + 6 :]
        tail = tail[:u]
    for k, v in _KV.findall(tail):
        out.setdefault(k, v)
    return out


@rule("pam_unix(sshd:auth):", r"pam_unix\(sshd:auth\): authentication failure; (?P<kv>.*)$")
def _pam_auth_fail(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event:
    f = _pam_fields(m.group("kv"))
    return _pam_event(pre, f, d, 1)


@rule("PAM", r"PAM (?P<n>[0-9]{1,9}) more authentication failures?; (?P<kv>.*)$")
def _pam_more(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event:
    return _pam_event(pre, _pam_fields(m.group("kv")), d, int(m.group("n")))


def _pam_event(pre: Prefix, f: dict[str, str], d: dict[str, Any], n: int) -> Event:
    ip, host = addr(f.get("rhost", ""))
    if host is not None:
        d["host"] = host
    return Event(
        pre.ts,
        pre.host,
        pre.program,
        pre.pid,
        Kind.AUTH_FAILURE,
        f.get("user") or None,
        ip,
        None,
        "pam",
        None,
        n,
        _sess(pre),
        d,
    )


def _sess(pre: Prefix) -> str | None:
    return str(pre.pid) if pre.pid is not None else None


simple(
    "error:",
    r"error: PAM: Authentication failure for (?P<inv>illegal user )?(?P<user>.*) "
    r"from " + A + "$",
    Kind.AUTH_FAILURE,
    method="pam",
)
simple(
    "error:",
    r"error: PAM: (?:User not known to the underlying authentication module|"
    r"Authentication token is no longer valid.*) for (?P<inv>illegal user )?(?P<user>.*) "
    r"from " + A + "$",
    Kind.AUTH_FAILURE,
    method="pam",
)


@rule(
    "pam_unix(sshd:session):",
    r"pam_unix\(sshd:session\): session opened for user "
    r"(?P<user>.*?)(?:\(uid=(?P<uid>\d+)\))? by (?P<by>.*)$",
)
def _sess_open(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    if m.group("uid"):
        d["uid"] = int(m.group("uid"))
    return _ev(pre, Kind.SESSION_OPEN, None, user=m.group("user"), detail=d)


@rule(
    "pam_unix(sshd:session):",
    r"pam_unix\(sshd:session\): session closed for user "
    r"(?P<user>.*)$",
)
def _sess_close(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    return _ev(pre, Kind.SESSION_CLOSE, None, user=m.group("user"), detail=d)


# Tried after the rules above for the same first word: PAM's chatter that scores nothing.
simple("PAM", r"PAM service\(.*\) ignoring max retries.*$", Kind.IGNORED)
simple("pam_unix(sshd:auth):", r"pam_unix\(sshd:auth\): .*$", Kind.IGNORED)


# ---------------------------------------------------------------------------- entry point


def parse(pre: Prefix, raw: str = "") -> Event:
    """One sshd message → an Event (``unrecognized`` when nothing in the catalogue matches)."""
    msg = pre.message
    preauth = False
    if msg.endswith(" [preauth]"):
        msg = msg[:-10]
        preauth = True
    elif msg.endswith(" [net]"):
        msg = msg[:-6]
    sp = msg.find(" ")
    entries = CATALOGUE.get(msg[:sp] if sp >= 0 else msg)
    if entries is not None:
        for pat, build in entries:
            m = pat.match(msg)
            if m is not None:
                ev = build(pre, m, {"preauth": True} if preauth else {})
                if ev is not None:
                    return ev
    if msg.startswith("pam_"):
        # Any other PAM module speaking inside sshd (pam_limits, pam_systemd, pam_motd...):
        # recorded, never scored.
        return Event(
            pre.ts, pre.host, pre.program, pre.pid, Kind.IGNORED, session=_sess(pre), raw=raw
        )
    return Event(
        pre.ts,
        pre.host,
        pre.program,
        pre.pid,
        Kind.UNRECOGNIZED,
        session=_sess(pre),
        detail={"preauth": True} if preauth else {},
        raw=raw,
    )
