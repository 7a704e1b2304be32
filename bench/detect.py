#!/usr/bin/env python3
"""Detection engine benchmark: throughput of ``Engine.feed`` and its memory under a botnet.

    bench/detect.py [--events 1000000] [--addresses 1000000] [--low-max-keys 200000]
                    [--scenarios mix,flood,flood-low] [--seed 1] [--no-gc] [--json]

Scenarios (each runs in a fresh Python process, so one's peak RSS is not in another's):

- ``mix``: a realistic stream of ``--events`` events (~26 h of event time for 1M, about 10
  a second): a few noisy attackers (IPv4, and IPv6 rotating inside their /64), a pool of slow
  attackers, many one-shot addresses (scanners, single invalid-user attempts), PAM
  restatements and ``[preauth]`` follow-ups on the same connection, legitimate users'
  successes (publickey and password, rarely after a typo), and non-scoring session lines.
  Nobody is banned in this stream, so noisy attackers keep re-firing bruteforce.
- ``flood``: ``--addresses`` distinct attacking addresses (90 % IPv4, 10 % IPv6 each in its own
  /64), one event each (Failed password 60 %, Invalid user 25 %, a ``[preauth]`` disconnect
  15 %), all within 600 s of event time: inside one bruteforce window, so nothing expires.
  The default ``detection.max_keys`` (1,000,000).
- ``flood-low``: the same flood with ``max_keys`` = ``--low-max-keys``: eviction must bound
  the memory.

Events: the benchmark writes the lines as rsyslog would and turns them into Events with the
daemon's own ``Parser``, ``--chunk`` at a time (5000, the tailer's slice), so they are what
the daemon feeds (per-line strings, shared per-second timestamps: it matters for the evidence
the engine keeps). Only the ``feed`` loop over a chunk is timed; building is timed apart.
Garbage collection stays enabled, as in the daemon; its time inside the timed loop and its
longest single collection are reported (part of engine time); ``--no-gc`` shows its share.

Memory: ``VmRSS`` (``/proc/self/status``) after the imports and before the engine exists, and
after the last event; ``VmHWM`` and ``ru_maxrss`` (peak, this whole process: interpreter,
imports, the parser's address cache, the chunk in flight). "RSS growth B/address" is (RSS
after - RSS before) / tracked addresses; "held B/address" is a ``sys.getsizeof`` walk of the
engine's structures (evidence Events with their strings, dict tables, keys, floats) / tracked
addresses, and the per-structure walk is printed too.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import ipaddress
import json
import os
import random
import resource
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"

try:
    from sshmonitord import config
    from sshmonitord.detect.engine import Engine, History
    from sshmonitord.events import Event
    from sshmonitord.parse import Parser
    from sshmonitord.parse.sshd import addr as addr_cache
except ImportError:  # run with a python that lacks the package: use the repo's venv
    if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != VENV_PYTHON.parent.parent.resolve():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])
    raise

SCRIPT = str(Path(__file__).resolve())
SCENARIOS = ("mix", "flood", "flood-low")
T0 = datetime(2026, 11, 16, tzinfo=UTC).timestamp()
HOST = "web1"
PROG = "sshd"
STAMP_CACHE: dict[int, str] = {}
sizeof = sys.getsizeof
ATTACK_USERS = (
    "root", "admin", "test", "user", "ubuntu", "oracle", "postgres", "git", "ftpuser", "pi",
    "guest", "support", "deploy", "jenkins", "hadoop", "minecraft", "steam", "www", "dev",
    "vagrant",
)  # fmt: skip
LEGIT_USERS = tuple(f"staff{i:02d}" for i in range(30))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------ memory probes


def proc_status() -> dict[str, int]:
    """VmRSS / VmHWM of this process in bytes."""
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


class GcTimer:
    """Seconds the cyclic collector ran, split by what the process was doing (a phase)."""

    def __init__(self) -> None:
        self.phase = "other"
        self.seconds: Counter[str] = Counter()
        self.collections: Counter[str] = Counter()
        self.longest: dict[str, float] = {}  # "phase:genN" -> longest single collection, s
        self._start = 0.0
        gc.callbacks.append(self._cb)

    def _cb(self, what: str, info: dict[str, Any]) -> None:
        if what == "start":
            self._start = time.perf_counter()
        else:
            took = time.perf_counter() - self._start
            key = f"{self.phase}:gen{info['generation']}"
            self.seconds[self.phase] += took
            self.collections[key] += 1
            self.longest[key] = max(self.longest.get(key, 0.0), took)

    def close(self) -> None:
        gc.callbacks.remove(self._cb)


# ------------------------------------------------------------------------ building events


def stamp(t: float) -> str:
    """The classic syslog stamp of epoch t (cached per second)."""
    s = int(t)
    v = STAMP_CACHE.get(s)
    if v is None:
        if len(STAMP_CACHE) > 4096:
            STAMP_CACHE.clear()
        v = STAMP_CACHE[s] = datetime.fromtimestamp(s, UTC).strftime("%b %d %H:%M:%S")
    return v


class Lines:
    """sshd's log lines as rsyslog writes them (classic format), one connection at a time."""

    def __init__(self) -> None:
        self.pid = 10_000

    def new_pid(self) -> int:
        self.pid += 1
        if self.pid > 4_000_000:
            self.pid = 10_000
        return self.pid

    @staticmethod
    def line(t: float, pid: int, msg: str) -> str:
        return f"{stamp(t)} {HOST} {PROG}[{pid}]: {msg}"

    def failed_password(self, t: float, pid: int, user: str, ip: Any, port: int) -> str:
        return self.line(t, pid, f"Failed password for {user} from {ip} port {port} ssh2")

    def invalid_user(self, t: float, pid: int, user: str, ip: Any, port: int) -> str:
        return self.line(t, pid, f"Invalid user {user} from {ip} port {port}")

    def failed_invalid(self, t: float, pid: int, user: str, ip: Any, port: int) -> str:
        msg = f"Failed password for invalid user {user} from {ip} port {port} ssh2"
        return self.line(t, pid, msg)

    def pam_failure(self, t: float, pid: int, user: str, ip: Any) -> str:
        return self.line(
            t, pid,
            "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh "
            f"ruser= rhost={ip}  user={user}",
        )  # fmt: skip

    def preauth(self, t: float, pid: int, user: str | None, ip: Any, port: int) -> str:
        who = f"authenticating user {user} " if user else ""
        return self.line(t, pid, f"Connection closed by {who}{ip} port {port} [preauth]")

    def accepted(self, t: float, pid: int, user: str, ip: Any, port: int, fp: str | None) -> str:
        if fp:
            msg = f"Accepted publickey for {user} from {ip} port {port} ssh2: ED25519 {fp}"
        else:
            msg = f"Accepted password for {user} from {ip} port {port} ssh2"
        return self.line(t, pid, msg)

    def session(self, t: float, pid: int, opened: bool, user: str) -> str:
        if opened:
            msg = f"pam_unix(sshd:session): session opened for user {user}(uid=1000) by (uid=0)"
        else:
            msg = f"pam_unix(sshd:session): session closed for user {user}"
        return self.line(t, pid, msg)


