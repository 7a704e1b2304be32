"""Address normalisation (sshmonitord/addresses.py) and where it is used before any check:
the parsers (events carry normalised IPs) and detection's key (the network a finding bans).
Issue #11 items 6 (IPv4-mapped IPv6 bypassed the allowlist) and 7 (a link-local attacker got
fe80::/64 banned)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sshmonitord import addresses, config
from sshmonitord.addresses import (
    AddressError,
    OperatorError,
    aggregable,
    needs_force,
    never_bannable,
    normalize_address,
    normalize_network,
    parse_address,
    parse_network,
)
from sshmonitord.detect.engine import Engine, History, addr_key, key_network
from sshmonitord.events import Event, Kind
from sshmonitord.parse import Parser

ip = ipaddress.ip_address
net = ipaddress.ip_network


def test_mapped_and_scoped_addresses_normalise():
    assert normalize_address(ip("::ffff:127.0.0.1")) == ip("127.0.0.1")
    assert normalize_address(ip("::ffff:127.0.0.1")).version == 4
    scoped = normalize_address(ip("fe80::1%eth0"))
    assert scoped == ip("fe80::1") and scoped.scope_id is None and str(scoped) == "fe80::1"
    # Text after "%" is anything at all: it must never survive into a key or a log.
    evil = normalize_address(ipaddress.IPv6Address("fe80::1%x }\nflush ruleset"))
    assert str(evil) == "fe80::1"
    assert normalize_address(ip("2001:db8::1")) == ip("2001:db8::1")
    assert normalize_address(ip("192.0.2.1")) == ip("192.0.2.1")


def test_mapped_networks_become_ipv4():
    assert normalize_network(net("::ffff:0:0/97")) == net("0.0.0.0/1")
    assert normalize_network(net("::ffff:0:0/96")) == net("0.0.0.0/0")
    assert normalize_network(net("::ffff:10.0.0.0/104")) == net("10.0.0.0/8")
    assert normalize_network(net("::ffff:127.0.0.1/128")) == net("127.0.0.1/32")
    assert str(normalize_network(net("fe80::%eth0/64"))) == "fe80::/64"
    # Wider than the mapped range: stays IPv6 (and is refused elsewhere: it covers ::1).
    assert normalize_network(net("::/80")) == net("::/80")


def test_parse_network_says_what_it_changed():
    n, notes = parse_network("::ffff:127.0.0.1")
    assert n == net("127.0.0.1/32") and any("IPv4-mapped" in x for x in notes)
    n, notes = parse_network("::ffff:0:0/97")
    assert n == net("0.0.0.0/1")
    n, notes = parse_network("10.1.2.3/8")
    assert n == net("10.0.0.0/8") and notes == ["10.1.2.3/8 has host bits set; using 10.0.0.0/8"]
    n, notes = parse_network(" fe80::1%eth0 ")
    assert n == net("fe80::1/128") and "%eth0" in notes[0]
    n, notes = parse_network("fe80::%eth0/64")
    assert n == net("fe80::/64")
    n, notes = parse_network("[2001:db8::1]")
    assert n == net("2001:db8::1/128") and notes == []
    assert parse_network("198.51.100.0/24") == (net("198.51.100.0/24"), [])


@pytest.mark.parametrize(
    "text",
    ["not-an-ip", "", " ", "1.2.3.4/33", "1.2.3.4/", "300.1.1.1", "x" * 5000, "1.2.3.4\njunk"],
)
def test_bad_text_is_one_operator_error_line(text):
    with pytest.raises(AddressError) as info:
        parse_network(text)
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 250
    assert isinstance(info.value, OperatorError) and isinstance(info.value, ValueError)
    assert info.value.usage is True
    with pytest.raises(AddressError):
        parse_address(text or "-")


def test_parse_address():
    assert parse_address("::ffff:198.51.100.7") == ip("198.51.100.7")
    assert str(parse_address("[fe80::2%wlan0]")) == "fe80::2"
    with pytest.raises(AddressError):
        parse_address("10.0.0.0/8")


@pytest.mark.parametrize(
    "address, expected",
    [
        ("2001:db8:1:2::5", True),  # global unicast (documentation space, as in the tests)
        ("2a00:1450::1", True),
        ("3fff:ffff::1", True),  # still 2000::/3
        ("fe80::1", False),  # link-local: the same /64 on every link
        ("fd12:3456::1", False),  # unique-local: a LAN of our own, per host like RFC 1918
        ("2001:0:4136:e378::1", False),  # Teredo: the /64 is the relay's
        ("64:ff9b::203.0.113.1", False),  # NAT64: the /64 would be all of IPv4
        ("::1", False),
        ("ff02::1", False),
        ("203.0.113.5", False),  # IPv4 is always per address
    ],
)
def test_aggregable_scopes(address, expected):
    assert aggregable(ip(address)) is expected


def test_never_bannable_even_with_force():
    for text in ("0.0.0.0/0", "::/0", "224.0.0.1", "ff02::1", "ff00::/8", "::", "0.0.0.0"):
        n, _ = parse_network(text)
        assert never_bannable(n) is not None, text
    assert never_bannable(parse_network("::ffff:0:0/96")[0]) is not None  # = 0.0.0.0/0
    for text in ("10.0.0.0/8", "203.0.113.5", "2001:db8::/32", "fe80::1"):
        assert never_bannable(parse_network(text)[0]) is None, text


def test_needs_force_wide_and_link_local_networks():
    m = config.MaxBanPrefix()
    assert (m.ipv4, m.ipv6) == (16, 32)

    def why(text):
        return needs_force(parse_network(text)[0], m.ipv4, m.ipv6)

    assert "max_ban_prefix.ipv4" in why("10.0.0.0/8")
    assert "max_ban_prefix.ipv4" in why("::ffff:0:0/97")  # 0.0.0.0/1
    assert why("10.0.0.0/16") is None and why("203.0.113.5") is None
    assert "max_ban_prefix.ipv6" in why("2001:db8::/31")
    assert why("2001:db8::/32") is None
    assert "link-local" in why("fe80::/64")
    assert "link-local" in why("169.254.0.0/24")
    assert why("fe80::1") is None and why("169.254.7.7") is None


# ------------------------------------------------------------------------ detection's key


def test_detection_key_is_the_address_for_non_global_ipv6():
    for text, expected in [
        ("fe80::1", "fe80::1/128"),
        ("fd12:3456::7", "fd12:3456::7/128"),
        ("2001:0:4136:e378::1", "2001:0:4136:e378::1/128"),
        ("2001:db8:1:2::5", "2001:db8:1:2::/64"),
        ("203.0.113.5", "203.0.113.5/32"),
    ]:
        assert str(key_network(addr_key(ip(text), 64), 64)) == expected, text
    # Two link-local neighbours are two keys, and no IPv6 key collides with an IPv4 one.
    assert addr_key(ip("fe80::1")) != addr_key(ip("fe80::2"))
    assert addr_key(ip("::203.0.113.5")) != addr_key(ip("203.0.113.5"))


def _failure(address: str, dt: float) -> Event:
    t0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    return Event(
        t0 + timedelta(seconds=dt), "h", "sshd", 1, Kind.AUTH_FAILURE, "root",
        ip(address), 22, "password",
    )  # fmt: skip


def test_link_local_attacker_bans_only_itself():
    e = Engine(config.DetectionConfig(), History(since=0.0), zone=UTC)
    out = []
    for i in range(5):
        out += e.feed(_failure("fe80::bad", i))
    assert [f.rule for f in out] == ["bruteforce"]
    assert out[0].ban_net == "fe80::bad/128"  # never fe80::/64: every neighbour on every link
    # A neighbour failing once is counted on its own.
    assert e.feed(_failure("fe80::1", 9)) == []


def test_global_ipv6_still_aggregates():
    e = Engine(config.DetectionConfig(), History(since=0.0), zone=UTC)
    out = []
    for i in range(5):
        out += e.feed(_failure(f"2001:db8:1:2::{i + 1:x}", i))
    assert [f.ban_net for f in out] == ["2001:db8:1:2::/64"]


# ------------------------------------------------------------------------ parsers


@pytest.mark.parametrize(
    "addr_text, expected",
    [
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("fe80::1%eth0", "fe80::1"),
        ("2001:db8::9", "2001:db8::9"),
    ],
)
def test_sshd_events_carry_normalised_ips(addr_text, expected):
    p = Parser(reference=datetime(2026, 11, 25, tzinfo=UTC))
    ev = p.parse_text(
        f"Nov 24 21:45:48 web1 sshd[1234]: Failed password for root from {addr_text} port 4242 ssh2"
    )
    assert ev is not None and ev.kind is Kind.AUTH_FAILURE
    assert ev.ip == ip(expected) and str(ev.ip) == expected
    assert type(ev.ip) is type(ip(expected))


def test_audit_addresses_normalised():
    from sshmonitord.parse.audit import _ip

    assert _ip("::ffff:198.51.100.7") == ip("198.51.100.7")
    assert str(_ip("fe80::5%eth1")) == "fe80::5"
    assert _ip("not an ip") is None


def test_module_is_pure():
    # No I/O, no clock: nothing but ipaddress is imported, and from socket only its pure
    # conversions between an address's bytes and its text.
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(addresses))
    imported = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.module == "socket":
            assert {a.name for a in n.names} <= {"AF_INET6", "inet_ntoa", "inet_ntop"}
        elif isinstance(n, ast.Import | ast.ImportFrom):
            imported |= {a.name.split(".")[0] for a in n.names}
    assert imported <= {"annotations", "ipaddress"}


def test_an_address_as_one_int_and_back() -> None:
    """Replay's tallies and its parse process keep addresses as ints: every address comes
    back as itself, IPv4 and IPv6 never share an int (0.0.0.0 and :: included)."""
    from sshmonitord.addresses import address_int, int_address

    seen: dict[int, object] = {}
    for text in ("0.0.0.0", "255.255.255.255", "203.0.113.5", "::", "::1", "2001:db8::1",
                 "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::ffff:203.0.113.5"):  # fmt: skip
        ip = ipaddress.ip_address(text)
        v = address_int(ip)
        back = int_address(v)
        assert back == ip and type(back) is type(ip), text
        assert seen.setdefault(v, ip) == ip, text


@given(v=st.integers(min_value=0, max_value=2**32 - 1))
def test_an_ipv4_address_as_text_is_ipaddress_own(v: int) -> None:
    from sshmonitord.addresses import address_text

    ip = ipaddress.IPv4Address(v)
    assert address_text(ip) == str(ip)


# Hextets drawn mostly from 0, 1 and ffff: runs of zeros of every length and place, the
# forms where the C library's spelling could part from ipaddress's.
_HEXTET = st.one_of(st.sampled_from([0, 0, 0, 1, 0xFFFF]), st.integers(0, 0xFFFF))


@given(
    hextets=st.lists(_HEXTET, min_size=8, max_size=8),
    v=st.integers(min_value=0, max_value=2**128 - 1),
)
def test_an_ipv6_address_as_text_is_ipaddress_own(hextets: list[int], v: int) -> None:
    from sshmonitord.addresses import address_text

    sparse = 0
    for h in hextets:
        sparse = sparse << 16 | h
    for n in (sparse, v):
        ip = ipaddress.IPv6Address(n)
        assert address_text(ip) == str(ip)


def test_address_text_edges() -> None:
    from sshmonitord.addresses import address_text

    for text in ("0.0.0.0", "255.255.255.255", "10.0.0.1", "1.2.3.4", "::", "::1",
                 "2001:db8::1", "::ffff:203.0.113.5", "fe80::1:0:0:5",
                 # glibc writes these with an IPv4 tail (::1.2.3.4, ::ffff:0:1.2.3.4...):
                 "::102:304", "::ffff:0:102:304", "::ffff", "::2", "64:ff9b::102:304",
                 # a single zero group is not "::" in either; the first longest run is
                 "1:0:2:3:4:5:6:7", "1:0:0:2:0:0:3:4", "1::2:0:0:0:3", "0:0:1::",
                 "fe80::1%eth0", "fe80::1%<evil>"):  # fmt: skip
        ip = ipaddress.ip_address(text)
        assert address_text(ip) == str(ip), text
