"""sshd's messages (sshd, sshd-session, sshd-auth) → Events.

Safety rule: attackers control text in sshd's messages — user names, which sshd writes *before*
the address, and client banners, disconnect reasons, service names, certificate key IDs and
hostbased client names, which it writes *after* it. The address taken is always the one sshd
wrote in its fixed position, read one of three ways:

- attacker text only before the address: the pattern anchors the address at the **end** of
  the message and lets the user name be greedy, so the address is the last one in the line.
  A user name such as ``x from 6.6.6.6 port 1 ssh2`` stays a user name;
- attacker text only after it: the address follows a fixed head (``probed from A port P with
  …``, ``Received disconnect from A port P:N: …``) and ``\\S+`` cannot run past a space;
- attacker text on both sides (a log preamble's user name and a disconnect reason; a key ID;
  hostbased client names): the line is read with the user name as long and as short as it
  can be. When the two readings put the address in different places the line could be
  forged: it keeps its kind but gets no address (``detail.ambiguous``). The connection
  memory (``connections.py``) may still give it the address an earlier line of the same
  connection stated.

Every catalogue entry carries example messages with the attacker-controlled slots marked
(``{u}`` before the address, ``{x}`` after it, ``{a}``/``{p}`` the address and port):
tests/test_parse_safety.py injects fake addresses into those slots for every entry.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from functools import lru_cache
from typing import Any, NamedTuple

from ..addresses import normalize_address
from ..events import Event, Kind
from .prefix import Prefix

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


# Attackers repeat within minutes: 8,192 addresses missed only 3 % more than 65,536 on 1M
# attack-heavy lines (29,053 distinct addresses) and hold 5 MB less; a botnet of one-shot
# addresses misses any size.
@lru_cache(maxsize=8192)
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
# sshd's log preamble (packet.c sshpkt_fmt_connection_id): "authenticating user X " or
# "invalid user X " while authenticating, "user X " once authenticated, nothing before.
PRE = r"(?:(?P<pre>authenticating |invalid )?user (?P<user>.*) )?"
KEYINFO = (
    r"(?:: (?P<ktype>[A-Za-z0-9@._-]+)"
    r"(?: (?P<fp>(?:SHA256|MD5):[A-Za-z0-9+/=:]+|[0-9a-f]{2}(?::[0-9a-f]{2}){15}))?"
    r"(?: ID (?P<cid>.*) \(serial (?P<serial>\d+)\) CA (?P<catype>\S+) (?P<cafp>\S+))?"
    r"(?:, client user \"(?P<cuser>.*)\", client host \"(?P<chost>.*)\")?)?"
)
_GREEDY_USER = "(?P<user>.*)"
_LAZY_USER = "(?P<user>.*?)"

Builder = Callable[[Prefix, "re.Match[str]", dict[str, Any]], Event | None]


class Entry(NamedTuple):
    """One catalogue message: its first word (None: a fallback, tried on every line nothing
    else matched), its pattern and example messages with the attacker slots marked."""

    first: str | None
    pattern: re.Pattern[str]
    examples: tuple[str, ...]


# first word of the message → [(compiled regex, builder)]; tried in order.
CATALOGUE: dict[str, list[tuple[re.Pattern[str], Builder]]] = {}
# Messages whose first word varies (a function name, a file name): tried last.
FALLBACK: list[tuple[re.Pattern[str], Builder]] = []
ENTRIES: list[Entry] = []
# For patterns with attacker text on both sides of the address: the same pattern with the
# user name as short as possible (see _ambiguous).
_LAZY: dict[re.Pattern[str], re.Pattern[str]] = {}


# Messages behind a level word ("error: ", "fatal: ") are many: they are filed under their
# first two words when the second is literal text, and tried before the level's general ones.
_LEVELS = frozenset({"error:", "fatal:"})
_META = frozenset("\\()[]{}?*+.|^$")


def _file_under(first: str, pattern: str) -> str:
    if first in _LEVELS and pattern.startswith(first + " "):
        word = pattern[len(first) + 1 :].split(" ", 1)[0]
        if word and not _META.intersection(word) and len(word) < len(pattern) - len(first) - 1:
            return f"{first} {word}"
    return first


def _register(
    first: str | None, pattern: str, build: Builder, examples: tuple[str, ...]
) -> re.Pattern[str]:
    pat = re.compile(pattern, re.S)
    if first is None:
        FALLBACK.append((pat, build))
    else:
        first = _file_under(first, pattern)
        CATALOGUE.setdefault(first, []).append((pat, build))
    ENTRIES.append(Entry(first, pat, examples))
    if _GREEDY_USER in pattern:
        _LAZY[pat] = re.compile(pattern.replace(_GREEDY_USER, _LAZY_USER), re.S)
    return pat


def rule(first: str | None, pattern: str, *examples: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        _register(first, pattern, fn, examples)
        return fn

    return deco


def simple(
    first: str | None,
    pattern: str,
    kind: Kind,
    method: str | None = None,
    *,
    examples: tuple[str, ...],
    post: Kind | None = None,
    two_sided: bool = False,
    user: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """A catalogue entry whose Event is read straight off the named groups.

    ``post``: the kind when the log preamble says the user is authenticated (``user X``
    rather than ``authenticating user X``/``invalid user X``). ``two_sided``: attacker text
    may follow the address too (see :func:`_ambiguous`)."""
    fixed_user = user
    fixed_detail = detail
    # Look only for the groups the pattern has: this runs once per matching line.
    groups = re.compile(pattern, re.S).groupindex
    has_pre = "pre" in groups
    has_inv = "inv" in groups
    has_reason = "reason" in groups
    has_what = "what" in groups

    def build(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
        gd = m.groupdict()
        k = kind
        if has_pre:
            preamble = gd["pre"]
            if preamble == "invalid ":
                d["invalid_user"] = True
            elif preamble is None and post is not None and gd["user"] is not None:
                k = post
        if has_inv and gd["inv"]:
            d["invalid_user"] = True
        if has_reason and gd["reason"]:
            d["reason"] = gd["reason"]
        if has_what and gd["what"]:
            d["what"] = gd["what"]
        if fixed_detail:
            d.update(fixed_detail)
        ev = _ev_gd(pre, k, gd, fixed_user, method, None, d)
        # Without a user name before it the address follows sshd's fixed head: one reading.
        if two_sided and ev is not None and gd.get("user") is not None and _ambiguous(m):
            return _strip_ip(ev)
        return ev

    _register(first, pattern, build, examples)


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
    """An Event from a match's named groups (addr, port, user)."""
    return _event(
        pre,
        kind,
        gd.get("addr"),
        gd.get("port"),
        gd.get("user") if user is None else user,
        method,
        key_fp,
        d,
    )


def _event(
    pre: Prefix,
    kind: Kind,
    a: str | None,
    p: str | None,
    user: str | None,
    method: str | None,
    key_fp: str | None,
    d: dict[str, Any],
) -> Event | None:
    """The hot path: an Event from the address, port and user texts a pattern read."""
    ip = None
    if a is not None:
        ip, host = addr(a)
        if host is not None:
            d["host"] = host
    port = None
    if p is not None:
        if len(p) > 5:
            return None  # not a port sshd could have logged: let the line be unrecognized
        port = int(p)
        if port > 65535:
            return None
    pid = pre.pid
    return Event(
        pre.ts,
        pre.host,
        pre.program,
        pid,
        kind,
        user,
        ip,
        port,
        method,
        key_fp,
        1,
        str(pid) if pid is not None else None,
        d,
        "",
    )