def mix_lines(n: int, seed: int) -> Iterator[str]:
    """About ``n`` lines of a realistic day and a bit (every one becomes an event)."""
    rng = random.Random(seed)
    b = Lines()
    v4 = ipaddress.IPv4Address
    v6 = ipaddress.IPv6Address
    noisy4 = [v4(rng.getrandbits(32)) for _ in range(12)]
    noisy6 = [(0x2A0E_0000 << 96) | (rng.getrandbits(32) << 64) for _ in range(3)]  # /64 bases
    slow = [v4(rng.getrandbits(32)) for _ in range(2000)]
    legit: list[tuple[str, list[Any], str | None]] = []
    for u in LEGIT_USERS:
        homes = [v4(rng.getrandbits(32)) for _ in range(rng.randint(1, 3))]
        fp = f"SHA256:{rng.getrandbits(256):064x}"[:50] if rng.random() < 0.7 else None
        legit.append((u, homes, fp))
    # A bundle is one connection (or a login with its session). A typo is rare: ~1 in 1000
    # logins, i.e. about one a day per user at this rate.
    kinds = ("noisy", "noisy6", "slow", "oneshot_scan", "oneshot_invalid", "legit", "typo")
    weights = (38, 6, 14, 14, 12, 12, 0.012)
    t = T0
    emitted = 0
    while emitted < n:
        t += rng.expovariate(10.0) * 2  # ~2 lines per bundle at 10 lines/s
        kind = rng.choices(kinds, weights)[0]
        pid = b.new_pid()
        port = rng.randint(1024, 65000)
        out: list[str] = []
        if kind in ("noisy", "noisy6", "slow"):
            if kind == "noisy":
                ip: Any = rng.choice(noisy4)
            elif kind == "noisy6":
                ip = v6(rng.choice(noisy6) | rng.getrandbits(64))
            else:
                ip = rng.choice(slow)
            user = rng.choice(ATTACK_USERS)
            if user == "root" or rng.random() < 0.3:
                if rng.random() < 0.25:  # UsePAM yes: PAM restates the failure first
                    out.append(b.pam_failure(t, pid, user, ip))
                out.append(b.failed_password(t, pid, user, ip, port))
            else:
                out.append(b.invalid_user(t, pid, user, ip, port))
                out.append(b.failed_invalid(t + 0.1, pid, user, ip, port))
            if rng.random() < 0.5:
                out.append(b.preauth(t + 0.2, pid, user, ip, port))
        elif kind == "oneshot_scan":
            out.append(b.preauth(t, pid, None, v4(rng.getrandbits(32)), port))
        elif kind == "oneshot_invalid":
            ip = v4(rng.getrandbits(32))
            user = rng.choice(ATTACK_USERS)
            out.append(b.invalid_user(t, pid, user, ip, port))
            out.append(b.failed_invalid(t + 0.1, pid, user, ip, port))
        else:
            user, homes, fp = rng.choice(legit)
            ip = rng.choice(homes) if rng.random() < 0.98 else v4(rng.getrandbits(32))
            if kind == "typo":
                out.append(b.failed_password(t, pid, user, ip, port))
                pid = b.new_pid()
                out.append(b.accepted(t + 5, pid, user, ip, port + 1, None))
            else:
                out.append(b.accepted(t, pid, user, ip, port, fp))
            out.append(b.session(t + 0.1, pid, True, user))
            out.append(b.session(t + 65, pid, False, user))
        emitted += len(out)
        yield from out


