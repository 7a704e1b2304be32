"""Fleet mode end to end: three real sshmonitord processes on one machine, each following its
own auth.log and banning in its own nftables table inside a network namespace the test
creates, all shipping to one real PostgreSQL the suite starts (tests/pgserver.py).

What the issue asks the fleet to do, checked on the real thing: a ban on one host reaches the
other two hosts' firewalls (and the delay is printed); an attack spread under every local
threshold is found once and banned everywhere, with one alert; PostgreSQL stopped mid-stream
loses and duplicates nothing; reconcile puts back a ban deleted by hand from one host's set
and takes out one added by hand; an operator's unban on one host lifts the ban everywhere.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonProc, need
from netns import NetnsPair, wait_until

pytest_plugins = ["netns"]

HOSTS = ("web1", "web2", "web3")


def stamp() -> str:
    return time.strftime("%b %e %H:%M:%S")


def failed(ip: str, user: str = "root", pid: int = 4000, port: int = 40000) -> str:
    return f"{stamp()} srv sshd[{pid}]: Failed password for {user} from {ip} port {port} ssh2\n"


class Fleet:
    def __init__(self, pair: NetnsPair, server: Any, db: str, roles: dict[str, str], tmp: Path):
        self.pair, self.server, self.db, self.roles, self.tmp = pair, server, db, roles, tmp
        self.daemons: dict[str, DaemonProc] = {}
        self.tables = {h: f"sm{h}{int(time.time()) % 100000}" for h in HOSTS}

    def config(self, host: str) -> str:
        log = self.tmp / host / "auth.log"
        return (
            f"sources: {{mode: file, files: [{log}], poll_interval: 100ms}}\n"
            f"response: {{backend: nftables, nft_table: {self.tables[host]}, bantime: 10m}}\n"
            "detection: {rules: {success_after_failures: {enabled: false}}}\n"
            "fleet:\n"
            f'  database: "{self.server.url(role=self.roles[host], db=self.db)}"\n'
            f"  host: {host}\n"
            "  reconcile: 5s\n"
            "  correlate: {threshold: 6, window: 1h, min_hosts: 3}\n"
            "  spray: {enabled: false}\n"
        )

    def start(self, host: str) -> DaemonProc:
        d = self.tmp / host
        d.mkdir(exist_ok=True)
        (d / "auth.log").touch()
        proc = DaemonProc(d, self.config(host), None, wrap=NetnsPair.wrapper(self.pair.srv))
        self.daemons[host] = proc
        return proc

    def write(self, host: str, text: str) -> None:
        with open(self.tmp / host / "auth.log", "a") as f:
            f.write(text)

    def stop(self) -> None:
        for d in self.daemons.values():
            d.stop()

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.server.url(db=self.db), autocommit=True) as conn:
            return conn.execute(query, args).fetchall()


@pytest.fixture
def fleet(netns_pair: NetnsPair, pg_server: Any, pg_db: str, tmp_path: Path) -> Any:
    need(subprocess.run(["which", "nft"], capture_output=True).returncode == 0, "nft missing")
    import psycopg
    from pgserver import unique_name

    from sshmonitord.store.fleet import schema as fs

    roles = {h: unique_name(f"sshm_{h}") for h in HOSTS}
    with psycopg.connect(pg_server.url(db=pg_db), autocommit=True) as conn:
        fs.migrate(conn)
        for h, role in roles.items():
            conn.execute(fs.host_role_sql(h, role))
    f = Fleet(netns_pair, pg_server, pg_db, roles, tmp_path)
    try:
        for h in HOSTS:
            f.start(h)
        for h in HOSTS:
            f.daemons[h].wait_log("sshmonitord started", timeout=20)
        for h in HOSTS:
            f.daemons[h].wait_log("fleet database connected", timeout=20)
        yield f
    finally:
        f.stop()


def measured(d: DaemonProc) -> dict[tuple[str, tuple[tuple[str, str], ...]], Any]:
    """What the daemon's metrics endpoint serves, read through ``status --json`` (the same
    gathering; the daemons run in a namespace whose loopback the test does not share)."""
    r = d.cli("status", "--json", "--socket", str(d.socket_path))
    assert r.returncode == 0, r.stderr
    return {
        (m["name"], tuple(sorted(m["labels"].items()))): m["value"]
        for m in json.loads(r.stdout)["metrics"]
    }


def in_set(f: Fleet, host: str, ip: str) -> bool:
    return ip in {
        m.split("/")[0] if m.endswith(("/32", "/128")) else m
        for m in f.pair.nft_members(f.tables[host])
    }


def test_a_ban_on_one_host_reaches_the_others_and_an_unban_lifts_it(fleet: Fleet):
    ip = "198.51.100.77"
    fleet.write("web1", "".join(failed(ip, pid=4100 + i) for i in range(5)))
    assert wait_until(lambda: in_set(fleet, "web1", ip), 10, step=0.02), fleet.daemons[
        "web1"
    ].log_text()
    t0 = time.monotonic()
    assert wait_until(
        lambda: in_set(fleet, "web2", ip) and in_set(fleet, "web3", ip), 10, step=0.02
    ), fleet.daemons["web2"].log_text()
    print(f"fleet ban propagation: {1000 * (time.monotonic() - t0):.0f} ms after web1's set")
    # What the metrics endpoint serves (status shows the same gathering; the daemons run in
    # a namespace whose loopback the test does not share).
    web2 = fleet.daemons["web2"]
    got = measured(web2)
    prop = got[("sshmonitor_fleet_ban_propagation_seconds", ())]
    assert prop["count"] >= 1 and prop["buckets"]["+Inf"] == prop["count"]
    assert prop["buckets"]["1.0"] >= 1  # well within a second here
    assert got[("sshmonitor_bans_total", (("reason", "fleet"),))] >= 1
    assert ("sshmonitor_fleet_backlog_records", ()) in got
    # Peers are counted every 10 s: web1 and web3.
    assert wait_until(lambda: measured(web2)[("sshmonitor_fleet_peers", ())] == 2, 15, step=0.5)
    # The operator lifts it on web3: every host follows.
    r = fleet.daemons["web3"].cli("unban", ip, "--socket", str(fleet.daemons["web3"].socket_path))
    assert r.returncode == 0, r.stderr
    assert wait_until(lambda: not any(in_set(fleet, h, ip) for h in HOSTS), 10, step=0.05), (
        fleet.daemons["web1"].log_text()
    )


def test_a_slow_attack_over_three_hosts_is_banned_everywhere_with_one_alert(fleet: Fleet):
    ip = "203.0.113.99"
    for i, h in enumerate(HOSTS):  # 2 tries per host: under every host's threshold of 5
        fleet.write(h, failed(ip, pid=4200 + 2 * i) + failed(ip, pid=4201 + 2 * i))
    assert wait_until(lambda: all(in_set(fleet, h, ip) for h in HOSTS), 20, step=0.1), "\n".join(
        fleet.daemons[h].log_text()[-3000:] for h in HOSTS
    )
    time.sleep(6)  # more leader rounds: nothing found again
    findings = [
        h
        for h in HOSTS
        for line in fleet.daemons[h].log_text().splitlines()
        if " finding stage=daemon rule=fleet_correlate" in line
    ]
    assert len(findings) == 1, findings
    assert fleet.sql("SELECT count(*) FROM sshmonitor.fleet_findings")[0][0] == 1
    claims = fleet.sql("SELECT host, delivered IS NOT NULL FROM sshmonitor.alert_claims")
    assert claims == [(findings[0], True)]


def test_postgres_stopped_mid_stream_and_a_host_killed_every_event_arrives_once(fleet: Fleet):
    def burst(tag: int) -> None:
        for j, h in enumerate(HOSTS):
            fleet.write(
                h,
                "".join(
                    failed(f"192.0.2.{(tag * 7 + j + k) % 200 + 1}", user=f"u{tag}", pid=5000 + k)
                    for k in range(30)
                ),
            )

    burst(1)
    time.sleep(0.5)
    fleet.server.stop()
    try:
        for t in (2, 3, 4):
            burst(t)
            time.sleep(0.3)
        time.sleep(1.5)
        # web2 is killed -9 with its backlog unshipped, and restarted while the database is
        # still away: the backlog is in its store's outbox, nothing in memory.
        fleet.daemons["web2"].stop()
        burst(6)
        fleet.start("web2").wait_log("sshmonitord started", timeout=20)
        time.sleep(0.5)
    finally:
        fleet.server.start()
    burst(5)

    def local(h: str) -> int:
        import sqlite3

        conn = sqlite3.connect(fleet.daemons[h].state_dir / "sshmonitor.db")
        try:
            return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
        finally:
            conn.close()

    def shipped(h: str) -> int:
        return int(fleet.sql("SELECT count(*) FROM sshmonitor.events WHERE host = %s", h)[0][0])

    assert wait_until(
        lambda: all(local(h) >= 150 and shipped(h) == local(h) for h in HOSTS), 60, step=0.5
    ), [(h, local(h), shipped(h)) for h in HOSTS]
    dup = fleet.sql(
        "SELECT host, local_id, count(*) FROM sshmonitor.events GROUP BY 1, 2 HAVING count(*) > 1"
    )
    assert dup == []


def test_reconcile_repairs_a_hand_edited_set_both_ways(fleet: Fleet):
    ip = "198.51.100.88"
    fleet.write("web2", "".join(failed(ip, pid=4300 + i) for i in range(5)))
    assert wait_until(lambda: all(in_set(fleet, h, ip) for h in HOSTS), 15, step=0.05)
    table = fleet.tables["web1"]
    fleet.pair.run_in(
        fleet.pair.srv,
        ["nft", "delete", "element", "inet", table, "banned4", f"{{ {ip} }}"],
        check=True,
    )
    stray = "192.0.2.250"
    fleet.pair.run_in(
        fleet.pair.srv,
        ["nft", "add", "element", "inet", table, "banned4", f"{{ {stray} }}"],
        check=True,
    )
    assert not in_set(fleet, "web1", ip)
    assert wait_until(
        lambda: in_set(fleet, "web1", ip) and not in_set(fleet, "web1", stray), 12, step=0.2
    ), fleet.daemons["web1"].log_text()[-3000:]
    assert "fleet reconcile repaired" in fleet.daemons["web1"].log_text()
