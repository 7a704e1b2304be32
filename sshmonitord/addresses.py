"""Addresses and networks in the one form every check, counter and ban uses. Pure.

The same host can be written many ways: ``::ffff:127.0.0.1`` is 127.0.0.1 as a dual-stack
socket reports it, ``fe80::1%eth0`` carries a scope id the firewall knows nothing about, and
``10.0.0.1/8`` has host bits set. Checks done on one spelling and bans done on another are how
an allowlist gets bypassed (``ban ::ffff:127.0.0.1`` once banned 127.0.0.1). So every address
is normalised here, once, before anything looks at it: by the parsers (events carry normalised
IPs), by detection (the key an address is counted and banned under), and by the ban manager
(detected bans, operator bans, bans restored from the store).

Which addresses may be counted and banned together with their neighbours (the IPv6 /64) is
decided here too, see :func:`aggregable` and docs/firewall.md.
"""

from __future__ import annotations

import ipaddress
from socket import AF_INET6 as _AF_INET6
from socket import inet_ntoa as _ntoa
from socket import inet_ntop as _ntop

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_TEXT = 100  # longer operator input is not an address; keep error messages short


class OperatorError(Exception):
    """A command that cannot be done as asked, for a reason the operator must read: one line,
    never a traceback. ``usage`` True: the request itself was wrong or refused (the CLI exits
    2); False: it was fine but could not be carried out completely (exit 1)."""

    usage = False


class AddressError(OperatorError, ValueError):
    """Text that is not an IP address or network."""

    usage = True


# ---------------------------------------------------------------------------- as one int

_V4 = ipaddress.IPv4Address
_V6 = ipaddress.IPv6Address


def address_int(ip: IPAddress) -> int:
    """An address as one int: IPv4 as itself, IPv6 negative (``-1 - value``). Cheaper to keep,
    hash and pickle than the object, and than its text (replay tallies hundreds of thousands
    of addresses; its parse process sends one per event). The private ``_ip``: int() and
    ``.version`` are Python-level calls."""
    v: int = ip._ip  # type: ignore[union-attr]
    return v if type(ip) is _V4 else -1 - v


def address_text(ip: IPAddress) -> str:
    """``str(ip)``, for the rows and JSON written per event, spelt by the C library.

    ipaddress spells an IPv6 address in Python, at ~3.7 µs (a botnet's addresses are mostly
    new, so no cache helps); ``inet_ntop`` gives the same text in ~0.4. Both write RFC 5952's
    form: lower case, no leading zeros, the first longest run of two or more zero groups as
    "::". They differ only where glibc writes an IPv4 tail (``::a.b.c.d``, ``::ffff:a.b.c.d``),
    and for a scope id (``%eth0``), which only ipaddress keeps: those go to ``str``.
    tests/test_addresses.py compares the two on random and edge-case addresses."""
    if type(ip) is _V4:
        return _ntoa(ip._ip.to_bytes(4))  # type: ignore[attr-defined]
    if type(ip) is _V6 and ip._scope_id is None:  # type: ignore[attr-defined]
        text = _ntop(_AF_INET6, ip._ip.to_bytes(16))  # type: ignore[attr-defined]
        if "." not in text:
            return text
    return str(ip)


def int_address(v: int) -> IPAddress:
    """The address :func:`address_int` made ``v`` from."""
    return _V4(v) if v >= 0 else _V6(-1 - v)


# ---------------------------------------------------------------------------- normalising


def normalize_address(ip: IPAddress) -> IPAddress:
    """IPv4-mapped IPv6 becomes IPv4; an IPv6 scope id (``%eth0``) is dropped."""
    if ip.version == 4:
        return ip if type(ip) is ipaddress.IPv4Address else ipaddress.IPv4Address(int(ip))
    assert isinstance(ip, ipaddress.IPv6Address)
    mapped = ip.ipv4_mapped
    if mapped is not None:
        return mapped
    if ip.scope_id is not None or type(ip) is not ipaddress.IPv6Address:
        # Rebuilt from the integer: ipaddress accepts any text after "%", which must never
        # reach a log key, a store row or a firewall command.
        return ipaddress.IPv6Address(int(ip))
    return ip


def normalize_network(net: IPNetwork) -> IPNetwork:
    """An IPv4-mapped IPv6 network becomes the IPv4 network it stands for
    (``::ffff:0:0/97`` is ``0.0.0.0/1``); a scope id is dropped."""
    if net.version == 4:
        if type(net) is ipaddress.IPv4Network:
            return net
        return ipaddress.IPv4Network((int(net.network_address), net.prefixlen))
    addr = net.network_address
    assert isinstance(addr, ipaddress.IPv6Address)
    mapped = addr.ipv4_mapped
    if mapped is not None and net.prefixlen >= 96:
        return ipaddress.IPv4Network((int(mapped), net.prefixlen - 96))
    if addr.scope_id is not None or type(net) is not ipaddress.IPv6Network:
        return ipaddress.IPv6Network((int(addr), net.prefixlen))
    return net