def flood_lines(addresses: int, seed: int) -> Iterator[str]:
    """``addresses`` distinct attacking addresses, one line each, within 600 s."""
    rng = random.Random(seed)
    b = Lines()
    v4 = ipaddress.IPv4Address
    v6 = ipaddress.IPv6Address
    a = (rng.getrandbits(31) << 1) | 1  # odd: i -> a*i + c is a bijection mod 2^32
    c = rng.getrandbits(32)
    base6 = 0x2A0E_0000 << 96
    step = 600.0 / max(1, addresses)
    for i in range(addresses):
        t = T0 + i * step
        ip: Any = v6(base6 | (i << 64) | 0x1234) if i % 10 == 9 else v4((a * i + c) & 0xFFFFFFFF)
        pid = b.new_pid()
        port = 1024 + (i * 7) % 64000
        r = rng.random()
        user = ATTACK_USERS[i % len(ATTACK_USERS)]
        if r < 0.60:
            yield b.failed_password(t, pid, user, ip, port)
        elif r < 0.85:
            yield b.invalid_user(t, pid, user, ip, port)
        else:
            yield b.preauth(t, pid, None, ip, port)


def event_chunks(lines: Iterator[str], parser: Parser, chunk: int) -> Iterator[list[Event]]:
    """The lines through the daemon's own parser, ``chunk`` events at a time."""
    parse = parser.parse_text
    out: list[Event] = []
    for text in lines:
        ev = parse(text)
        if ev is None:
            continue
        out.append(ev)
        if len(out) >= chunk:
            yield out
            out = []
    if out:
        yield out


# ------------------------------------------------------------------------ one scenario


def engine_sizes(e: Engine) -> dict[str, int]:
    return {
        "by_ip": len(e.by_ip),
        "evidence": len(e.evidence),
        "by_ip_user": len(e.by_ip_user),
        "by_ip_scan": len(e.by_ip_scan),
        "by_user": len(e.by_user),
        "users_per_ip": len(e.users_per_ip),
        "ips_per_user": len(e.ips_per_user),
        "counted_sessions": len(e.counted_sessions),
        "invalid_sessions": len(e.invalid_sessions),
        "fired": len(e.fired),
        "authenticated": len(e.authenticated),
    }


