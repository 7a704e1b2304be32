#!/usr/bin/env python3
"""Fleet mode's capacity on this machine: N simulated hosts shipping into one PostgreSQL.

Each simulated host is the real thing minus the log: its own SQLite store with the fleet's
outbox triggers, the real replicator (store/fleet/replicator.py) and the real ban follower
(store/fleet/bansync.py). A writer per host stores events at the given rate (in the store's
batch transactions, as the pipeline does); now and then one host stores a ban, and every
other host's follower notes when the ban reached it. PostgreSQL is Debian's, started by this
script in a temp directory (tests/pgserver.py), on this same machine.

Prints: events/s stored in PostgreSQL (offered and achieved, sustained over the run), the
backlog left at the end, ban propagation p50/p95/p99/max (from the host's store commit to
the other hosts' ban callback), and bytes per million events (table + indexes).

    .venv/bin/python bench/fleet.py                      # 50 hosts x 200 events/s, 60 s
    .venv/bin/python bench/fleet.py --hosts 10 --rate 100 --seconds 20
    .venv/bin/python bench/fleet.py --procs 2            # hosts split over 2 processes

Runs as root (PostgreSQL runs as the postgres user) or as a user who may run initdb.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the tests' own PostgreSQL harness

from pgserver import PgServer, unique_name  # noqa: E402

from sshmonitord.events import Event, Kind  # noqa: E402
from sshmonitord.store import Store, event_row, outbox  # noqa: E402
from sshmonitord.store import bans as bans_store  # noqa: E402
from sshmonitord.store.fleet import schema as fs  # noqa: E402

_TEMPLATES: dict[int, list[tuple[Any, ...]]] = {}


def make_events(host: int, n: int, k: int) -> list[tuple[Any, ...]]:
    """``n`` failed-password rows of host ``host`` stamped now (rows built once per host:
    the simulated host must cost little, so that the bench measures the fleet's side)."""
    rows = _TEMPLATES.get(host)
    if rows is None:
        now = datetime.now(UTC)
        rows = []
        for i in range(1000):
            ip = ipaddress.ip_address(f"10.{host % 250}.{i // 250}.{i % 250 + 1}")
            ev = Event(
                ts=now,
                host=f"h{host}",
                program="sshd",
                pid=1000 + i,
                kind=Kind.AUTH_FAILURE,
                user="root",
                ip=ip,
                port=40000 + i,
                method="password",
                raw=f"{now:%b %e %H:%M:%S} h{host} sshd[{1000 + i}]: Failed password for root "
                f"from {ip} port {40000 + i} ssh2",
            )
            rows.append((*event_row(ev), 1))
        _TEMPLATES[host] = rows
    ts = time.time()
    return [(ts, *rows[(k + i) % len(rows)][1:]) for i in range(n)]


async def run_hosts(
    ids: list[int], urls: dict[int, str], base: Path, rate: float, seconds: float,
    ban_every: float, ban_hosts: set[int], out: Any, backlog: int = 0,
) -> None:
    from sshmonitord.store.fleet.bansync import BanSync
    from sshmonitord.store.fleet.replicator import Replicator

    stores: dict[int, Store] = {}
    reps: dict[int, Replicator] = {}
    syncs: dict[int, BanSync] = {}
    received: list[tuple[str, float]] = []
    for h in ids:
        st = Store(base / f"h{h}")
        st.open()
        outbox.enable(st.conn, True)
        stores[h] = st
        for k in range(0, backlog, 1000):  # an outage's backlog, written before shipping
            with st.transaction():
                st.add_events(make_events(h, min(1000, backlog - k), k))
        reps[h] = Replicator(st.path, urls[h], f"h{h}", "bench")
    drain_start = time.monotonic()
    for h in ids:
        await reps[h].start()
    drained = None
    if backlog:
        while any(r.confirmed < backlog for r in reps.values()):
            await asyncio.sleep(0.05)
        drained = time.monotonic() - drain_start
    for h in ids:

        async def on_entries(entries: list[Any], h: int = h) -> None:
            t = time.time()
            for e in entries:
                if e.action == "ban":
                    received.append((e.net, t))

        async def on_reconcile(_state: Any) -> dict[str, list[str]]:
            return {}

        syncs[h] = BanSync(urls[h], f"h{h}", on_entries, on_reconcile, period=3600)
        await syncs[h].start()
    await asyncio.sleep(1.0)  # every follower listening before the first ban
    per_tick = rate / 10
    written = 0
    bans: dict[str, float] = {}
    start = time.monotonic()
    next_ban = start + ban_every
    k = 0
    carry = 0.0
    while time.monotonic() - start < seconds:
        tick = time.monotonic()
        carry += per_tick
        n = int(carry)
        carry -= n
        for h, st in stores.items():
            if n:
                with st.transaction():
                    st.add_events(make_events(h, n, k))
                written += n
            reps[h].wake()
        k += n
        if tick >= next_ban and ban_hosts & set(ids):
            h = min(ban_hosts & set(ids))
            net = f"192.0.{k % 250}.{len(bans) % 250 + 1}/32"
            now = time.time()
            with stores[h].transaction():
                bans_store.insert(stores[h].conn, net, "bruteforce", "bench", 1, now,
                                  now + 600, False, None)
            bans[net] = now
            next_ban += ban_every
        await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
    elapsed = time.monotonic() - start
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(r.stats.backlog for r in reps.values()):
        await asyncio.sleep(0.2)
    await asyncio.sleep(2.0)  # late notifications
    left = sum(r.stats.backlog for r in reps.values())
    for s in syncs.values():
        await s.stop()
    for r in reps.values():
        await r.stop(drain=0)
    out.put(
        {
            "written": written,
            "elapsed": elapsed,
            "backlog_end": left,
            "drained": drained,
            "bans": bans,
            "received": received,
        }
    )


def worker(ids: list[int], urls: dict[int, str], base: str, args: Any, q: Any,
           ban_hosts: set[int]) -> None:
    from sshmonitord import log

    log.setup("warning", "console")  # the replicators' "connected" lines, 50 times, say nothing
    asyncio.run(run_hosts(ids, urls, Path(base), args.rate, args.seconds, args.ban_every,
                          ban_hosts, q, args.backlog))


def start_daemons(server: Any, db: str, n: int, base: Path) -> list[dict[str, Any]]:
    """``n`` real sshmonitord processes in the fleet, each following an empty log of its
    own, with the command backend writing "address time" for each ban to a file."""
    import subprocess

    import psycopg

    out = []
    for i in range(n):
        host = f"daemon{i}"
        role = unique_name(f"sshm_{host}")
        with psycopg.connect(server.url(db=db), autocommit=True) as conn:
            conn.execute(fs.host_role_sql(host, role))
        d = base / host
        d.mkdir()
        (d / "auth.log").touch()
        fw = d / "firewall.txt"
        (d / "c.yaml").write_text(
            f"control: {{socket: {d}/control.sock}}\n"
            f"sources: {{mode: file, files: [{d}/auth.log]}}\n"
            "response:\n  backend: command\n"
            f"  ban_command: [/bin/sh, -c, 'echo {{ip}} $(date +%s.%N) >> {fw}']\n"
            "  unban_command: [/bin/true]\n"
            f"fleet: {{database: \"{server.url(role=role, db=db)}\", host: {host}}}\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "sshmonitord", "--config", str(d / "c.yaml"),
             "--state-dir", str(d / "state"), "--log-format", "console"],
            stdout=open(d / "log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
        )
        out.append({"host": host, "proc": proc, "fw": fw, "dir": d})
    deadline = time.monotonic() + 30
    for dd in out:
        while b"fleet database connected" not in (dd["dir"] / "log").read_bytes():
            if time.monotonic() > deadline:
                raise SystemExit(f"{dd['host']} did not connect: {(dd['dir'] / 'log').read_text()}")
            time.sleep(0.1)
    return out


def stop_daemons(daemons: list[dict[str, Any]]) -> float | None:
    """Stop them; the CPU seconds each used, on average."""
    cpu = []
    for d in daemons:
        try:
            with open(f"/proc/{d['proc'].pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            cpu.append((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
        except OSError:
            pass
        d["proc"].terminate()
        d["proc"].wait(timeout=15)
    return round(sum(cpu) / len(cpu), 1) if cpu else None


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy so far (/proc/stat, all CPUs)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--rate", type=float, default=200.0, help="events/s per host")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--procs", type=int, default=2, help="processes the hosts are split over")
    ap.add_argument("--ban-every", type=float, default=1.0, help="seconds between bans")
    ap.add_argument(
        "--backlog", type=int, default=0, metavar="N",
        help="first ship N events per host written while the database was away, and time it",
    )
    ap.add_argument(
        "--daemons", type=int, default=3, metavar="N",
        help="also run N real sshmonitord in the fleet, timing bans to their firewall command",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    # Each host holds 3-4 connections (replicator, ban log listener and reader, leader):
    # PostgreSQL's default of 100 fits ~25 hosts (docs/fleet.md, "Capacity").
    server = PgServer(options=f"-c max_connections={max(100, 5 * args.hosts + 20)}")
    server.start()
    tmp = tempfile.mkdtemp(prefix="sshm-fleet-bench-")
    try:
        db = unique_name("bench")
        server.create_database(db)
        import psycopg

        urls: dict[int, str] = {}
        with psycopg.connect(server.url(db=db), autocommit=True) as conn:
            fs.migrate(conn)
            for h in range(args.hosts):
                role = unique_name(f"sshm_h{h}")
                conn.execute(fs.host_role_sql(f"h{h}", role))
                urls[h] = server.url(role=role, db=db)
        daemons = start_daemons(server, db, args.daemons, Path(tmp)) if args.daemons else []
        groups = [list(range(args.hosts))[i :: args.procs] for i in range(args.procs)]
        ban_hosts = {0}
        q: Any = mp.get_context("spawn").Queue()
        procs = [
            mp.get_context("spawn").Process(
                target=worker, args=(g, urls, tmp, args, q, ban_hosts)
            )
            for g in groups
            if g
        ]
        t0 = time.monotonic()
        busy0 = machine_busy()
        for p in procs:
            p.start()
        results = [q.get() for _ in procs]
        for p in procs:
            p.join()
        wall = time.monotonic() - t0
        busy = machine_busy() - busy0
        # Before the daemons are reaped: children's usage then counts the worker processes
        # (the simulated hosts) and initdb/pg_ctl (~0), not the daemons.
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        hosts_cpu = ru.ru_utime + ru.ru_stime
        daemon_cpu = stop_daemons(daemons)
        pg_cpu = busy - hosts_cpu - (daemon_cpu or 0.0) * len(daemons)
        with psycopg.connect(server.url(db=db), autocommit=True) as conn:
            stored = conn.execute("SELECT count(*) FROM sshmonitor.events").fetchone()[0]
            size = conn.execute(
                "SELECT pg_total_relation_size('sshmonitor.events')"
            ).fetchone()[0]
            span = conn.execute(
                "SELECT extract(epoch FROM max(received) - min(received)) FROM sshmonitor.events"
            ).fetchone()[0]
        written = sum(r["written"] for r in results)
        drain = max((r["drained"] or 0.0) for r in results)
        elapsed = max(r["elapsed"] for r in results)
        bans: dict[str, float] = {}
        for r in results:
            bans.update(r["bans"])
        lat = [t - bans[net] for r in results for net, t in r["received"] if net in bans]
        expected = len(bans) * (args.hosts - 1)
        # The real daemons: from the ban's commit on the simulated host to the daemon's
        # firewall command (the command backend appends "net time" to a file).
        dlat: list[float] = []
        for d in daemons:
            for line in d["fw"].read_text().splitlines() if d["fw"].exists() else []:
                ip, t = line.split()
                net = f"{ip}/32"
                if net in bans:
                    dlat.append(float(t) - bans[net])
        out = {
            "hosts": args.hosts,
            "rate_per_host": args.rate,
            "seconds": args.seconds,
            "procs": args.procs,
            "events_written": written,
            "events_stored": int(stored),
            "offered_events_per_s": round(written / elapsed),
            "stored_events_per_s": round(int(stored) / float(span or elapsed)),
            "backlog_at_end": sum(r["backlog_end"] for r in results),
            "bans": len(bans),
            "ban_deliveries": len(lat),
            "ban_deliveries_expected": expected,
            "propagation_ms": {
                "p50": round(1000 * pct(lat, 50)),
                "p95": round(1000 * pct(lat, 95)),
                "p99": round(1000 * pct(lat, 99)),
                "max": round(1000 * max(lat)) if lat else None,
                "mean": round(1000 * statistics.fmean(lat)) if lat else None,
            },
            "backlog_per_host": args.backlog,
            "backlog_drain_seconds": round(drain, 2) if args.backlog else None,
            "backlog_drain_events_per_s": round(args.backlog * args.hosts / drain)
            if args.backlog and drain
            else None,
            "daemons": args.daemons,
            "daemon_ban_deliveries": len(dlat),
            "daemon_ban_deliveries_expected": len(bans) * args.daemons,
            "daemon_propagation_ms": {
                "p50": round(1000 * pct(dlat, 50)) if dlat else None,
                "p99": round(1000 * pct(dlat, 99)) if dlat else None,
                "max": round(1000 * max(dlat)) if dlat else None,
            },
            "daemon_cpu_seconds": daemon_cpu,
            "bytes_per_million_events": round(size / max(1, int(stored)) * 1_000_000),
            "wall_seconds": round(wall, 1),
            "cpu_seconds_machine": round(busy, 1),
            "cpu_seconds_simulated_hosts": round(hosts_cpu, 1),
            # Everything else busy on the machine meanwhile: PostgreSQL, essentially.
            "cpu_seconds_postgresql": round(pg_cpu, 1),
            "postgresql_cpu_us_per_event": round(1e6 * pg_cpu / max(1, int(stored)), 1),
            "cpus": os.cpu_count(),
        }
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            print(f"hosts {args.hosts} x {args.rate:g} events/s for {args.seconds:g} s "
                  f"({args.procs} processes, {os.cpu_count()} CPUs, PostgreSQL on this machine)")
            print(f"  events: written {written:,}, stored in PostgreSQL {int(stored):,}; "
                  f"offered {out['offered_events_per_s']:,}/s, stored "
                  f"{out['stored_events_per_s']:,}/s; backlog at end {out['backlog_at_end']}")
            if args.backlog:
                print(f"  backlog: {args.backlog:,} events per host shipped in "
                      f"{drain:.1f} s = {out['backlog_drain_events_per_s']:,} events/s "
                      f"into PostgreSQL ({args.hosts} replicators at once, nothing else writing)")
            p = out["propagation_ms"]
            print(f"  ban propagation ({len(lat)}/{expected} deliveries): p50 {p['p50']} ms, "
                  f"p95 {p['p95']} ms, p99 {p['p99']} ms, max {p['max']} ms")
            if args.daemons:
                dp = out["daemon_propagation_ms"]
                print(f"  {args.daemons} real sshmonitord ({len(dlat)}/{len(bans) * args.daemons} "
                      f"bans in their firewall command): p50 {dp['p50']} ms, p99 {dp['p99']} ms, "
                      f"max {dp['max']} ms; CPU {daemon_cpu} s each")
            print(f"  CPU: machine {busy:.0f} s busy of {wall * (os.cpu_count() or 1):.0f}; "
                  f"simulated hosts {hosts_cpu:.0f} s; PostgreSQL (the rest) "
                  f"{pg_cpu:.0f} s = {out['postgresql_cpu_us_per_event']} us per event "
                  f"stored, i.e. one core sustains "
                  f"~{1e6 / max(1.0, out['postgresql_cpu_us_per_event']):,.0f} events/s")
            print(f"  PostgreSQL events table + indexes: "
                  f"{out['bytes_per_million_events'] / 1e6:.0f} MB per million events")
        return 0
    finally:
        server.cleanup()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
