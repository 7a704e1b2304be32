"""The ban manager's firewall check (respond/bans.py ``_needs_push``): which running bans the
firewall lacks. It runs every maintenance pass over every ban; it used to scan every firewall
element for each ban (4,500 bans froze the event loop for 16 s: bench/metrics.py), and now
looks up each ban's covering networks by the widths the firewall holds."""

from __future__ import annotations

import ipaddress

from sshmonitord.respond.bans import MAINTENANCE_EVERY, _needs_push, _widths


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


LONG = 10**6  # seconds our ban still runs


def test_a_ban_the_firewall_holds_exactly_or_within_a_wider_element_is_not_pushed() -> None:
    present = {
        net("198.51.100.7/32"): None,
        net("192.0.2.0/24"): None,
        net("2001:db8:1:2::/64"): None,
    }
    assert not _needs_push(net("198.51.100.7/32"), LONG, present)
    assert not _needs_push(net("192.0.2.99/32"), LONG, present)  # inside the /24
    assert not _needs_push(net("2001:db8:1:2::5/128"), LONG, present)
    assert _needs_push(net("198.51.100.8/32"), LONG, present)
    assert _needs_push(net("192.0.3.1/32"), LONG, present)
    assert _needs_push(net("2001:db8:1:3::5/128"), LONG, present)
    # A wider ban is not covered by a narrower element.
    assert _needs_push(net("198.51.100.0/24"), LONG, present)
    # An IPv4 ban is never "covered" by an IPv6 element of the same bits, and back.
    assert _needs_push(net("::c633:6407/128"), LONG, present)
    assert _needs_push(net("0.0.0.0/0"), LONG, {net("::/0"): None})


def test_an_element_about_to_run_out_before_our_ban_is_pushed_again() -> None:
    soon = float(MAINTENANCE_EVERY)  # under two maintenance periods left there
    present = {net("198.51.100.7/32"): soon, net("192.0.2.0/24"): 10 * soon}
    assert _needs_push(net("198.51.100.7/32"), LONG, present)
    assert not _needs_push(net("198.51.100.7/32"), int(soon), present)  # ours ends too
    assert not _needs_push(net("192.0.2.1/32"), LONG, present)
    # The exact element decides before a wider one: here the /32 runs out, the /24 does not.
    both = {net("192.0.2.1/32"): soon, net("192.0.2.0/24"): 10 * soon}
    assert _needs_push(net("192.0.2.1/32"), LONG, both)


def test_the_same_answer_for_thousands_of_bans_as_an_element_by_element_scan() -> None:
    present: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, float | None] = {
        net(f"10.{i // 256}.{i % 256}.0/{24 if i % 7 == 0 else 32}"): None for i in range(3000)
    }
    present[net("2001:db8::/48")] = None
    widths = _widths(present)
    bans = [net(f"10.{i // 256}.{i % 256}.{i % 3}/32") for i in range(0, 3500, 3)]
    bans += [net("2001:db8:0:5::1/128"), net("2001:db9::1/128")]

    def scan(n: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
        return not any(p.version == n.version and n.subnet_of(p) for p in present)  # type: ignore[arg-type]

    assert [_needs_push(b, LONG, present, widths) for b in bans] == [scan(b) for b in bans]