def _event_bytes(ev: Event, seen_ts: set[int]) -> int:
    """What one Event held as evidence costs: the Event and what only it refers to (the
    parser builds new strings, a new detail dict and new ints per line; timestamps are shared
    per second by the parser's cache, so each datetime is counted once)."""
    n = sizeof(ev)
    i = id(ev.ts)
    if i not in seen_ts:
        seen_ts.add(i)
        n += sizeof(ev.ts)
    for v in (ev.host, ev.program, ev.user, ev.method, ev.key_fp, ev.session, ev.raw):
        if v is not None:
            n += sizeof(v)
    if ev.ip is not None:
        n += sizeof(ev.ip) + sizeof(ev.ip._ip)
    if ev.port is not None and ev.port > 256:
        n += sizeof(ev.port)
    if ev.pid is not None and ev.pid > 256:
        n += sizeof(ev.pid)
    return n + sizeof(ev.detail)


def _window_bytes(data: dict[Any, Any]) -> int:
    n = sizeof(data)
    for k, v in data.items():
        n += sizeof(k)
        if isinstance(v, list | dict):  # timestamps; DistinctCounter: item -> float
            n += sizeof(v) + 24 * len(v)
        else:
            n += sizeof(v)
    return n


def deep_sizes(e: Engine) -> dict[str, int]:
    """Bytes held by each of the engine's structures (sys.getsizeof, walked by hand)."""
    seen_ts: set[int] = set()
    ev_bytes = sizeof(e.evidence)
    for dq in e.evidence.values():
        ev_bytes += sizeof(dq)
        for ev in dq:
            ev_bytes += _event_bytes(ev, seen_ts)
    sessions = 0
    for d in (e.counted_sessions, e.invalid_sessions, e.fired):
        sessions += sizeof(d) + sum(sizeof(k) + 24 for k in d)
    return {
        "evidence": ev_bytes,
        "by_ip": _window_bytes(e.by_ip.data),
        "by_ip_user": _window_bytes(e.by_ip_user.data),
        "by_ip_scan": _window_bytes(e.by_ip_scan.data),
        "by_user": _window_bytes(e.by_user.data),
        "users_per_ip": _window_bytes(e.users_per_ip.data),
        "ips_per_user": _window_bytes(e.ips_per_user.data),
        "sessions+fired": sessions,
        "authenticated": sizeof(e.authenticated) + 32 * len(e.authenticated),
    }


