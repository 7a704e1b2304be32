"""Firewall backends against the real nft / iptables / ipset — inside a network namespace.

The machine's own firewall is never touched: every backend gets
``wrapper=["ip", "netns", "exec", <srv>]`` for a namespace this test created (tests/netns.py),
traffic flows only between the test's ``atk`` and ``srv`` namespaces, and both are deleted in
teardown, pass or fail. The command and none backends need no root.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import need

from sshmonitord.respond import BackendError, NotSetUp, make_backend
from sshmonitord.respond.backend import as_network, check_items, run_command
from sshmonitord.respond.command import CommandBackend
from sshmonitord.respond.ipset import IPSET_MAX_SECONDS, IpsetBackend
from sshmonitord.respond.nftables import (
    NftBackend,
    kernel_at_least,
    parse_elements,
    parse_priority,
    plan_ban,
)

if TYPE_CHECKING:
    from netns import NetnsPair

pytest_plugins = ["netns"]  # the netns_pair fixture

ip = ipaddress.ip_network
Aio = Callable[[Coroutine[Any, Any, Any]], Any]
REFUSE = 0.7  # seconds a connection attempt waits before we call it refused (dropped)


@pytest.fixture
def aio() -> Iterator[Aio]:
    """Run coroutines on one event loop for the whole test."""
    with asyncio.Runner() as runner:
        yield runner.run


def wait_until(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            return False
    return True


def need_tools(*tools: str) -> None:
    for t in tools:
        need(shutil.which(t) is not None, f"{t} is not installed")


def make_real(kind: str, pair: NetnsPair) -> Any:
    if kind == "nftables":
        need_tools("nft")
        return NftBackend(wrapper=pair.wrapper(pair.srv))
    need_tools("ipset", "iptables", "ip6tables")
    return IpsetBackend(wrapper=pair.wrapper(pair.srv))


def drop_rules(kind: str, pair: NetnsPair) -> tuple[int, int]:
    """How many of our drop rules exist in srv, per family (v4, v6)."""
    if kind == "nftables":
        res = pair.run_in(pair.srv, ["nft", "-j", "list", "chain", "inet", "sshmonitor", "input"])
        if res.returncode != 0:
            return (0, 0)
        rules = [o["rule"] for o in json.loads(res.stdout)["nftables"] if "rule" in o]
        text = json.dumps(rules)
        return (text.count("@banned4"), text.count("@banned6"))
    v4 = pair.run_in(pair.srv, ["iptables-save"], check=True).stdout
    v6 = pair.run_in(pair.srv, ["ip6tables-save"], check=True).stdout
    return (v4.count("--match-set sshmonitor4 src"), v6.count("--match-set sshmonitor6 src"))


def leftovers(kind: str, pair: NetnsPair) -> str:
    """Anything of ours still in srv after teardown ("" when clean)."""
    if kind == "nftables":
        return pair.run_in(pair.srv, ["nft", "list", "ruleset"], check=True).stdout.strip()
    sets = pair.run_in(pair.srv, ["ipset", "list", "-n"], check=True).stdout.strip()
    rules = [
        line
        for tool in ("iptables-save", "ip6tables-save")
        for line in pair.run_in(pair.srv, [tool], check=True).stdout.splitlines()
        if "match-set" in line
    ]
    return "\n".join([sets, *rules]).strip()


# =========================================================================== real firewalls


@pytest.mark.real
@pytest.mark.parametrize("kind", ["nftables", "ipset"])
def test_ban_cycle(kind: str, netns_pair: NetnsPair, aio: Aio) -> None:
    pair = netns_pair
    b = make_real(kind, pair)
    pair.start_echo_server()
    a2, a3 = pair.atk4
    net2 = ip(a2)

    # setup is idempotent: one drop rule per family, however often it runs
    aio(b.setup())
    aio(b.setup())
    assert drop_rules(kind, pair) == (1, 1)
    assert aio(b.list()) == {}

    assert pair.connect(a2) and pair.connect(a3)
    session = pair.open_session(a2)  # established before the ban
    assert session.exchange()

    # ban .2: new connections from .2 time out, .3 is unaffected, and the established
    # connection stops passing data too (no "ct state established accept" before the drop)
    aio(b.ban([(net2, 30)]))
    assert not pair.connect(a2, timeout=REFUSE)
    assert pair.connect(a3)
    assert not session.exchange(timeout=REFUSE)
    session.close()

    left = aio(b.list())
    assert set(left) == {net2}
    assert 25 <= left[net2] <= 30

    # re-banning updates the timeout, up and down
    aio(b.ban([(net2, 60)]))
    assert 55 <= aio(b.list())[net2] <= 60
    aio(b.ban([(net2, 20)]))
    assert 15 <= aio(b.list())[net2] <= 20

    # unban: connects again; unbanning what is not banned is fine
    aio(b.unban([net2]))
    assert aio(b.list()) == {}
    assert pair.connect(a2)
    aio(b.unban([net2, ip(a3)]))

    # the kernel expires a ban by itself (nobody calls unban)
    t0 = time.monotonic()
    aio(b.ban([(net2, 2)]))
    assert not pair.connect(a2, timeout=REFUSE)
    assert wait_until(lambda: pair.connect(a2, timeout=0.3), timeout=8)
    waited = time.monotonic() - t0
    assert 1.5 <= waited <= 8, waited
    assert net2 not in aio(b.list())

    # an IPv6 /64 ban blocks every address in it, IPv4 is unaffected
    aio(b.ban([(pair.net6, 30)]))
    assert set(aio(b.list())) == {pair.net6}
    assert not pair.connect(pair.atk6[0], timeout=REFUSE)
    assert not pair.connect(pair.atk6[1], timeout=REFUSE)
    assert pair.connect(a2)
    aio(b.unban([pair.net6]))
    assert pair.connect(pair.atk6[1])

    # teardown removes everything we created (and may run twice)
    aio(b.ban([(net2, 30), (pair.net6, 30)]))
    aio(b.teardown())
    assert leftovers(kind, pair) == ""
    assert drop_rules(kind, pair) == (0, 0)
    aio(b.teardown())
    assert pair.connect(a2) and pair.connect(pair.atk6[0])
    with pytest.raises(NotSetUp):
        aio(b.list())


@pytest.mark.real
@pytest.mark.parametrize("kind", ["nftables", "ipset"])
def test_batch_both_families_and_not_set_up(kind: str, netns_pair: NetnsPair, aio: Aio) -> None:
    pair = netns_pair
    b = make_real(kind, pair)
    with pytest.raises(NotSetUp) as err:
        aio(b.ban([(ip(pair.atk4[0]), 30)]))
    assert "sshmonitor" in str(err.value)  # says which table / set
    aio(b.setup())
    batch = [(ip(f"10.{pair.n}.{i}.0/24"), 100 + i) for i in range(1, 40)]
    batch += [(ip(f"fd00:{i:x}::/64"), 100 + i) for i in range(1, 40)]
    batch += [(ipaddress.ip_address("198.51.100.7"), 50), (ipaddress.ip_address("2001:db8::7"), 50)]
    aio(b.ban(batch))
    left = aio(b.list())
    assert len(left) == 80
    assert 128 <= left[ip(f"10.{pair.n}.30.0/24")] <= 130
    assert 48 <= left[ip("2001:db8::7/128")] <= 50
    aio(b.unban([n for n, _ in batch[:39]]))
    assert len(aio(b.list())) == 41
    aio(b.teardown())
    assert leftovers(kind, pair) == ""


@pytest.mark.real
def test_nft_ruleset_and_repairs(netns_pair: NetnsPair, aio: Aio) -> None:
    pair = netns_pair
    b = make_real("nftables", pair)

    def nft(*args: str, check: bool = True) -> str:
        return pair.run_in(pair.srv, ["nft", *args], check=check).stdout

    aio(b.setup())
    ruleset = nft("list", "ruleset")
    assert "type filter hook input priority filter - 10; policy accept;" in ruleset
    assert "flags interval,timeout" in ruleset
    assert "ip saddr @banned4 drop" in ruleset and "ip6 saddr @banned6 drop" in ruleset
    handles = nft("-a", "list", "chain", "inet", "sshmonitor", "input")
    aio(b.setup())  # in place: not rewritten (same rule handles)
    assert nft("-a", "list", "chain", "inet", "sshmonitor", "input") == handles

    # someone deletes a rule / adds a duplicate: setup restores exactly one per family
    aio(b.ban([(ip(pair.atk4[0]), 30)]))
    nft("flush", "chain", "inet", "sshmonitor", "input")
    aio(b.setup())
    assert drop_rules("nftables", pair) == (1, 1)
    nft("add", "rule", "inet", "sshmonitor", "input", "ip", "saddr", "@banned4", "drop")
    assert drop_rules("nftables", pair) == (2, 1)
    aio(b.setup())
    assert drop_rules("nftables", pair) == (1, 1)
    assert ip(pair.atk4[0]) in aio(b.list())  # the bans survive a repair of the chain

    # `systemctl reload nftables` runs `flush ruleset`: our table is gone until setup runs
    nft("flush", "ruleset")
    with pytest.raises(NotSetUp):
        aio(b.list())
    with pytest.raises(NotSetUp):
        aio(b.unban([ip(pair.atk4[0])]))
    aio(b.setup())
    assert aio(b.list()) == {}

    # an old table with other set flags and another priority is rebuilt, not an error
    nft("delete", "table", "inet", "sshmonitor")
    old = (
        "table inet sshmonitor {\n"
        "  set banned4 { type ipv4_addr; flags timeout; }\n"
        "  chain input { type filter hook input priority filter; policy accept;\n"
        "    ip saddr @banned4 drop\n  }\n}\n"
    )
    pair.run_in(pair.srv, ["nft", "-f", "-"], input=old, check=True)
    aio(b.setup())
    assert nft("list", "ruleset") == ruleset

    # elements someone else added: no timeout -> None, a range -> its prefixes
    nft("add", "element", "inet", "sshmonitor", "banned4", "{ 192.0.2.1, 192.0.2.8-192.0.2.15 }")
    assert aio(b.list()) == {ip("192.0.2.1/32"): None, ip("192.0.2.8/29"): None}
    aio(b.teardown())
    assert nft("list", "ruleset").strip() == ""


@pytest.mark.real
def test_nft_overlapping_bans_merge(netns_pair: NetnsPair, aio: Aio) -> None:
    """An interval set holds no overlapping elements; nft refuses them ("interval overlaps
    with an existing one"), so the backend merges: the widest network, the longest time."""
    pair = netns_pair
    b = make_real("nftables", pair)
    aio(b.setup())
    host, net24 = ip(pair.atk4[0]), pair.net4
    aio(b.ban([(host, 30)]))
    aio(b.ban([(net24, 10)]))  # absorbs the host, keeps its 30 s
    left = aio(b.list())
    assert set(left) == {net24} and 28 <= left[net24] <= 30
    aio(b.ban([(ip(pair.atk4[1]), 100)]))  # a longer ban inside: the /24 is extended
    assert 98 <= aio(b.list())[net24] <= 100
    aio(b.ban([(host, 5)]))  # a shorter ban inside: nothing to do
    assert 98 <= aio(b.list())[net24] <= 100
    pair.start_echo_server()
    assert not pair.connect(pair.atk4[1], timeout=REFUSE)
    # overlapping elements inside one batch
    aio(b.ban([(ip("203.0.113.9"), 40), (ip("203.0.113.0/24"), 20), (ip("203.0.113.64/26"), 60)]))
    left = aio(b.list())
    assert 58 <= left[ip("203.0.113.0/24")] <= 60 and len(left) == 2
    # unban of a network removes the elements inside it; a wider one is left alone
    aio(b.unban([ip("203.0.0.0/16"), ip("203.0.113.0/24"), ip(pair.atk4[0])]))
    assert set(aio(b.list())) == {net24}
    aio(b.teardown())


@pytest.mark.real
@pytest.mark.parametrize("in_place", [False, True], ids=["delete-add", "re-add"])
def test_nft_rebans_and_large_batch(in_place: bool, netns_pair: NetnsPair, aio: Aio) -> None:
    """Re-banning existing elements updates their timeouts, up or down: with ``add; delete;
    add`` (any kernel) or a plain re-add (Linux >= 6.12 updates the timeout in place)."""
    if in_place and not kernel_at_least(6, 12):
        pytest.skip("this kernel ignores a re-add of an existing element (< 6.12)")
    pair = netns_pair
    b = make_real("nftables", pair)
    b.update_in_place = in_place
    aio(b.setup())
    items = [(ipaddress.IPv4Network((0xC6330000 + i, 32)), 600) for i in range(3000)]
    t0 = time.monotonic()
    aio(b.ban(items))
    new = time.monotonic() - t0
    again = [(n, 900) for n, _ in items[:300]] + [(n, 60) for n, _ in items[300:400]]
    t0 = time.monotonic()
    aio(b.ban([*again, (ip("192.0.2.1"), 30)]))  # 400 existing, 1 new
    reban = time.monotonic() - t0
    left = aio(b.list())
    assert len(left) == 3001
    assert all(890 <= left[n] <= 900 for n, _ in items[:300])  # type: ignore[operator]
    assert all(55 <= left[n] <= 60 for n, _ in items[300:400])  # type: ignore[operator]
    assert all(590 <= left[n] <= 600 for n, _ in items[400:])  # type: ignore[operator]
    assert new < 3 and reban < 10, (new, reban)
    aio(b.teardown())


@pytest.mark.real
def test_nft_ip_family_only(netns_pair: NetnsPair, aio: Aio) -> None:
    pair = netns_pair
    need_tools("nft")
    b = NftBackend(wrapper=pair.wrapper(pair.srv), family="ip", table="smtest", priority="-5")
    aio(b.setup())
    aio(b.setup())
    out = pair.run_in(pair.srv, ["nft", "list", "ruleset"], check=True).stdout
    assert "table ip smtest" in out and "banned6" not in out and "priority filter - 5" in out
    with pytest.raises(ValueError):
        aio(b.ban([(pair.net6, 10)]))
    aio(b.ban([(ip(pair.atk4[0]), 10)]))
    assert set(aio(b.list())) == {ip(pair.atk4[0])}
    aio(b.teardown())
    assert pair.run_in(pair.srv, ["nft", "list", "ruleset"], check=True).stdout.strip() == ""


@pytest.mark.real
def test_ipset_specifics(netns_pair: NetnsPair, aio: Aio) -> None:
    pair = netns_pair
    b = make_real("ipset", pair)
    with pytest.raises(NotSetUp):
        aio(b.list())
    aio(b.setup())
    # hash:net keeps overlapping networks side by side; both match
    aio(b.ban([(ip(pair.atk4[0]), 30), (pair.net4, 10)]))
    assert set(aio(b.list())) == {ip(pair.atk4[0]), pair.net4}
    # ipset's longest timeout is 2147483 s (~24.8 days): longer bans are clamped
    aio(b.ban([(ip("192.0.2.1"), 10**8)]))
    assert IPSET_MAX_SECONDS - 5 <= aio(b.list())[ip("192.0.2.1/32")] <= IPSET_MAX_SECONDS
    # an element added without timeout by someone else is permanent: None
    pair.run_in(pair.srv, ["ipset", "add", "sshmonitor4", "192.0.2.99", "timeout", "0"], check=True)
    assert aio(b.list())[ip("192.0.2.99/32")] is None
    # a second copy of our rule (someone ran setup by hand) is removed by teardown too
    pair.run_in(
        pair.srv,
        ["iptables", "-A", "INPUT", "-m", "set", "--match-set", "sshmonitor4", "src", "-j", "DROP"],
        check=True,
    )
    aio(b.setup())
    assert drop_rules("ipset", pair) == (2, 1)
    aio(b.teardown())
    assert leftovers("ipset", pair) == ""


@pytest.mark.real
def test_missing_binary_is_a_clear_error(netns_pair: NetnsPair, aio: Aio) -> None:
    pair = netns_pair
    b = NftBackend(wrapper=pair.wrapper(pair.srv), nft="/nonexistent/nft")
    with pytest.raises(BackendError) as err:
        aio(b.setup())
    assert not isinstance(err.value, NotSetUp)
    text = str(err.value)
    assert "/nonexistent/nft" in text and "No such file or directory" in text
    assert err.value.command[:4] == pair.wrapper(pair.srv)
    assert err.value.returncode not in (None, 0)


# =========================================================================== no root needed


def test_missing_binary_without_wrapper(aio: Aio) -> None:
    b = NftBackend(nft="/nonexistent/nft")
    with pytest.raises(BackendError) as err:
        aio(b.list())
    assert err.value.returncode is None
    assert err.value.command[0] == "/nonexistent/nft"
    assert "cannot run" in str(err.value) and "/nonexistent/nft" in str(err.value)


def test_backend_error_text() -> None:
    e = BackendError(["nft", "-f", "-"], 1, "Error: interval overlaps with an existing one\n")
    assert str(e) == (
        "firewall command failed: nft -f - (exit status 1): "
        "Error: interval overlaps with an existing one"
    )


def test_validation() -> None:
    assert as_network(ipaddress.ip_address("10.0.0.1")) == ip("10.0.0.1/32")
    assert as_network(ipaddress.ip_address("::ffff:10.0.0.1")) == ip("10.0.0.1/32")
    # an IPv6 scope id is free text inside an ipaddress object: it must never come through
    sneaky = ipaddress.IPv6Address("fe80::1%x }\nflush ruleset\nadd table x {")
    assert str(as_network(sneaky)) == "fe80::1/128"
    with pytest.raises(TypeError):
        as_network("10.0.0.1")  # text is never accepted
    with pytest.raises(ValueError):
        as_network(ip("0.0.0.0/0"))
    with pytest.raises(ValueError):
        check_items([(ip("10.0.0.1"), 0)])
    with pytest.raises(TypeError):
        check_items([(ip("10.0.0.1"), "60")])
    assert check_items([(ip("10.0.0.1"), 1.2), (ip("10.0.0.1"), 30)]) == {ip("10.0.0.1"): 30}
    assert check_items([(ip("10.0.0.1"), 10**9)], 2_147_483) == {ip("10.0.0.1"): 2_147_483}
    assert parse_priority("filter - 10") == -10 and parse_priority("raw") == -300
    assert parse_priority("-7") == -7
    assert kernel_at_least(6, 12, "6.12.0-rc1") and kernel_at_least(6, 12, "7.0.0-30-generic")
    assert not kernel_at_least(6, 12, "6.1.0-28-amd64") and not kernel_at_least(6, 12, "x")
    with pytest.raises(ValueError):
        parse_priority("filter; flush ruleset")
    with pytest.raises(ValueError):
        NftBackend(table="x y")
    with pytest.raises(ValueError):
        IpsetBackend(set4="a" * 40)
    with pytest.raises(TypeError):
        NftBackend(wrapper="ip netns exec x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown firewall backend"):
        make_backend("pf")
    with pytest.raises(ValueError, match="nftables"):
        make_backend("nftables", tabel="x")
    assert make_backend("nftables", table="t").table == "t"  # type: ignore[attr-defined]


def test_plan_ban() -> None:
    h1, h2, n24 = ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.0/24")
    # new element / same element again (timeout replaced, even shorter)
    assert plan_ban({}, {h1: 30}) == (set(), {h1: 30})
    assert plan_ban({h1: 100.0}, {h1: 30}) == (set(), {h1: 30})
    # a wider ban absorbs existing hosts and keeps the longest time
    assert plan_ban({h1: 100.0, h2: 5.0}, {n24: 30}) == ({h1, h2}, {n24: 100})
    assert plan_ban({h1: None}, {n24: 30}) == ({h1}, {n24: None})
    # inside a wider ban: nothing, or extend the wider one
    assert plan_ban({n24: 50.0}, {h1: 30}) == (set(), {})
    assert plan_ban({n24: 50.0}, {h1: 80}) == (set(), {n24: 80})
    assert plan_ban({n24: None}, {h1: 80}) == (set(), {})
    # within one batch
    assert plan_ban({}, {h1: 60, n24: 10}) == (set(), {n24: 60})
    assert plan_ban({}, {n24: 10, h1: 60}) == (set(), {n24: 60})
    # other families and disjoint networks are independent
    assert plan_ban({ip("10.0.1.0/24"): 9.0}, {n24: 30}) == (set(), {n24: 30})


def test_parse_elements() -> None:
    elems = [
        "192.0.2.1",
        {"prefix": {"addr": "198.51.100.0", "len": 24}},
        {"range": ["192.0.2.8", "192.0.2.15"]},
        {"elem": {"val": "10.0.0.1", "timeout": 600, "expires": 599}},
        {"elem": {"val": {"prefix": {"addr": "2001:db8::", "len": 64}}, "timeout": 60}},
    ]
    assert parse_elements(elems) == {
        ip("192.0.2.1/32"): None,
        ip("198.51.100.0/24"): None,
        ip("192.0.2.8/29"): None,
        ip("10.0.0.1/32"): 599.0,
        ip("2001:db8::/64"): 60.0,
    }


RECORDER = """\
import json, os, sys
log = sys.argv[1]
with open(log, "a") as f:
    f.write(json.dumps({"argv": sys.argv[2:], "pid": os.getpid()}) + "\\n")
if "fail" in sys.argv[2:] or (sys.argv[2] == "ban" and sys.argv[3] == "192.0.2.66"):
    print("refused by the test script", file=sys.stderr)
    sys.exit(3)
if "sleep" in sys.argv[2:]:
    import time
    time.sleep(60)
"""


@pytest.fixture
def recorder(tmp_path: Path) -> tuple[list[str], Path]:
    script = tmp_path / "rec.py"
    script.write_text(RECORDER)
    log = tmp_path / "calls.jsonl"
    return [sys.executable, str(script), str(log)], log


def calls(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [json.loads(line)["argv"] for line in log.read_text().splitlines()]


def test_command_backend(recorder: tuple[list[str], Path], aio: Aio) -> None:
    base, log = recorder
    b = make_backend(
        "command",
        ban=[*base, "ban", "{ip}", "{prefix}", "{seconds}", "{family}", "--src={ip}"],
        unban=[*base, "unban", "{ip}", "{family}"],
        setup=[*base, "init"],
        teardown=[*base, "fin"],
    )
    assert b.name == "command" and b.expires is False
    aio(b.setup())
    aio(b.ban([(ip("192.0.2.5"), 60), (ip("2001:db8::/64"), 120), (ip("2001:db8:1::9"), 5)]))
    assert calls(log) == [
        ["init"],
        ["ban", "192.0.2.5", "192.0.2.5/32", "60", "4", "--src=192.0.2.5"],
        ["ban", "2001:db8::/64", "2001:db8::/64", "120", "6", "--src=2001:db8::/64"],
        ["ban", "2001:db8:1::9", "2001:db8:1::9/128", "5", "6", "--src=2001:db8:1::9"],
    ]
    left = aio(b.list())
    assert set(left) == {ip("192.0.2.5/32"), ip("2001:db8::/64"), ip("2001:db8:1::9/128")}
    assert 59 <= left[ip("192.0.2.5/32")] <= 60
    aio(b.unban([ip("192.0.2.5")]))
    assert calls(log)[-1] == ["unban", "192.0.2.5", "4"]
    assert ip("192.0.2.5/32") not in aio(b.list())
    aio(b.teardown())
    assert calls(log)[-1] == ["fin"] and aio(b.list()) == {}


def test_command_no_injection(recorder: tuple[list[str], Path], aio: Aio) -> None:
    base, log = recorder
    b = CommandBackend(ban=[*base, "ban", "{ip}"])
    with pytest.raises(TypeError):
        aio(b.ban([("192.0.2.1 --evil", 60)]))  # type: ignore[list-item]
    sneaky = ipaddress.IPv6Address("fe80::1%--evil x;reboot")
    aio(b.ban([(sneaky, 60)]))  # type: ignore[list-item]
    assert calls(log) == [["ban", "fe80::1"]]  # one argv element, scope id gone
    # templates are checked when the backend is built
    with pytest.raises(ValueError, match="unknown placeholder"):
        CommandBackend(ban=[*base, "{ip}", "{user}"])
    with pytest.raises(ValueError, match="program name"):
        CommandBackend(ban=["{ip}"])
    with pytest.raises(ValueError, match="unknown placeholder"):
        CommandBackend(ban=[*base, "{ip}"], unban=[*base, "{seconds}"])
    with pytest.raises(TypeError):
        CommandBackend(ban="/bin/ban {ip}")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        CommandBackend(ban=[])


def test_command_failures(recorder: tuple[list[str], Path], aio: Aio) -> None:
    base, log = recorder
    b = CommandBackend(ban=[*base, "ban", "{ip}"], unban=[*base, "fail", "{ip}"])
    with pytest.raises(BackendError) as err:
        aio(b.ban([(ip("192.0.2.66"), 60), (ip("192.0.2.67"), 60)]))
    assert err.value.returncode == 3
    assert "refused by the test script" in err.value.stderr
    assert "192.0.2.66" in str(err.value) and "ban command failed" in str(err.value)
    assert calls(log) == [["ban", "192.0.2.66"], ["ban", "192.0.2.67"]]  # the rest still ran
    assert set(aio(b.list())) == {ip("192.0.2.67/32")}  # only what succeeded
    with pytest.raises(BackendError):
        aio(b.unban([ip("192.0.2.67")]))
    assert set(aio(b.list())) == {ip("192.0.2.67/32")}  # still banned as far as we know

    missing = CommandBackend(ban=["/nonexistent/myban", "{ip}"])
    with pytest.raises(BackendError, match=r"cannot run.*nonexistent"):
        aio(missing.ban([(ip("192.0.2.1"), 5)]))


def test_command_timeout_kills(recorder: tuple[list[str], Path], aio: Aio) -> None:
    base, log = recorder
    b = CommandBackend(ban=[*base, "sleep", "{ip}"], timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(BackendError, match="timed out"):
        aio(b.ban([(ip("192.0.2.1"), 5)]))
    assert time.monotonic() - t0 < 5
    pid = json.loads(log.read_text().splitlines()[0])["pid"]
    assert not Path(f"/proc/{pid}").exists()  # killed and reaped
    assert aio(b.list()) == {}


def test_command_expiry_from_memory(recorder: tuple[list[str], Path], aio: Aio) -> None:
    base, _log = recorder
    keep = CommandBackend(ban=[*base, "ban", "{ip}"])
    self_expiring = CommandBackend(ban=[*base, "ban", "{ip}"], expires=True)
    for b in (keep, self_expiring):
        aio(b.ban([(ip("192.0.2.1"), 1)]))
    time.sleep(1.1)
    assert aio(keep.list()) == {ip("192.0.2.1/32"): 0.0}  # due: the BanManager unbans
    assert aio(self_expiring.list()) == {}


def test_none_backend(aio: Aio) -> None:
    b = make_backend("none")
    aio(b.setup())
    aio(b.ban([(ip("192.0.2.1"), 30), (ip("2001:db8::/64"), 1)]))
    assert set(aio(b.list())) == {ip("192.0.2.1/32"), ip("2001:db8::/64")}
    aio(b.unban([ip("192.0.2.1"), ip("192.0.2.2")]))
    assert set(aio(b.list())) == {ip("2001:db8::/64")}
    aio(b.teardown())
    assert aio(b.list()) == {}


def test_run_command_cancel_reaps(tmp_path: Path) -> None:
    """A cancelled command (daemon shutting down) is killed and reaped, not left behind."""
    pidfile = tmp_path / "pid"
    code = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"

    async def go() -> None:
        task = asyncio.create_task(run_command([sys.executable, "-c", code], timeout=30))
        for _ in range(100):
            if pidfile.exists() and pidfile.read_text():
                break
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    pid = int(pidfile.read_text())
    assert not os.path.exists(f"/proc/{pid}")
