"""End to end, inside network namespaces the test creates: a real sshd in `srv` logging through
rsyslog, the real daemon in `srv` with a real firewall backend, real failed logins from `atk`.

Never the machine's own firewall: the daemon and every nft/ipset command run in `srv`; clients
run in `atk`; nothing connects to a namespace address from the root namespace.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import need
from netns import NetnsPair, wait_until
from realsshd import RealSshd

pytest_plugins = ["netns"]  # the netns_pair fixture

CONNECT = """
import socket, sys
src, dst, port, t = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.settimeout(t)
try:
    s.bind((src, 0))
    s.connect((dst, port))
    s.settimeout(t)
    banner = s.recv(64)
    print("OK" if banner.startswith(b"SSH-") else "NOBANNER")
except OSError as e:
    print("FAIL", e)
"""


def can_reach_sshd(pair: NetnsPair, sshd: RealSshd, src: str, timeout: float = 1.5) -> bool:
    """From atk, bound to src: does a new TCP connection to sshd get its banner?"""
    res = pair.run_in(
        pair.atk,
        [sys.executable, "-c", CONNECT, src, sshd.listen, str(sshd.port), str(timeout)],
        timeout=timeout + 15,
    )
    return res.stdout.strip() == "OK"


def attempt(sshd: RealSshd, pair: NetnsPair, src: str, user: str | None = None) -> None:
    """One failed password from ``src``. The attempt that gets the address banned hangs (the
    drop rule cuts its established connection, as it should), so a timeout is fine here."""
    try:
        sshd.ssh_password(user or sshd.user, "wrong", timeout=5, client_ns=pair.atk, source=src)
    except AssertionError as e:
        if "timed out" not in str(e):
            raise


def members(pair: NetnsPair, backend: str, family: int = 4) -> set[str]:
    """What the firewall in srv holds right now."""
    if backend == "nftables":
        return pair.nft_members("smtest", (f"banned{family}",))
    name = "smtest4" if family == 4 else "smtest6"
    res = pair.run_in(pair.srv, ["ipset", "list", name, "-output", "save"])
    return {m.group(1) for m in re.finditer(r"^add \S+ (\S+)", res.stdout, re.M)}


def config(sshd: RealSshd, backend: str) -> str:
    names = "ipset_names: [smtest4, smtest6]" if backend == "ipset" else "nft_table: smtest"
    return (
        f"sources: {{mode: file, files: [{sshd.auth_log}], poll_interval: 200ms}}\n"
        f"response: {{backend: {backend}, {names}, bantime: 60s}}\n"
        "detection: {rules: {success_after_failures: {enabled: false}}}\n"
    )


def cli(d, *args: str) -> subprocess.CompletedProcess[str]:
    return d.cli(*args, "--socket", str(d.socket_path))


@pytest.mark.parametrize("backend", ["nftables", "ipset"])
def test_bruteforce_is_banned_in_the_firewall(backend, netns_pair, daemon_factory, tmp_path):
    pair: NetnsPair = netns_pair
    need(
        subprocess.run(
            ["which", "nft" if backend == "nftables" else "ipset"], capture_output=True
        ).returncode
        == 0,
        f"{backend} is not installed",
    )
    attacker, bystander = pair.atk4
    with RealSshd(netns=pair.srv, listen=pair.srv4) as sshd:
        d = daemon_factory(config(sshd, backend), wrap=pair.wrapper(pair.srv))
        d.wait_log("sshmonitord started", timeout=20)
        # (No probe from the attacker address first: a connection that never tries to log in
        # is a scanner's and counts as a failure.)

        # Five real failed logins from the attacker address.
        for _ in range(5):
            attempt(sshd, pair, attacker)
        fifth = sshd.wait_for_count(
            r"Failed password for sshmtest from " + re.escape(attacker), 5, timeout=10
        )
        t5 = time.monotonic()  # the fifth line is in auth.log now (wait_for_count polls 20 ms)
        assert wait_until(
            lambda: f"{attacker}" in {m.split("/")[0] for m in members(pair, backend)}, 5, step=0.05
        ), d.log_text()
        latency = time.monotonic() - t5
        print(f"{backend}: in the set {latency * 1000:.0f} ms after the 5th failure line")
        assert latency < 1.0, f"ban took {latency:.2f}s"
        assert len(fifth) == 5
        # New connections from the attacker fail; the bystander still gets in.
        assert not can_reach_sshd(pair, sshd, attacker)
        assert can_reach_sshd(pair, sshd, bystander)
        st = cli(d, "bans")
        assert st.returncode == 0 and attacker in st.stdout, st.stdout + st.stderr

        # The operator lifts it.
        r = cli(d, "unban", attacker)
        assert r.returncode == 0 and "unbanned" in r.stdout, r.stderr
        assert wait_until(lambda: can_reach_sshd(pair, sshd, attacker), 5)

        # An operator ban survives a restart, even if the firewall lost it meanwhile.
        r = cli(d, "ban", attacker, "--for", "10m", "--reason", "test")
        assert r.returncode == 0, r.stderr
        assert wait_until(lambda: not can_reach_sshd(pair, sshd, attacker, 1.0), 5)
        d.signal(signal.SIGTERM)
        assert d.proc.wait(timeout=10) == 0
        if backend == "nftables":
            pair.run_in(pair.srv, ["nft", "flush", "set", "inet", "smtest", "banned4"], check=True)
        else:
            pair.run_in(pair.srv, ["ipset", "flush", "smtest4"], check=True)
        assert wait_until(lambda: can_reach_sshd(pair, sshd, attacker), 5)
        d = daemon_factory(config(sshd, backend), wrap=pair.wrapper(pair.srv))
        d.wait_log("sshmonitord started", timeout=20)
        assert wait_until(lambda: not can_reach_sshd(pair, sshd, attacker, 1.0), 5), d.log_text()

        # A short ban expires by itself (kernel timeout, no daemon action needed).
        assert cli(d, "unban", attacker).returncode == 0
        r = cli(d, "ban", bystander, "--for", "3s")
        assert r.returncode == 0, r.stderr
        in_set = {m.split("/")[0] for m in members(pair, backend)}
        assert bystander in in_set
        assert wait_until(
            lambda: bystander not in {m.split("/")[0] for m in members(pair, backend)}, 8, step=0.1
        )
        assert can_reach_sshd(pair, sshd, bystander)


def test_log_injection_never_bans_the_named_address(netns_pair, daemon_factory):
    pair: NetnsPair = netns_pair
    need(subprocess.run(["which", "nft"], capture_output=True).returncode == 0, "nft missing")
    attacker, victim = pair.atk4
    with RealSshd(netns=pair.srv, listen=pair.srv4) as sshd:
        d = daemon_factory(config(sshd, "nftables"), wrap=pair.wrapper(pair.srv))
        d.wait_log("sshmonitord started", timeout=20)
        evil = f"x from {victim} port 22 ssh2"
        for _ in range(5):
            attempt(sshd, pair, attacker, user=evil)
        assert wait_until(lambda: attacker in members(pair, "nftables"), 5), d.log_text()
        time.sleep(0.5)
        assert victim not in members(pair, "nftables")
        assert can_reach_sshd(pair, sshd, victim)


def _global6(pair: NetnsPair) -> tuple[str, str, str, str]:
    """Global-unicast IPv6 on the test's veth pair (documentation space: it exists only
    inside the two namespaces), since only global addresses are banned per /64."""
    prefix = f"2001:db8:{pair.n:x}"
    srv, a1, a2 = f"{prefix}::1", f"{prefix}::2", f"{prefix}::3"
    pair.run_in(pair.srv, ["ip", "addr", "add", f"{srv}/64", "dev", pair.veth_srv, "nodad"],
                check=True)  # fmt: skip
    for a in (a1, a2):
        pair.run_in(pair.atk, ["ip", "addr", "add", f"{a}/64", "dev", pair.veth_atk, "nodad"],
                    check=True)  # fmt: skip
    return srv, a1, a2, f"{prefix}::/64"


def test_ipv6_attacker_is_banned_per_64(netns_pair, daemon_factory):
    pair: NetnsPair = netns_pair
    need(subprocess.run(["which", "nft"], capture_output=True).returncode == 0, "nft missing")
    srv, a1, a2, net = _global6(pair)
    with RealSshd(netns=pair.srv, listen=srv) as sshd:
        d = daemon_factory(config(sshd, "nftables"), wrap=pair.wrapper(pair.srv))
        d.wait_log("sshmonitord started", timeout=20)
        for _ in range(5):
            attempt(sshd, pair, a1)
        assert wait_until(lambda: net in members(pair, "nftables", 6), 5), d.log_text()
        # The whole /64 is out: the other address of the attacker too.
        assert not can_reach_sshd(pair, sshd, a2)


def test_non_global_ipv6_is_banned_per_address(netns_pair, daemon_factory):
    """A unique-local (and, the same rule, a link-local) attacker is banned alone: its /64 is
    a LAN of ours, every neighbour on it (issue #11 item 7). And an operator's ban of an
    IPv4-mapped spelling lands in the IPv4 set as the IPv4 address (item 6)."""
    pair: NetnsPair = netns_pair
    need(subprocess.run(["which", "nft"], capture_output=True).returncode == 0, "nft missing")
    a1, a2 = pair.atk6
    with RealSshd(netns=pair.srv, listen=pair.srv6) as sshd:
        d = daemon_factory(config(sshd, "nftables"), wrap=pair.wrapper(pair.srv))
        d.wait_log("sshmonitord started", timeout=20)
        for _ in range(5):
            attempt(sshd, pair, a1)
        assert wait_until(lambda: f"{a1}/128" in members(pair, "nftables", 6) or a1 in
                          members(pair, "nftables", 6), 5), d.log_text()  # fmt: skip
        assert members(pair, "nftables", 6) <= {a1, f"{a1}/128"}
        assert not can_reach_sshd(pair, sshd, a1)
        assert can_reach_sshd(pair, sshd, a2)  # the neighbour on the same /64 is not banned

        v4 = pair.atk4[1]
        r = cli(d, "ban", f"::ffff:{v4}", "--for", "10m")
        assert r.returncode == 0, r.stderr
        assert v4 in {m.split("/")[0] for m in members(pair, "nftables", 4)}
        assert not any("ffff" in m for m in members(pair, "nftables", 6))
        r = cli(d, "ban", "fe80::/64")  # every neighbour on every link: needs --force
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        r = cli(d, "ban", "::ffff:127.0.0.1")
        assert r.returncode == 2 and "allowlisted" in r.stderr
        assert "Traceback" not in d.log_text()


def test_dry_run_bans_nothing(netns_pair, daemon_factory):
    pair: NetnsPair = netns_pair
    attacker = pair.atk4[0]
    with RealSshd(netns=pair.srv, listen=pair.srv4) as sshd:
        d = daemon_factory(
            config(sshd, "nftables"), wrap=pair.wrapper(pair.srv), args=["--dry-run"]
        )
        d.wait_log("sshmonitord started", timeout=20)
        for _ in range(5):
            attempt(sshd, pair, attacker)
        d.wait_log("DRY RUN: would ban", timeout=5)
        assert members(pair, "nftables") == set()
        res = pair.run_in(pair.srv, ["nft", "list", "tables"])
        assert "smtest" not in res.stdout  # not even our table
        assert can_reach_sshd(pair, sshd, attacker)
        st = cli(d, "bans")
        assert "DRY RUN" in st.stdout and attacker in st.stdout