def run_scenario(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Runs in the child process: build, feed, measure."""
    max_keys = args.low_max_keys if name == "flood-low" else args.max_keys
    cfg = config.DetectionConfig(max_keys=max_keys)
    span = args.events / 10 * 1.5 if name == "mix" else 600
    parser = Parser(zone=UTC, reference=datetime.fromtimestamp(T0 + span + 86400, UTC))
    lines = (
        mix_lines(args.events, args.seed)
        if name == "mix"
        else flood_lines(args.addresses, args.seed)
    )
    gen = event_chunks(lines, parser, args.chunk)
    gc.collect()
    if args.no_gc:
        gc.disable()
    else:
        from sshmonitord.cli import tune_gc

        tune_gc()  # the daemon's collector settings, so the figures are the daemon's
    before = proc_status()
    gct = GcTimer()
    engine = Engine(cfg, History(), zone=UTC)
    feed = engine.feed
    rules: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    n = 0
    t_gen = t_feed = 0.0
    started = time.perf_counter()
    first_ts = last_ts = None
    while True:
        gct.phase = "build"
        t1 = time.perf_counter()
        chunk = next(gen, None)
        t2 = time.perf_counter()
        t_gen += t2 - t1
        if chunk is None:
            break
        gct.phase = "feed"
        found: list[Any] = []
        t1 = time.perf_counter()
        for ev in chunk:
            r = feed(ev)
            if r:
                found.extend(r)
        t_feed += time.perf_counter() - t1
        gct.phase = "other"
        n += len(chunk)
        kinds.update(ev.kind.value for ev in chunk)
        first_ts = first_ts or chunk[0].ts
        last_ts = chunk[-1].ts
        for f in found:
            rules[f.rule] += 1
        del chunk, found
        if args.progress and n % (args.chunk * 25) == 0:
            log(f"  {name}: {n:,} events, {time.perf_counter() - started:.0f} s")
    gct.close()
    after = proc_status()
    hwm = maxrss()
    stats = engine.stats()
    tracked = stats["tracked_addresses"]
    grown = after["VmRSS"] - before["VmRSS"]
    t1 = time.perf_counter()
    held = deep_sizes(engine)
    cache = addr_cache.cache_info()
    return {
        "scenario": name,
        "max_keys": max_keys,
        "gc_enabled": not args.no_gc,
        "events": n,
        "lines": parser.stats.lines,
        "kinds": dict(kinds),
        "event_time_span_s": (last_ts - first_ts).total_seconds() if first_ts and last_ts else 0,
        "feed_seconds": t_feed,
        "events_per_s": n / t_feed if t_feed else 0.0,
        "us_per_event": t_feed / n * 1e6 if n else 0.0,
        "build_seconds": t_gen,
        "gc_seconds_feed": gct.seconds["feed"],
        "gc_seconds_build": gct.seconds["build"],
        "gc_collections": dict(gct.collections),
        "gc_longest_s": gct.longest,
        "findings": dict(rules),
        "stats": stats,
        "sizes": engine_sizes(engine),
        "rss_before": before["VmRSS"],
        "rss_after": after["VmRSS"],
        "vmhwm": after["VmHWM"],
        "ru_maxrss": hwm,
        "rss_growth_per_address": grown / tracked if tracked else None,
        "held_bytes": held,
        "held_total": sum(held.values()),
        "held_per_address": sum(held.values()) / tracked if tracked else None,
        "evidence_per_address": held["evidence"] / tracked if tracked else None,
        "parser_addr_cache_entries": cache.currsize,
        "accounting_seconds": time.perf_counter() - t1,
    }


# ------------------------------------------------------------------------ driver


def run_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    argv = [
        sys.executable, SCRIPT, "--child", name,
        "--events", str(args.events), "--addresses", str(args.addresses),
        "--max-keys", str(args.max_keys), "--low-max-keys", str(args.low_max_keys),
        "--seed", str(args.seed), "--chunk", str(args.chunk),
    ]  # fmt: skip
    if args.progress:
        argv.append("--progress")
    if args.no_gc:
        argv.append("--no-gc")
    t = time.perf_counter()
    res = subprocess.run(argv, stdout=subprocess.PIPE, text=True, timeout=args.timeout)
    if res.returncode != 0:
        raise SystemExit(f"scenario {name} failed (exit {res.returncode})")
    out: dict[str, Any] = json.loads(res.stdout)
    out["wall_seconds"] = time.perf_counter() - t
    return out


def mb(x: float | None) -> str:
    return "-" if x is None else f"{x / 1e6:,.1f}"


def longest_gc(r: dict[str, Any]) -> float:
    return max((v for k, v in r["gc_longest_s"].items() if k.startswith("feed:")), default=0.0)


def per(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def table(results: list[dict[str, Any]], target_mb: float) -> str:
    head = (
        "| scenario | max_keys | events | events/s | us/event | GC s in feed | longest GC ms "
        "| build s | tracked | evicted | expired | findings | RSS before MB | RSS after MB "
        "| VmHWM MB | ru_maxrss MB | RSS growth B/address | held B/address |"
    )
    lines = [head, "|---|" + "---:|" * (head.count("|") - 2)]
    for r in results:
        s = r["stats"]
        lines.append(
            f"| {r['scenario']} | {r['max_keys']:,} | {r['events']:,} | {r['events_per_s']:,.0f} "
            f"| {r['us_per_event']:.2f} | {r['gc_seconds_feed']:.2f} "
            f"| {longest_gc(r) * 1000:.0f} | {r['build_seconds']:.1f} "
            f"| {s['tracked_addresses']:,} | {s['evicted_addresses']:,} "
            f"| {s['expired_addresses']:,} | {sum(r['findings'].values()):,} "
            f"| {mb(r['rss_before'])} | {mb(r['rss_after'])} | {mb(r['vmhwm'])} "
            f"| {mb(r['ru_maxrss'])} | {per(r['rss_growth_per_address'])} "
            f"| {per(r['held_per_address'])} |"
        )
    if not results:
        return "\n".join(lines)
    lines += ["", "Entries in the engine's structures at the end:", ""]
    keys = list(results[0]["sizes"])
    lines.append("| scenario | " + " | ".join(keys) + " |")
    lines.append("|---|" + "---:|" * len(keys))
    for r in results:
        lines.append(
            f"| {r['scenario']} | " + " | ".join(f"{r['sizes'][k]:,}" for k in keys) + " |"
        )
    lines += ["", "MB each structure holds (sys.getsizeof walk; evidence = the Events kept):", ""]
    hkeys = list(results[0]["held_bytes"])
    lines.append("| scenario | " + " | ".join(hkeys) + " | total | evidence B/address |")
    lines.append("|---|" + "---:|" * (len(hkeys) + 2))
    for r in results:
        h = r["held_bytes"]
        lines.append(
            f"| {r['scenario']} | "
            + " | ".join(mb(h[k]) for k in hkeys)
            + f" | {mb(r['held_total'])} | {per(r['evidence_per_address'])} |"
        )
    lines.append("")
    for r in results:
        if r["scenario"].startswith("flood"):
            ok = r["vmhwm"] < target_mb * 1e6
            lines.append(
                f"{r['scenario']}: peak RSS (VmHWM) {mb(r['vmhwm'])} MB with "
                f"{r['events']:,} distinct addresses in {r['event_time_span_s']:.0f} s of event "
                f"time (max_keys {r['max_keys']:,}): "
                f"{'within' if ok else 'OVER'} the {target_mb:.0f} MB target"
            )
        if r["findings"]:
            lines.append(f"{r['scenario']}: findings by rule {r['findings']}")
        lines.append(f"{r['scenario']}: events by kind {r['kinds']}")
    return "\n".join(lines)


def source_digest() -> str:
    """Which detection code was measured (others edit it): sha256 of detect/*.py, 12 hex."""
    h = hashlib.sha256()
    for f in sorted((ROOT / "sshmonitord" / "detect").glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:12]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Throughput and memory of the detection engine (Engine.feed).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--events", type=int, default=1_000_000, help="events in the mix scenario")
    p.add_argument(
        "--addresses", type=int, default=1_000_000, help="distinct addresses in the floods"
    )
    p.add_argument("--max-keys", type=int, default=config.DetectionConfig().max_keys,
                   help="detection.max_keys for mix and flood")  # fmt: skip
    p.add_argument("--low-max-keys", type=int, default=200_000, help="max_keys for flood-low")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--chunk",
        type=int,
        default=5000,
        help="events built per batch (the tailer reads 5000 lines per slice)",
    )
    p.add_argument("--target-mb", type=float, default=300.0, help="RSS target for the flood")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per scenario at most")
    p.add_argument(
        "--no-gc",
        action="store_true",
        help="gc.disable() in the scenario processes (shows the collector's share)",
    )
    p.add_argument("--progress", action="store_true", help="progress lines on stderr")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--json-out", metavar="FILE", help="also write the JSON document here")
    p.add_argument("--child", choices=SCENARIOS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("events", "addresses", "max_keys", "low_max_keys", "chunk"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.events > 50_000_000 or args.addresses > 50_000_000:
        p.error("at most 50,000,000 events / addresses")
    if args.child:
        print(json.dumps(run_scenario(args.child, args)))
        return 0
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    bad = [s for s in wanted if s not in SCENARIOS]
    if bad:
        p.error(f"unknown scenario(s) {bad}; choose from {SCENARIOS}")
    load = os.getloadavg()
    results = []
    for name in wanted:
        log(f"running {name} ...")
        r = run_child(name, args)
        log(
            f"  {name}: {r['events']:,} events, {r['events_per_s']:,.0f} events/s, "
            f"VmHWM {mb(r['vmhwm'])} MB ({r['wall_seconds']:.0f} s)"
        )
        results.append(r)
    doc = {
        "engine_sources_sha256": source_digest(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "loadavg_start": load,
        "args": {k: v for k, v in vars(args).items() if k not in ("child", "json")},
        "results": results,
    }
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(doc, indent=2) + "\n")
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(table(results, args.target_mb))
        print(
            f"(sshmonitord/detect/*.py sha256 {doc['engine_sources_sha256']}, Python "
            f"{doc['python']}, {doc['cpu_count']} CPUs, load {load[0]:.2f} at start)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