def _ambiguous(m: re.Match[str]) -> bool:
    """Whether attacker text on both sides of the address allows a second reading: the same
    pattern with the shortest user name puts the address elsewhere."""
    lazy = _LAZY.get(m.re)
    if lazy is None:
        return False
    m2 = lazy.match(m.string)
    return m2 is None or m2.start("addr") != m.start("addr")


def _strip_ip(ev: Event) -> Event:
    ev.detail["ambiguous"] = True
    ev.ip = None
    ev.port = None
    ev.detail.pop("host", None)
    return ev


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


def _auth_log(kind: Kind) -> Builder:
    """auth.c auth_log(): ``Failed|Accepted|Partial <method> for [invalid user ]X from A port
    P ssh2[: KEY …]``. Only a certificate's key ID and hostbased client names are attacker
    text after the address; lines carrying them are checked for a second reading."""

    def build(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
        method, inv, user, a, p, proto, ktype = m.group(*_AUTH_LOG_GROUPS)
        if inv:
            d["invalid_user"] = True
        if proto == "ssh1":
            d["protocol"] = 1
        if ktype is None:  # no key information: nothing else of KEYINFO can have matched
            return _event(pre, kind, a, p, user, method, None, d)
        gd = m.groupdict()
        ev = _event(pre, kind, a, p, user, method, _key(gd, d), d)
        if ev is not None and (gd["cid"] is not None or gd["cuser"] is not None) and _ambiguous(m):
            return _strip_ip(ev)
        return ev

    return build


_AUTH_LOG = (
    r" (?P<method>\S+) for (?P<inv>invalid user |illegal user )?(?P<user>.*) from "
    + A
    + " port "
    + P
    + " (?P<proto>ssh[12])"
    + KEYINFO
    + r"$"
)
# What _auth_log's builder reads, by number: one C call instead of a dict of 13 groups.
_AUTH_LOG_GROUPS = tuple(
    re.compile(_AUTH_LOG).groupindex[n]
    for n in ("method", "inv", "user", "addr", "port", "proto", "ktype")
)
_KEY_EXAMPLES = (
    " for {u} from {a} port {p} ssh2",
    " for invalid user {u} from {a} port {p} ssh2",
    " for {u} from {a} port {p} ssh2: RSA SHA256:abcDEF123+/x",
    " for {u} from {a} port {p} ssh2: ED25519-CERT SHA256:aaaa ID {x} (serial 7) CA ED25519"
    " SHA256:cccc",
    ' for {u} from {a} port {p} ssh2: ED25519 SHA256:k, client user "{x}", client host "{x}"',
    " for {u} from {a} port {p} ssh1",
)
rule("Failed", "Failed" + _AUTH_LOG, *("Failed publickey" + e for e in _KEY_EXAMPLES))(
    _auth_log(Kind.AUTH_FAILURE)
)
rule("Accepted", "Accepted" + _AUTH_LOG, *("Accepted publickey" + e for e in _KEY_EXAMPLES))(
    _auth_log(Kind.AUTH_SUCCESS)
)
# AuthenticationMethods: one method of several passed. Not a login yet, not a failure.
rule("Partial", "Partial" + _AUTH_LOG, *("Partial publickey" + e for e in _KEY_EXAMPLES))(
    _auth_log(Kind.IGNORED)
)

simple(
    "Invalid",
    r"Invalid user (?P<user>.*) from " + A + " port " + P + "$",
    Kind.INVALID_USER,
    examples=("Invalid user {u} from {a} port {p}",),
)
simple(
    "Invalid",
    r"Invalid user (?P<user>.*) from " + A + "$",
    Kind.INVALID_USER,
    examples=("Invalid user {u} from {a}",),
)
# Old sshd's restatement of "Invalid user X from A" (same connection, no address): the
# connection memory deliberately leaves it address-less, so the attempt counts once.
simple(
    "input_userauth_request:",
    r"input_userauth_request: (?:invalid|illegal) user (?P<user>.*)$",
    Kind.INVALID_USER,
    examples=(
        "input_userauth_request: invalid user {u} [preauth]",
        "input_userauth_request: illegal user {u}",
    ),
)
# OpenSSH <= 3.8 said "illegal".
simple(
    "Illegal",
    r"Illegal user (?P<user>.*) from " + A + "(?: port " + P + ")?$",
    Kind.INVALID_USER,
    examples=("Illegal user {u} from {a}",),
)
simple(
    "User",
    # Only the reasons allowed_user() logs with the host: a user name with "from A" in it
    # followed by an address-less reason ("account is locked") must not read as one of these.
    r"User (?P<user>.*) from " + A + r" not allowed because (?P<reason>"
    r"not listed in AllowUsers|listed in DenyUsers|not in any group|"
    r"none of user's groups are listed in AllowGroups|a group is listed in DenyGroups)$",
    Kind.NOT_ALLOWED,
    examples=(
        "User {u} from {a} not allowed because not listed in AllowUsers",
        "User {u} from {a} not allowed because a group is listed in DenyGroups",
        "User {u} from {a} not allowed because none of user's groups are listed in AllowGroups",
    ),
)
simple(
    "User",
    r"User (?P<user>.*) not allowed because (?P<reason>account is locked|"
    r"shell \S+ does not exist|shell \S+ is not executable|\S+ exists)$",
    Kind.NOT_ALLOWED,
    examples=(
        "User {u} not allowed because account is locked",
        "User {u} not allowed because /etc/nologin exists",
    ),
)
simple(
    "ROOT",
    r"ROOT LOGIN REFUSED FROM " + A + r"(?: port " + P + ")?$",
    Kind.NOT_ALLOWED,
    user="root",
    detail={"reason": "PermitRootLogin"},
    examples=("ROOT LOGIN REFUSED FROM {a} port {p}", "ROOT LOGIN REFUSED FROM {a}"),
)
# monitor.c, OpenSSH 10.x RefuseConnection (also through PerSourcePenalties' "connection
# prohibited by RefuseConnection").
simple(
    "administratively",
    r"administratively prohibited connection for (?P<inv>invalid user )?(?P<user>.*) from "
    + A
    + " port "
    + P
    + "$",
    Kind.NOT_ALLOWED,
    detail={"reason": "RefuseConnection"},
    examples=(
        "administratively prohibited connection for {u} from {a} port {p}",
        "administratively prohibited connection for invalid user {u} from {a} port {p}",
    ),
)
# tcp wrappers (libwrap's refuse(), under sshd's identity): "NAME (ADDR)" or the bare address.
simple(
    "refused",
    r"refused connect from (?P<name>\S+) \((?P<addr>[^()\s]+)\)$",
    Kind.NOT_ALLOWED,
    detail={"reason": "tcp_wrappers"},
    examples=("refused connect from host.example.net ({a})", "refused connect from {a} ({a})"),
)
simple(
    "refused",
    r"refused connect from " + A + "$",
    Kind.NOT_ALLOWED,
    detail={"reason": "tcp_wrappers"},
    examples=("refused connect from {a}",),
)

# max auth
simple(
    "error:",
    r"error: maximum authentication attempts exceeded for (?P<inv>invalid user )?"
    r"(?P<user>.*) from " + A + " port " + P + " ssh2$",
    Kind.MAX_AUTH_EXCEEDED,
    examples=(
        "error: maximum authentication attempts exceeded for {u} from {a} port {p} ssh2"
        " [preauth]",
    ),
)
simple(
    "maximum",
    r"maximum authentication attempts exceeded for (?P<inv>invalid user )?"
    r"(?P<user>.*) from " + A + " port " + P + " ssh2$",
    Kind.MAX_AUTH_EXCEEDED,
    examples=("maximum authentication attempts exceeded for invalid user {u} from {a} port {p}"
              " ssh2",),
)  # fmt: skip
# packet.c ssh_packet_disconnect(): "Disconnecting <preamble>A port P: <reason>".
simple(
    "Disconnecting",
    r"Disconnecting " + PRE + A + " port " + P + r": Too many authentication failures$",
    Kind.MAX_AUTH_EXCEEDED,
    examples=(
        "Disconnecting invalid user {u} {a} port {p}: Too many authentication failures"
        " [preauth]",
        "Disconnecting authenticating user {u} {a} port {p}: Too many authentication failures",
    ),
)
# The configuration leaves the user no usable method (AuthenticationMethods, PAM).
simple(
    "Disconnecting",
    r"Disconnecting " + PRE + A + " port " + P + r": (?P<reason>no authentication methods "
    r"enabled)$",
    Kind.NOT_ALLOWED,
    examples=(
        "Disconnecting authenticating user {u} {a} port {p}: no authentication methods enabled"
        " [preauth]",
    ),
)
# Any other reason: strict KEX violations, a second KEXINIT, a change of user name or
# service, a bad service request (the reason may quote the client's user and service).
# After authentication ("user X") it ends an authenticated connection.
simple(
    "Disconnecting",
    r"Disconnecting " + PRE + A + " port " + P + r": (?P<reason>.*)$",
    Kind.PROTOCOL_ERROR,
    post=Kind.DISCONNECT,
    two_sided=True,
    examples=(
        "Disconnecting invalid user {u} {a} port {p}: Change of username or service not"
        " allowed: ({u},ssh-connection) -> ({x},ssh-connection) [preauth]",
        "Disconnecting {a} port {p}: strict KEX violation: unexpected packet type 2 (seqnr 1)",
        "Disconnecting authenticating user {u} {a} port {p}: bad service request {x} [preauth]",
        "Disconnecting user {u} {a} port {p}: Protocol error: you already have a pty.",
    ),
)
# Older sshd: the address is on another line of the connection (connections.py).
simple(
    "Disconnecting:",
    # AUTH_FAIL_MSG "Too many authentication failures for %.100s": the name as sent.
    r"Disconnecting: Too many authentication failures(?: for (?P<user>.*))?$",
    Kind.MAX_AUTH_EXCEEDED,
    examples=(
        "Disconnecting: Too many authentication failures [preauth]",
        "Disconnecting: Too many authentication failures for {u} [preauth]",
    ),
)
simple(
    "Disconnecting:",
    r"Disconnecting: (?P<reason>.*)$",
    Kind.PROTOCOL_ERROR,
    examples=("Disconnecting: Change of username or service not allowed: ({u},x) -> ({x},y)",),
)

# Connections ending. packet.c sshpkt_fatal(): "Connection closed|reset by <preamble>A port
# P"; before authentication (a preamble naming an authenticating or invalid user, or none)
# it is a pre-auth disconnect, after it ("user X") a disconnect. Without a preamble and
# without [preauth] (serverloop.c after login, or the banner exchange of sshd <= 9.7) the
# connection memory decides by whether this address and port logged in.
simple(
    "Connection",
    r"Connection (?P<what>closed|reset) by " + PRE + A + " port " + P + "$",
    Kind.PREAUTH_DISCONNECT,
    post=Kind.DISCONNECT,
    examples=(
        "Connection closed by {a} port {p}",
        "Connection closed by {a} port {p} [preauth]",
        "Connection closed by invalid user {u} {a} port {p} [preauth]",
        "Connection reset by authenticating user {u} {a} port {p} [preauth]",
        "Connection closed by user {u} {a} port {p}",
    ),
)
simple(
    "Connection",
    r"Connection (?P<what>closed|reset) by " + A + "$",
    Kind.PREAUTH_DISCONNECT,
    examples=("Connection closed by {a} [preauth]",),
)
simple(
    "Connection",
    r"Connection from " + PRE + A + " port " + P + " timed out$",
    Kind.PREAUTH_DISCONNECT,
    post=Kind.DISCONNECT,
    detail={"what": "timed out"},
    examples=(
        "Connection from {a} port {p} timed out [preauth]",
        "Connection from user {u} {a} port {p} timed out",
    ),
)
simple(
    "Disconnected",
    r"Disconnected from (?P<pre>authenticating |invalid )user "
    r"(?P<user>.*) " + A + " port " + P + "$",
    Kind.PREAUTH_DISCONNECT,
    examples=(
        "Disconnected from invalid user {u} {a} port {p} [preauth]",
        "Disconnected from authenticating user {u} {a} port {p} [preauth]",
    ),
)
simple(
    "Timeout",
    r"Timeout before authentication for " + A + "(?: port " + P + ")?$",
    Kind.PREAUTH_DISCONNECT,
    detail={"reason": "timeout"},
    examples=("Timeout before authentication for {a} port {p}",),
)
simple(
    "Did",
    r"Did not receive identification string from " + A + "(?: port " + P + ")?$",
    Kind.PREAUTH_DISCONNECT,
    detail={"reason": "no identification"},
    examples=(
        "Did not receive identification string from {a} port {p}",
        "Did not receive identification string from {a}",
    ),
)

# After login (serverloop.c, in the user's own sshd process).
simple(
    "Timeout,",
    r"Timeout, client not responding(?: from " + PRE + A + " port " + P + r")?\.?$",
    Kind.DISCONNECT,
    detail={"reason": "client not responding"},
    examples=(
        "Timeout, client not responding from user {u} {a} port {p}",
        "Timeout, client not responding.",
    ),
)
simple(
    "terminating",
    r"terminating inactive connection from " + PRE + A + " port " + P + "$",
    Kind.DISCONNECT,
    detail={"reason": "inactive"},
    examples=("terminating inactive connection from user {u} {a} port {p}",),
)
simple(
    "Read",
    r"Read error from remote host " + A + " port " + P + r": (?P<reason>.*)$",
    Kind.DISCONNECT,
    examples=("Read error from remote host {a} port {p}: Connection reset by peer",),
)

# protocol errors
simple(
    "kex_exchange_identification:",
    r"kex_exchange_identification: (?P<reason>.*?)"
    r"(?: from " + A + " port " + P + ")?$",
    Kind.PROTOCOL_ERROR,
    examples=(
        "kex_exchange_identification: Connection closed by remote host",
        "kex_exchange_identification: banner line contains invalid characters",
    ),
)
simple(
    "Unable",
    r"Unable to negotiate with " + PRE + A + " port " + P + r": no matching "
    r"(?P<what>.+?) found\.?(?: Their offer: .*)?$",
    Kind.PROTOCOL_ERROR,
    two_sided=True,
    examples=(
        "Unable to negotiate with {a} port {p}: no matching key exchange method found. Their"
        " offer: {x} [preauth]",
        "Unable to negotiate with invalid user {u} {a} port {p}: no matching cipher found."
        " Their offer: {x} [preauth]",
    ),
)
# The general sshpkt_fatal(): "<what>: Connection from <preamble>A port P: <error>" (through
# fatal() before 7.4). <what> is sshd's own: a function name, optionally with one of the verbs
# packet.c's callers add ("parse packet", "send reply", ...), "banner exchange", "send DEBUG"
# or "read" -- never free text, so that no other message's attacker text can pose as one.
GENERAL_TAG = (
    r"(?P<what>banner exchange|send DEBUG|read|(?!(?:error|fatal|debug[123]?|verbose)\b)"
    r"[A-Za-z_][A-Za-z0-9_]*(?:: (?:parse|send|exit|start|append|ssh_packet_write_poll)"
    r"(?: [A-Za-z@._-]+)*)?)"
)
GENERAL = GENERAL_TAG + r": Connection from " + PRE + A + " port " + P + r": (?P<reason>.*)$"
# With a system error for a reason (strerror) the client just went away: no misbehaviour.
_GONE = frozenset(
    {
        "Broken pipe",
        "Connection reset by peer",
        "Connection timed out",
        "No route to host",
        "Network is unreachable",
        "Host is down",
        "Software caused connection abort",
    }
)


def _general(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    """sshpkt_fatal(): a protocol error before authentication, a pre-auth disconnect when the
    peer went away, the end of the connection after authentication (preamble "user X")."""
    gd = m.groupdict()
    reason = gd["reason"]
    d["reason"] = reason
    d["what"] = gd["what"]
    if gd["pre"] == "invalid ":
        d["invalid_user"] = True
    if gd["user"] is not None and gd["pre"] is None:
        kind = Kind.DISCONNECT
    elif reason in _GONE:
        kind = Kind.PREAUTH_DISCONNECT
    else:
        kind = Kind.PROTOCOL_ERROR
    ev = _ev_gd(pre, kind, gd, None, None, None, d)
    # Without a user name before it the address follows sshd's fixed head: one reading.
    if ev is not None and gd["user"] is not None and _ambiguous(m):
        return _strip_ip(ev)
    return ev


rule(
    "banner",
    GENERAL,
    "banner exchange: Connection from {a} port {p}: invalid format",
    "banner exchange: Connection from {a} port {p}: Broken pipe [preauth]",
)(_general)
rule(
    "ssh_dispatch_run_fatal:",
    GENERAL,
    "ssh_dispatch_run_fatal: Connection from {a} port {p}: message authentication code"
    " incorrect [preauth]",
    "ssh_dispatch_run_fatal: Connection from invalid user {u} {a} port {p}: Connection"
    " corrupted [preauth]",
    "ssh_dispatch_run_fatal: Connection from user {u} {a} port {p}: Broken pipe",
)(_general)
rule(
    "fatal:",
    "fatal: " + GENERAL,
    "fatal: ssh_dispatch_run_fatal: Connection from {a} port {p}: incomplete message"
    " [preauth]",
)(_general)
simple(
    "Bad",
    r"Bad protocol version identification '.*' from " + A + "(?: port " + P + ")?$",
    Kind.PROTOCOL_ERROR,
    detail={"reason": "bad protocol version"},
    examples=(
        "Bad protocol version identification '{u}' from {a} port {p}",
        "Bad protocol version identification '{u}' from {a}",
    ),
)
# kex.c, current wording: no address (the connection memory may know it).
simple(
    "error:",
    r"error: Bad remote protocol version identification: '(?P<version>.*)'$",
    Kind.PROTOCOL_ERROR,
    detail={"reason": "bad protocol version"},
    examples=("error: Bad remote protocol version identification: '{x}'",),
)
simple(
    "Bad",
    r"Bad remote protocol version identification: '(?P<version>.*)'$",
    Kind.PROTOCOL_ERROR,
    detail={"reason": "bad protocol version"},
    examples=("Bad remote protocol version identification: '{x}'",),
)
simple(
    "Protocol",
    r"Protocol major versions differ for " + A + "(?: port " + P + r")?: .*$",
    Kind.PROTOCOL_ERROR,
    examples=("Protocol major versions differ for {a} port {p}: SSH-2.0-OpenSSH vs. {x}",),
)
# kex.c: old SSH probes and scanners (the version string is the client's).
simple(
    "probed",
    r"(?P<what>probed) from " + A + "(?: port " + P + r")? with .*$",
    Kind.PROTOCOL_ERROR,
    examples=(
        "probed from {a} port {p} with {x}.  Don't panic.",
        "probed from {a} with {x}.  Don't panic.",
    ),
)
simple(
    "scanned",
    r"(?P<what>scanned) from " + A + "(?: port " + P + r")? with .*$",
    Kind.PROTOCOL_ERROR,
    examples=("scanned from {a} port {p} with {x}.  Don't panic.",),
)
simple(
    "Finished",
    r"Finished discarding for " + A + " port " + P + "$",
    Kind.PROTOCOL_ERROR,
    detail={"reason": "discarded a corrupt packet"},
    examples=("Finished discarding for {a} port {p} [preauth]",),
)
simple(
    "fatal:",
    r"fatal: Timeout before authentication for " + A + "(?: port " + P + ")?$",
    Kind.PREAUTH_DISCONNECT,
    detail={"reason": "timeout"},
    examples=("fatal: Timeout before authentication for {a} port {p}",),
)
simple(
    "fatal:",
    r"fatal: Connection from " + A + " port " + P + r" with IP opts: .*$",
    Kind.PROTOCOL_ERROR,
    detail={"reason": "IP options"},
    examples=("fatal: Connection from {a} port {p} with IP opts: {x}",),
)
simple(
    "fatal:",
    r"fatal: (?P<reason>.*?) from " + A + " port " + P + "$",
    Kind.PROTOCOL_ERROR,
    examples=("fatal: Username too long from {a} port {p}",),
)
simple(
    "error:",
    r"error: kex_exchange_identification: (?P<reason>.*)$",
    Kind.PROTOCOL_ERROR,
    examples=(
        "error: kex_exchange_identification: read: Connection reset by peer",
        'error: kex_exchange_identification: client sent invalid protocol identifier "{x}"',
    ),
)
simple(
    "error:",
    r"error: Protocol major versions differ: .*$",
    Kind.PROTOCOL_ERROR,
    examples=("error: Protocol major versions differ: 2 vs. 1",),
)
# Address-less fatal errors of older sshd's pre-authentication child (the connection memory
# gives them the address an earlier line of the connection stated).
simple(
    "fatal:",
    r"fatal: (?P<reason>(?:Read from socket failed|Write failed): .*)$",
    Kind.PREAUTH_DISCONNECT,
    examples=(
        "fatal: Read from socket failed: Connection reset by peer [preauth]",
        "fatal: Write failed: Broken pipe [preauth]",
    ),
)


simple(
    "fatal:",
    r"fatal: Access denied for user (?P<user>.*) by PAM account configuration$",
    Kind.NOT_ALLOWED,
    detail={"reason": "PAM account configuration"},
    examples=("fatal: Access denied for user {u} by PAM account configuration [preauth]",),
)
# SIA (Tru64): auth-sia.c
simple(
    "error:",
    r"error: Couldn't authenticate (?P<user>.*) from " + A + "$",
    Kind.AUTH_FAILURE,
    method="sia",
    examples=("error: Couldn't authenticate {u} from {a}",),
)
simple(
    "fatal:",
    r"fatal: Couldn't (?:establish|launch) session for (?P<user>.*) from " + A + "$",
    Kind.IGNORED,
    detail={"postauth": True},
    examples=("fatal: Couldn't establish session for {u} from {a}",),
)


@rule(
    "fatal:",
    r"fatal: (?P<reason>.*)$",
    "fatal: Unable to negotiate a key exchange method [preauth]",
    "fatal: no matching mac found: client {x} server hmac-sha2-256 [preauth]",
)
def _fatal(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    # Before authentication a fatal error is the client's doing (negotiation, packet
    # format); anything else is sshd's own trouble and stays unrecognized, to be seen.
    if not d.get("preauth"):
        return None
    d["reason"] = m.group("reason")
    return _ev(pre, Kind.PROTOCOL_ERROR, None, detail=d)


# Address-less protocol violations (kex.c, dispatch.c, packet.c): the connection memory gives
# them the connection's address.
_first: str | None  # None: a message with no fixed first word (a fallback)
for _first, _pat, _ex in (
    ("error:", r"error: kex_protocol_error: type \d+ seq \d+$",
     "error: kex_protocol_error: type 90 seq 3 [preauth]"),
    ("error:", r"error: too many SSH2_MSG_EXT_INFO messages sent by peer$",
     "error: too many SSH2_MSG_EXT_INFO messages sent by peer [preauth]"),
    ("error:", r"error: SSH2_MSG_EXT_INFO with too many entries.*$",
     "error: SSH2_MSG_EXT_INFO with too many entries, expected <=1024, received 4096"),
    ("error:", r"error: RekeyLimit exceeded before authentication completed$",
     "error: RekeyLimit exceeded before authentication completed [preauth]"),
    ("error:", r"error: non-transport message \d+ received from peer during key exchange$",
     "error: non-transport message 50 received from peer during key exchange [preauth]"),
    ("dispatch_protocol_error:", r"dispatch_protocol_error: type \d+ seq \d+$",
     "dispatch_protocol_error: type 100 seq 4 [preauth]"),
    ("Bad", r"Bad packet length \d+\.?$", "Bad packet length 1349676916. [preauth]"),
    ("padding", r"padding error: need \d+ block \d+ mod \d+$",
     "padding error: need 45 block 8 mod 5 [preauth]"),
    ("Corrupted", r"Corrupted MAC on input\.?$", "Corrupted MAC on input. [preauth]"),
):  # fmt: skip
    simple(_first, _pat, Kind.PROTOCOL_ERROR, examples=(_ex,))
# A revoked key (perhaps a stolen one) was presented; auth.c, no address.
simple(
    "error:",
    r"error: Authentication key (?P<ktype>\S+) (?P<fp>\S+) revoked by file .*$",
    Kind.NOT_ALLOWED,
    detail={"reason": "revoked key"},
    examples=("error: Authentication key RSA SHA256:k revoked by file /etc/ssh/revoked_keys",),
)
# hostbased: the client host's key is revoked (host: the address with UseDNS no).
simple(
    "error:",
    r"error: WARNING: revoked key for " + A + " attempted authentication$",
    Kind.NOT_ALLOWED,
    detail={"reason": "revoked host key"},
    examples=("error: WARNING: revoked key for {a} attempted authentication",),
)


# penalties and refusals by the listener (OpenSSH 9.8+). Its lines name other processes'
# connections: "listener" tells the connection memory not to learn from them.
@rule(
    "drop",
    r"drop connection #\d+ from \[(?P<addr>[^\]]+)\]:(?P<port>\d+) on "
    r"\[(?P<laddr>[^\]]+)\]:(?P<lport>\d+) (?P<reason>.*)$",
    "drop connection #3 from [{a}]:{p} on [192.0.2.1]:22 penalty: failed authentication",
    "drop connection #3 from [{a}]:{p} on [192.0.2.1]:22 penalty: exceeded LoginGraceTime",
    "drop connection #10 from [{a}]:{p} on [192.0.2.1]:22 past Maxstartups",
    "drop connection #10 from [{a}]:{p} on [192.0.2.1]:22 Maxstartups",
    "drop connection #0 from [{a}]:{p} on [192.0.2.1]:22 too many penalised addresses",
)
def _drop(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    reason = m.group("reason")
    d["local"] = f"{m.group('laddr')}:{m.group('lport')}"
    d["listener"] = True
    if reason.startswith("penalty: "):
        d["reason"] = reason[9:]
        return _ev(pre, Kind.PENALTY, m, detail=d)
    # MaxStartups or a full penalty table: sshd refused this connection because of *other*
    # connections' load. A legitimate user dropped by someone else's flood is no attacker.
    d["reason"] = reason
    return _ev(pre, Kind.IGNORED, m, detail=d)


@rule(
    "srclimit_penalise:",
    r"srclimit_penalise: (?P<addr>[0-9A-Fa-f:.]+)/(?P<bits>\d+): "
    r"(?:activating|extending) (?:ipv4|ipv6) penalty of (?P<secs>\d+(?:\.\d+)?) "
    r"seconds? for (?P<reason>.*)$",
    "srclimit_penalise: {a}/32: activating ipv4 penalty of 30.000 seconds for penalty: failed"
    " authentication",
)
@rule(
    "srclimit_penalise:",
    r"srclimit_penalise: (?:ipv4|ipv6): new (?P<addr>[0-9A-Fa-f:.]+)/(?P<bits>\d+) "
    r"(?P<state>active|deferred) penalty of (?P<secs>\d+(?:\.\d+)?) seconds? for (?P<reason>.*)$",
    "srclimit_penalise: ipv4: new {a}/32 active penalty of 90.000 seconds for penalty: caused"
    " crash",
    "srclimit_penalise: ipv6: new {a}/64 deferred penalty of 5.000 seconds for penalty:"
    " connections without attempting authentication",
)
def _penalise(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    # sshd names the client address with the prefix length it penalises; the penalty
    # covers the whole network, so that is the address we report.
    ip0, _ = addr(m.group("addr"))
    if ip0 is None:
        return None
    # sshd unmaps IPv4-mapped addresses before it counts; should one appear, judge it as the
    # IPv4 address it is (a /32 of ::ffff:a.b.c.d would otherwise be ::/32).
    net = ipaddress.ip_network((ip0, min(int(m.group("bits")), ip0.max_prefixlen)), strict=False)
    d["reason"] = m.group("reason").removeprefix("penalty: ")
    d["prefix"] = f"{m.group('addr')}/{m.group('bits')}"
    d["listener"] = True
    secs = m.group("secs")
    d["seconds"] = float(secs) if "." in secs else int(secs)
    # A deferred penalty is bookkeeping below PerSourcePenalties' threshold: nothing blocked.
    deferred = m.groupdict().get("state") == "deferred"
    ev = _ev(pre, Kind.IGNORED if deferred else Kind.PENALTY, None, detail=d)
    if ev is not None:
        ip = net.network_address
        ev.ip = ip.ipv4_mapped if ip.version == 6 and ip.ipv4_mapped else ip
    return ev


# sshd.c child_reap(), the listener on its per-connection processes (9.8+). A crash of the
# process serving a connection is a sign of an exploit attempt.
@rule(
    "Timeout",
    r"Timeout before authentication for connection from "
    + A
    + r"(?: to \S+)?, pid = (?P<child>\d+)(?: \([^()]*\))?$",
    "Timeout before authentication for connection from {a} to 192.0.2.1, pid = 4321",
    "Timeout before authentication for connection from {a} to 192.0.2.1, pid = 4321 (early)",
)
def _grace(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    d["reason"] = "timeout"
    d["child_pid"] = int(m.group("child"))
    d["listener"] = True
    return _ev(pre, Kind.PREAUTH_DISCONNECT, m, detail=d)


@rule(
    "session",
    r"session process (?P<child>\d+) for connection from "
    + A
    + r"(?: to \S+)? (?P<reason>killed by signal \d+|terminated abnormally, status=0x[0-9a-fA-F]+)"
    r"(?: \([^()]*\))?$",
    "session process 4321 for connection from {a} to 192.0.2.1 killed by signal 11",
    "session process 4321 for connection from {a} to 192.0.2.1 terminated abnormally,"
    " status=0x86 (early)",
)
@rule(
    "error:",
    r"error: session process (?P<child>\d+) for connection from "
    + A
    + r"(?: to \S+)? (?P<reason>killed by signal \d+|terminated abnormally, status=0x[0-9a-fA-F]+)"
    r"(?: \([^()]*\))?$",
    "error: session process 4321 for connection from {a} to 192.0.2.1 killed by signal 11",
    "error: session process 4321 for connection from {a} to 192.0.2.1 terminated abnormally,"
    " status=0x86",
)
@rule(
    "Session",
    r"Session process (?P<child>\d+) unpriv child (?P<reason>crash) for connection from "
    + A
    + r"(?: to \S+)?(?: \([^()]*\))?$",
    "Session process 4321 unpriv child crash for connection from {a} to 192.0.2.1",
)
def _child_crash(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    d["reason"] = m.group("reason")
    d["child_pid"] = int(m.group("child"))
    d["listener"] = True
    return _ev(pre, Kind.PROTOCOL_ERROR, m, detail=d)


@rule(
    "Postponed",
    r"Postponed (?P<method>\S+) for (?P<inv>invalid user )?(?P<user>.*) from " + A + " port " + P
    + " ssh2.*$",
    "Postponed publickey for {u} from {a} port {p} ssh2 [preauth]",
    "Postponed keyboard-interactive for invalid user {u} from {a} port {p} ssh2 [preauth]",
)  # fmt: skip
def _postponed(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    if m.group("inv"):
        d["invalid_user"] = True
    return _ev(pre, Kind.IGNORED, m, method=m.group("method"), detail=d)


@rule(
    "reverse",
    r"reverse mapping checking getaddrinfo for (?P<name>.*) "
    r"\[(?P<addr>[^\]]+)\] failed.*$",
    "reverse mapping checking getaddrinfo for {u} [{a}] failed.",
)
def _reverse(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    d["name"] = m.group("name")
    return _ev(pre, Kind.IGNORED, m, detail=d)


# successes' companions
simple(
    "Disconnected",
    r"Disconnected from user (?P<user>.*) " + A + " port " + P + "$",
    Kind.DISCONNECT,
    examples=("Disconnected from user {u} {a} port {p}",),
)


@rule(
    "Disconnected",
    r"Disconnected from " + A + " port " + P + "$",
    "Disconnected from {a} port {p}",
    "Disconnected from {a} port {p} [preauth]",
)
def _disconnected(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    return _ev(pre, Kind.PREAUTH_DISCONNECT if d.get("preauth") else Kind.DISCONNECT, m, detail=d)


@rule(
    "error:",
    r"error: Received disconnect from "
    + A
    + "(?: port "
    + P
    + r")?: ?(?P<code>\d+): (?P<reason>.*)$",
    "error: Received disconnect from {a} port {p}:3: {x} [preauth]",
)
@rule(
    "Received",
    r"Received disconnect from " + A + "(?: port " + P + r")?: ?(?P<code>\d+): (?P<reason>.*)$",
    "Received disconnect from {a} port {p}:11: {x} [preauth]",
    "Received disconnect from {a}: 3: com.jcraft.jsch.JSchException: Auth fail [preauth]",
    "Received disconnect from {a} port {p}:11: disconnected by user",
)
def _received(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    # Before authentication it is a scanner or a failed client; after it, a normal logout.
    a, p, code, d["reason"] = m.group("addr", "port", "code", "reason")
    d["code"] = int(code)
    kind = _PREAUTH_DISCONNECT if d.get("preauth") else _DISCONNECT
    return _event(pre, kind, a, p, None, None, None, d)


_PREAUTH_DISCONNECT = Kind.PREAUTH_DISCONNECT
_DISCONNECT = Kind.DISCONNECT


# "LOC: Authentication tried for X with correct key but not from a permitted host (host=H,
# ip=A, required=R)." (auth2-pubkeyfile.c; before 8.x without LOC and required=). A key that
# works, used from elsewhere: a stolen key. H is the client's reverse DNS name and R the
# key's from= option, text on both sides of the address: the line must read one way only.
_NOT_PERMITTED = re.compile(r", ip=")


@rule(
    "Authentication",
    r"Authentication tried for (?P<user>.*?) with correct key but not from a permitted host "
    r"\(host=(?P<name>.*), ip=(?P<addr>[^,\s]+)(?:, required=.*)?\)\.$",
    "Authentication tried for alice with correct key but not from a permitted host"
    " (host={x}, ip={a}).",
)
@rule(
    None,
    r"(?P<loc>\S+): Authentication tried for (?P<user>.*?) with correct key but not from a "
    r"permitted host \(host=(?P<name>.*), ip=(?P<addr>[^,\s]+)(?:, required=.*)?\)\.$",
    "/home/alice/.ssh/authorized_keys:3: Authentication tried for alice with correct key but"
    " not from a permitted host (host={x}, ip={a}, required={x}).",
)
def _wrong_host(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    d["reason"] = "key not from a permitted host"
    if m.groupdict().get("loc"):
        d["key_file"] = m.group("loc")
    ev = _ev(pre, Kind.AUTH_FAILURE, m, method="publickey", detail=d)
    if ev is not None and len(_NOT_PERMITTED.findall(m.string)) != 1:
        return _strip_ip(ev)
    return ev


@rule(
    "Authentication",
    r"Authentication tried for (?P<user>.*?) with valid certificate but not from a permitted "
    r"source address \((?P<addr>[^()\s]+)\)\.$",
    "Authentication tried for alice with valid certificate but not from a permitted source"
    " address ({a}).",
)
@rule(
    None,
    r"(?P<loc>\S+): Authentication tried for (?P<user>.*?) with valid certificate but not "
    r"from a permitted source address \((?P<addr>[^()\s]+)\)\.$",
    "/home/alice/.ssh/authorized_keys:1: Authentication tried for alice with valid"
    " certificate but not from a permitted source address ({a}).",
)
def _wrong_source(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    d["reason"] = "certificate not from a permitted source address"
    if m.groupdict().get("loc"):
        d["key_file"] = m.group("loc")
    return _ev(pre, Kind.AUTH_FAILURE, m, method="publickey", detail=d)


# auth2-hostbased.c: the host name the client claims is not what its address resolves to.
# The claim comes before the address and the resolved (PTR) name after it.
@rule(
    "userauth_hostbased",
    r"userauth_hostbased mismatch: client sends (?P<user>.*), but we resolve " + A + r" to .*$",
    "userauth_hostbased mismatch: client sends {u}, but we resolve {a} to {x}",
)
def _hostbased_mismatch(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    gd = m.groupdict()
    d["client_host"] = gd["user"]
    gd["user"] = None
    ev = _ev_gd(pre, Kind.IGNORED, gd, None, None, None, d)
    return _strip_ip(ev) if ev is not None and _ambiguous(m) else ev


# auth2-hostbased.c (VERBOSE): "... from CLIENTUSER@HOST", HOST the address (UseDNS no) or the
# checked name; the client user, sent by the client, may hold an "@" but the host never does.
@rule(
    "Accepted",
    r"Accepted certificate ID \".*\" signed by \S+ CA \S+ from (?P<cuser>.*)@(?P<addr>[^@\s]+)$",
    'Accepted certificate ID "{u}" signed by ED25519 CA SHA256:k from {u}@{a}',
)
@rule(
    "Accepted",
    r"Accepted (?P<ktype>\S+) public key (?P<fp>\S+) from (?P<cuser>.*)@(?P<addr>[^@\s]+)$",
    "Accepted ECDSA public key SHA256:k from {u}@{a}",
)
def _hostbased_key(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    gd = m.groupdict()
    d["client_user"] = gd["cuser"]
    return _ev_gd(pre, Kind.IGNORED, gd, None, "hostbased", gd.get("fp"), d)


# The listener's own dumps and complaints about a child (the child lives on).
simple(
    "child",
    r"child \d+: fd=\d+ pid=\d+ connection from " + A + r"(?: to \S+)?(?: \([^()]*\))?$",
    Kind.IGNORED,
    detail={"listener": True},
    examples=("child 3: fd=14 pid=4242 connection from {a} to 192.0.2.254 (early)",),
)
simple(
    "error:",
    r"error: server_accept_loop: .* for connection from " + A + r"(?: to \S+)? in state \d+$",
    Kind.IGNORED,
    detail={"listener": True},
    examples=(
        "error: server_accept_loop: unexpected message 0x05 child 4242 for connection from {a}"
        " to 192.0.2.254 in state 1",
    ),
)


# The general sshpkt_fatal() for any other <what> (see GENERAL_TAG).
rule(
    None,
    GENERAL,
    "ssh_packet_read_poll2: Connection from {a} port {p}: Connection corrupted [preauth]",
    "server_input_global_request: parse packet: Connection from user {u} {a} port {p}:"
    " incomplete message",
    "send DEBUG: Connection from authenticating user {u} {a} port {p}: Broken pipe [preauth]",
    "session_input_channel_req: send open confirm: Connection from user {u} {a} port {p}:"
    " Broken pipe",
)(_general)

# Written only after authentication, by the user's own sshd process (``postauth``: the
# connection memory never takes such a process for a pre-authentication connection).
for _first, _pat, _ex in (
    (
        "Closing",
        r"Closing connection to " + A + " port " + P + "$",
        "Closing connection to {a} port {p}",
    ),
    (
        "Starting",
        r"Starting session: .* for (?P<user>.*) from " + A + " port " + P + r" id \d+$",
        "Starting session: shell on pts/0 for {u} from {a} port {p} id 0",
    ),
    (
        "Close",
        r"Close session: user (?P<user>.*) from " + A + " port " + P + r" id \d+$",
        "Close session: user {u} from {a} port {p} id 0",
    ),
    (
        "Received",
        r"Received request from " + A + " port " + P + r" to remote forward.*$",
        "Received request from {a} port {p} to remote forward to host {x} port 80, but the"
        " request was denied.",
    ),
    (
        "Received",
        r"Received request from " + A + " port " + P + r" to connect to .*$",
        "Received request from {a} port {p} to connect to host {x} port 3306, but the request"
        " was denied.",
    ),
    # channel_report_open() on SIGINFO (BSD): an operator's dump.
    (
        "Connection:",
        r"Connection: (?:(?:authenticating |invalid )?user .* )?" + A + " port " + P
        + r" \(pid \d+\)$",
        "Connection: user {u} {a} port {p} (pid 4243)",
    ),
    # A configuration refusal after login (ForceCommand internal-sftp): the user is known.
    (
        "error:",
        r"error: Connection from " + PRE + A + " port " + P + r": refusing non-sftp session$",
        "error: Connection from user {u} {a} port {p}: refusing non-sftp session",
    ),
):  # fmt: skip
    simple(_first, _pat, Kind.IGNORED, detail={"postauth": True}, examples=(_ex,))

# recognised, recorded, never scored
for _first, _pat, _ex in (
    ("Server", r"Server listening on .*$", "Server listening on 0.0.0.0 port 22."),
    (
        "Connection",
        r"Connection from " + A + " port " + P + r" on \S+ port \d+.*$",
        "Connection from {a} port {p} on 192.0.2.1 port 22 rdomain \"\"",
    ),
    ("Connection", r"Connection from " + A + " port " + P + "$", "Connection from {a} port {p}"),
    ("Address", r"Address " + A + r" maps to .*$", "Address {a} maps to {x}, but this does not"),
    ("Starting", r"Starting session: .*$", "Starting session: subsystem 'sftp'"),
    ("User", r"User child is on pid \d+$", "User child is on pid 42"),
    ("Received", r"Received signal \d+; terminating\.?$", "Received signal 15; terminating."),
    ("Received", r"Received SIGHUP; restarting\.?$", "Received SIGHUP; restarting."),
    ("Transferred:", r"Transferred: sent \d+, received \d+ bytes.*$",
     "Transferred: sent 3276, received 3416 bytes"),
    ("Changed", r"Changed root directory to .*$", "Changed root directory to \"/srv\""),
    ("Set", r"Set /proc/self/oom_score_adj .*$", "Set /proc/self/oom_score_adj from 0 to -1000"),
    ("Exiting", r"Exiting on signal \d+$", "Exiting on signal 15"),
    ("pam_unix(sshd:account):", r".*$", "pam_unix(sshd:account): account bob has expired"),
    ("pam_systemd(sshd:session):", r".*$", "pam_systemd(sshd:session): Failed to connect"),
    ("pam_env(sshd:session):", r".*$", "pam_env(sshd:session): deprecated reading"),
    ("Accepted", r"Accepted key .*$", "Accepted key ED25519 SHA256:k found at /x:1"),
    ("Authorized", r"Authorized to .*$", "Authorized to alice, krb5 principal alice@X"),
    (
        "Nasty",
        r"Nasty PTR record .* is set up for " + A + ", ignoring$",
        "Nasty PTR record \"{u}\" is set up for {a}, ignoring",
    ),
    ("debug1:", r".*$", "debug1: x"),
    ("debug2:", r".*$", "debug2: x"),
    ("debug3:", r".*$", "debug3: x"),
    ("rexec", r".*$", "rexec line 1: x"),
    ("Failed", r"Failed to .*$", "Failed to bind"),
    # A FIDO key whose user did not touch it: sshd logs "Failed publickey" for it too.
    (
        "error:",
        r"error: public key \S+(?: \S+)? signature for (?:invalid user )?(?P<user>.*) from " + A
        + " port " + P + r" rejected: .*$",
        "error: public key ED25519-SK SHA256:k signature for {u} from {a} port {p} rejected:"
        " user presence (authenticator touch) requirement not met ",
    ),
    (
        "public",
        r"public key \S+(?: \S+)? signature for (?:invalid user )?(?P<user>.*) from " + A
        + " port " + P + r" rejected: .*$",
        "public key ECDSA-SK SHA256:k signature for {u} from {a} port {p} rejected: user"
        " verification requirement not met ",
    ),
    # direct-tcpip's originator is what the client claims, not the client's address.
    ("refused", r"refused (?:local|streamlocal) port forward: .*$",
     "refused local port forward: originator {x} port 1, target {x} port 80"),
    (
        "srclimit_penalise:",
        r"srclimit_penalise: ipv[46] penalty table full, cannot penalise "
        r"(?P<addr>[0-9A-Fa-f:.]+)/\d+ for .*$",
        "srclimit_penalise: ipv4 penalty table full, cannot penalise {a}/32 for penalty: x",
    ),
    # The penalty table, listed on SIGINFO (addresses masked to the penalised network).
    ("client", r"client (?P<addr>[0-9A-Fa-f:.]+)/\d+ penalty: .*$",
     "client {a}/32 penalty: failed authentication (12.500 secs left)"),
    (None, r"\d+ active ipv[46] penalties$", "3 active ipv4 penalties"),
    ("error:", r"error: (?:beginning|in) MaxStartups throttling.*$",
     "error: beginning MaxStartups throttling"),
    ("exited", r"exited MaxStartups throttling .*$",
     "exited MaxStartups throttling after 00:01:02, 17 connections dropped"),
    ("Maxstartups", r"Maxstartups logging rate-limited: .*$",
     "Maxstartups logging rate-limited: additional 5 connections dropped"),
    ("PerSourcePenalties", r"PerSourcePenalties logging rate-limited: .*$",
     "PerSourcePenalties logging rate-limited: additional 5 connections dropped"),
):  # fmt: skip
    simple(_first, _pat, Kind.IGNORED, examples=(_ex,))


# ---------------------------------------------------------------------------- PAM (in sshd)

_KV = re.compile(r"(\w+)=(\S*)")


def _pam_fields(tail: str) -> dict[str, str]:
    # "logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.5  user=root": user is last and
    # may itself contain '=' or spaces; take it from the end.
    u = tail.rfind(" user=")
    # The first of a repeated key counts: reversed, it is the last one dict() keeps.
    out = dict(reversed(_KV.findall(tail if u < 0 else tail[:u])))
    if u >= 0:
        out["user"] = tail[u + 6 :]
    return out


@rule(
    "pam_unix(sshd:auth):",
    r"pam_unix\(sshd:auth\): authentication failure; (?P<kv>.*)$",
    "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= "
    "rhost={a}  user={u}",
)
def _pam_auth_fail(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event:
    f = _pam_fields(m.group("kv"))
    return _pam_event(pre, f, d, 1)


@rule(
    "PAM",
    r"PAM (?P<n>[0-9]{1,9}) more authentication failures?; (?P<kv>.*)$",
    "PAM 2 more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost={a}  user={u}",
)
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
        _AUTH_FAILURE,
        f.get("user") or None,
        ip,
        None,
        "pam",
        None,
        n,
        _sess(pre),
        d,
    )


_AUTH_FAILURE = Kind.AUTH_FAILURE  # a module global: an enum attribute costs 15 times more


def _sess(pre: Prefix) -> str | None:
    return str(pre.pid) if pre.pid is not None else None


# auth-pam.c: "PAM: <pam_strerror text> for [illegal user ]X from A" (an "error: " first in
# most versions). The text is PAM's and varies by PAM implementation and casing
# ("Authentication failure", "authentication error", "User not known to the underlying
# authentication module", "Authentication token is no longer valid; new one required"...).
# PAM_MAXTRIES (Linux-PAM's text has a " for " of its own) is MaxAuthTries' PAM twin.
_PAM_MAXTRIES = (
    r"(?i:Have exhausted maximum number of retries for service|"
    r"Maximum number of tries exceeded|maximum number of tries exceeded)"
)
_PAM_ERROR = (
    r"PAM: (?P<reason>" + _PAM_MAXTRIES + r"|.+?) for (?P<inv>illegal user )?(?P<user>.*) from "
    + A + "$"
)  # fmt: skip


def _pam_error(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    gd = m.groupdict()
    d["reason"] = reason = gd["reason"]
    if gd["inv"]:
        d["invalid_user"] = True
    kind = Kind.MAX_AUTH_EXCEEDED if _MAXTRIES.fullmatch(reason) else Kind.AUTH_FAILURE
    return _ev_gd(pre, kind, gd, None, "pam", None, d)


_MAXTRIES = re.compile(_PAM_MAXTRIES)
rule(
    "error:",
    "error: " + _PAM_ERROR,
    "error: PAM: Authentication failure for {u} from {a}",
    "error: PAM: authentication error for illegal user {u} from {a}",
    "error: PAM: Have exhausted maximum number of retries for service for {u} from {a}",
)(_pam_error)
rule(
    "PAM:",
    _PAM_ERROR,
    "PAM: User not known to the underlying authentication module for illegal user {u} from {a}",
)(_pam_error)


@rule(
    "pam_unix(sshd:session):",
    r"pam_unix\(sshd:session\): session opened for user "
    r"(?P<user>.*?)(?:\(uid=(?P<uid>\d+)\))? by (?P<by>.*)$",
    "pam_unix(sshd:session): session opened for user alice(uid=1000) by (uid=0)",
)
def _sess_open(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    if m.group("uid"):
        d["uid"] = int(m.group("uid"))
    return _ev(pre, Kind.SESSION_OPEN, None, user=m.group("user"), detail=d)


@rule(
    "pam_unix(sshd:session):",
    r"pam_unix\(sshd:session\): session closed for user "
    r"(?P<user>.*)$",
    "pam_unix(sshd:session): session closed for user alice",
)
def _sess_close(pre: Prefix, m: re.Match[str], d: dict[str, Any]) -> Event | None:
    return _ev(pre, Kind.SESSION_CLOSE, None, user=m.group("user"), detail=d)


# Tried after the rules above for the same first word: PAM's chatter that scores nothing.
simple(
    "PAM",
    r"PAM service\(.*\) ignoring max retries.*$",
    Kind.IGNORED,
    examples=("PAM service(sshd) ignoring max retries; 6 > 3",),
)
simple(
    "pam_unix(sshd:auth):",
    r"pam_unix\(sshd:auth\): .*$",
    Kind.IGNORED,
    examples=("pam_unix(sshd:auth): check pass; user unknown",),
)


# ---------------------------------------------------------------------------- entry point


def _detail(preauth: bool, postauth: bool) -> dict[str, Any]:
    if preauth:
        return {"preauth": True}
    return {"postauth": True} if postauth else {}


def parse(pre: Prefix, raw: str = "") -> Event:
    """One sshd message → an Event (``unrecognized`` when nothing in the catalogue matches)."""
    msg = pre.message
    preauth = postauth = False
    if msg.endswith(" [preauth]"):
        msg = msg[:-10]
        preauth = True
    elif msg.endswith("]"):
        if msg.endswith(" [net]"):
            msg = msg[:-6]
        elif msg.endswith(" [postauth]"):  # 10.x's monitor relaying its post-auth child
            msg = msg[:-11]
            postauth = True
    sp = msg.find(" ")
    first = msg[:sp] if sp >= 0 else msg
    if first in _LEVELS:
        sp2 = msg.find(" ", sp + 1)
        entries = CATALOGUE.get(msg[:sp2] if sp2 >= 0 else msg)
        if entries is not None:
            for pat, build in entries:
                m = pat.match(msg)
                if m is not None:
                    ev = build(pre, m, _detail(preauth, postauth))
                    if ev is not None:
                        return ev
    entries = CATALOGUE.get(first)
    if entries is not None:
        for pat, build in entries:
            m = pat.match(msg)
            if m is not None:
                # _detail(), inline: the common line.
                ev = build(
                    pre, m, {"preauth": True} if preauth else {"postauth": True} if postauth else {}
                )
                if ev is not None:
                    return ev
    if msg.startswith("pam_"):
        # Any other PAM module speaking inside sshd (pam_limits, pam_systemd, pam_motd...):
        # recorded, never scored.
        return Event(
            pre.ts, pre.host, pre.program, pre.pid, Kind.IGNORED, session=_sess(pre), raw=raw
        )
    for pat, build in FALLBACK:
        m = pat.match(msg)
        if m is not None:
            ev = build(pre, m, _detail(preauth, postauth))
            if ev is not None:
                return ev
    return Event(
        pre.ts,
        pre.host,
        pre.program,
        pre.pid,
        Kind.UNRECOGNIZED,
        session=_sess(pre),
        detail=_detail(preauth, postauth),
        raw=raw,
    )