def parse_address(text: str) -> IPAddress:
    """An address typed by an operator or read from a log, normalised. Brackets and a scope id
    are accepted (``[fe80::1%eth0]``). Raises :class:`AddressError`."""
    t = text.strip() if isinstance(text, str) else ""
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    if not t or len(t) > MAX_TEXT:
        raise AddressError(f"{_show(text)} is not an IP address")
    try:
        return normalize_address(ipaddress.ip_address(t.split("%", 1)[0]))
    except ValueError:
        raise AddressError(f"{_show(text)} is not an IP address") from None


def parse_network(text: str) -> tuple[IPNetwork, list[str]]:
    """An address or network typed by an operator, normalised, and a note for each change the
    operator should hear about (host bits cleared, IPv4-mapped form, scope id dropped).
    A plain address is a host network (/32, /128). Raises :class:`AddressError`."""
    t = text.strip() if isinstance(text, str) else ""
    hint = "is not an IP address or network (e.g. 203.0.113.7, 198.51.100.0/24, 2001:db8::/64)"
    if not t or len(t) > MAX_TEXT:
        raise AddressError(f"{_show(text)} {hint}")
    addr, slash, plen = t.partition("/")
    if addr.startswith("[") and addr.endswith("]"):
        addr = addr[1:-1]
    notes: list[str] = []
    if "%" in addr:
        addr, _, zone = addr.partition("%")
        notes.append(f"scope id %{zone} ignored (firewall sets hold addresses only)")
    spelled = addr + slash + plen
    try:
        loose = ipaddress.ip_network(spelled, strict=False)
    except ValueError:
        raise AddressError(f"{_show(text)} {hint}") from None
    net = normalize_network(loose)
    try:
        ipaddress.ip_network(spelled, strict=True)
    except ValueError:
        notes.append(f"{spelled} has host bits set; using {net}")
    if loose.version == 6 and net.version == 4:
        notes.append(f"{spelled} is an IPv4-mapped IPv6 form; using {net}")
    return net, notes


def _show(text: object) -> str:
    """Operator input quoted for an error line: one line, bounded."""
    s = repr(text) if isinstance(text, str) else type(text).__name__
    return s if len(s) <= MAX_TEXT + 2 else s[: MAX_TEXT - 1] + "...'"


# ---------------------------------------------------------------------------- scopes

# Link-local: the same prefix exists on every link of every host (fe80::/64 is every
# neighbour on every interface); aggregating or banning such a network hits bystanders.
LINK_LOCAL: tuple[IPNetwork, ...] = (
    ipaddress.IPv4Network("169.254.0.0/16"),
    ipaddress.IPv6Network("fe80::/10"),
)
MULTICAST: tuple[IPNetwork, ...] = (
    ipaddress.IPv4Network("224.0.0.0/4"),
    ipaddress.IPv6Network("ff00::/8"),
)
_TEREDO_HIGH = 0x2001_0000  # 2001::/32: the /64 is the Teredo server, shared by all its clients


def aggregable(ip: IPAddress) -> bool:
    """May failures from ``ip`` be counted, and the address banned, together with its IPv6
    neighbours (the ``detection.ipv6_prefix`` network, /64 by default)?

    Only for global unicast IPv6 (2000::/3), where a /64 is one subscriber's and privacy
    addresses make single addresses worthless. Not for Teredo (2001::/32, whose /64 is a relay
    serving thousands), link-local (fe80::/10, the same /64 on every link), unique-local
    (fc00::/7, a LAN of your own: like RFC 1918 IPv4, counted per host), NAT64 (64:ff9b::/96:
    its /64 is the whole IPv4 Internet) or anything else outside 2000::/3. IPv4 is always
    counted per address. Works on the integer: detection calls this for every event.
    """
    if ip.version == 4:
        return False
    n = int(ip)
    return n >> 125 == 1 and n >> 96 != _TEREDO_HIGH


def is_host(net: IPNetwork) -> bool:
    return net.prefixlen == net.max_prefixlen


def _overlaps(net: IPNetwork, ranges: tuple[IPNetwork, ...]) -> IPNetwork | None:
    for r in ranges:
        if r.version == net.version and net.overlaps(r):  # type: ignore[arg-type]
            return r
    return None


def never_bannable(net: IPNetwork) -> str | None:
    """Why ``net`` can never be banned, not even with ``--force`` (else None): a /0, the
    unspecified address, multicast (never the source of a connection)."""
    if net.prefixlen == 0:
        return f"{net} is every address there is; a /0 is never banned"
    if net.network_address.is_unspecified and is_host(net):
        return f"{net} is the unspecified address, never the source of a connection"
    for r in MULTICAST:
        if r.version == net.version and net.subnet_of(r):  # type: ignore[arg-type]
            return f"{net} is multicast ({r}), never the source of a connection"
    return None


def needs_force(net: IPNetwork, max_v4: int, max_v6: int) -> str | None:
    """Why banning ``net`` needs ``sshmonitor ban --force`` (else None): wider than
    ``response.max_ban_prefix``, or a network (not a single address) in a link-local range."""
    widest = max_v4 if net.version == 4 else max_v6
    if net.prefixlen < widest:
        return (
            f"{net} is wider than response.max_ban_prefix.ipv{net.version} (/{widest}); "
            "pass --force if you really mean it"
        )
    if not is_host(net):
        r = _overlaps(net, LINK_LOCAL)
        if r is not None:
            return (
                f"{net} is a link-local network ({r}): it names neighbours on every link; "
                "ban single addresses, or pass --force"
            )
    return None
