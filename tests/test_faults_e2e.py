"""The real daemon under real faults (issue #11 items 3, 4, 5, 8).

* a full disk under the state directory (a small tmpfs filled to ENOSPC) while 200 addresses
  attack: bans land in nftables (inside a namespace of the test's own) while nothing can be
  stored; once space is back every held line is stored exactly once, in order, with its
  findings and ban rows, and the file position catches up (item 4);
* the same, killed with SIGKILL while lines are held: a restart re-reads exactly what was not
  stored (item 4);
* another process holding the database's write lock longer than the busy timeout: bans are
  placed meanwhile, alerts are spooled afterwards, no line lost or doubled (items 3, 4);
* a damaged database (random bytes; pages smashed after an unclean shutdown) is moved aside,
  reported once, alerted on, shown by ``status``; the fresh files are 0600 whatever the umask
  and the directory's mode; the history in the log is not alerted on again (items 5, 8).

Nothing is mocked: real mounts, a real nftables ruleset (only inside ``srv``), a real second
SQLite process, real SIGKILL.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonProc, need
from netns import NetnsPair, wait_until

from sshmonitord.pipeline import MAX_UNSTORED_LINES

pytest_plugins = ["netns", "mailservers"]  # netns_pair; http_server (a real webhook receiver)

PER_ADDRESS = 5  # the bruteforce rule's default threshold (config.py BruteforceRule)
UMASK_022 = ["sh", "-c", 'umask 022; exec "$@"', "sh"]


# ------------------------------------------------------------------------- helpers


def attacker(i: int) -> str:
    """The i-th attacker: 198.18.0.0/15 (benchmarking space; exists nowhere here)."""
    return f"198.18.{i // 250}.{i % 250 + 1}"


def failed(ip: str, pid: int, user: str = "root", port: int = 40000) -> str:
    """A classic rsyslog auth.log line, stamped now (local time, as rsyslog writes it)."""
    now = datetime.now()
    return (
        f"{now:%b} {now.day:>2} {now:%H:%M:%S} web1 sshd[{pid}]: Failed password for {user} "
        f"from {ip} port {port} ssh2\n"
    )


def attack_lines(addresses: list[str], per_address: int = PER_ADDRESS) -> list[str]:
    """``per_address`` failures from each address, each on its own connection (pid)."""
    out = []
    for n, ip in enumerate(addresses):
        for k in range(per_address):
            out.append(failed(ip, 10000 + n * per_address + k, port=40000 + k))
    return out


def append(path: Path, lines: list[str]) -> None:
    with open(path, "a") as fh:
        fh.write("".join(lines))
        fh.flush()


def ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)


def q(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = ro(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def host(net: str) -> str:
    """A ban's network as the address it covers (bans are stored as ``a.b.c.d/32``)."""
    return net.removesuffix("/32").removesuffix("/128")


def failures_per_ip(db: Path) -> dict[str, int]:
    return {
        ip: int(n)
        for ip, n in q(
            db, "SELECT ip, SUM(count) FROM events WHERE kind = 'auth_failure' GROUP BY ip"
        )
    }


def event_rows_per_ip(db: Path) -> dict[str, int]:
    return {ip: int(n) for ip, n in q(db, "SELECT ip, COUNT(*) FROM events GROUP BY ip")}


def stored_offset(db: Path, log: Path) -> int | None:
    rows = q(db, "SELECT MAX(offset) FROM file_positions WHERE path = ?", (str(log),))
    return None if not rows or rows[0][0] is None else int(rows[0][0])


def status(d: DaemonProc) -> dict[str, Any]:
    r = d.cli("status", "--json", "--socket", str(d.socket_path))
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def stage(st: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in st["stages"] if s["name"] == name)


_SUBJECT = re.compile(r' finding (?:stage=\S+ )?rule=(\S+) .*?subject=("(?:[^"\\]|\\.)*"|\S+)')


def logged_findings(text: str) -> Counter[tuple[str, str]]:
    """(rule, subject) of every "finding" line the daemon logged."""
    out: Counter[tuple[str, str]] = Counter()
    for m in _SUBJECT.finditer(text):
        subject = m[2]
        out[(m[1], json.loads(subject) if subject.startswith('"') else subject)] += 1
    return out


def error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if re.match(r"^\S+ \S+ ERROR ", ln)]


def poll(pred: Callable[[], bool], timeout: float, step: float = 0.1) -> float | None:
    """Seconds until ``pred`` held, or None after ``timeout`` (bounded)."""
    t0 = time.monotonic()
    return time.monotonic() - t0 if wait_until(pred, timeout, step) else None


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def nft_members(pair: NetnsPair, table: str) -> set[str]:
    """IPv4 addresses in the daemon's nftables set inside ``srv`` (ranges expanded)."""
    import ipaddress

    res = pair.run_in(pair.srv, ["nft", "-j", "list", "set", "inet", table, "banned4"])
    if res.returncode != 0:
        return set()
    out: set[str] = set()
    for obj in json.loads(res.stdout)["nftables"]:
        for e in obj.get("set", {}).get("elem", []) or []:
            v = e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e
            if isinstance(v, dict) and "prefix" in v:
                net = ipaddress.ip_network(f"{v['prefix']['addr']}/{v['prefix']['len']}")
                out.update(str(a) for a in (net if net.num_addresses <= 4096 else []))
            elif isinstance(v, dict) and "range" in v:
                lo, hi = (int(ipaddress.ip_address(x)) for x in v["range"])
                out.update(str(ipaddress.ip_address(a)) for a in range(lo, min(hi, lo + 4096) + 1))
            else:
                out.add(str(v))
    return out


def fill(directory: Path) -> Path:
    """Fill the filesystem under ``directory`` until it says ENOSPC; return the filler."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 16, 4096, 512, 1):
            chunk = b"\0" * size
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
                    break
    finally:
        os.close(fd)
    return filler


def free(filler: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        filler.unlink()


@pytest.fixture
def state_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted as the daemon's state directory (``tmp_path/state``).

    Request it before ``daemon_factory`` so the daemon is killed before the unmount; a lazy
    unmount covers any other order. Always unmounted, pass or fail."""
    need(os.geteuid() == 0, "mounting a tmpfs needs root")
    need(shutil.which("mount") is not None, "mount(8) missing")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", f"smtest-{secrets.token_hex(3)}",
         str(state)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    need(r.returncode == 0, f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield state
    finally:
        if subprocess.run(["umount", str(state)], capture_output=True, timeout=30).returncode:
            subprocess.run(["umount", "-l", str(state)], capture_output=True, timeout=30)


def need_nft() -> None:
    need(shutil.which("nft") is not None, "nftables (nft) is not installed")


def full_disk_config(log: Path, table: str) -> str:
    return (
        f"sources: {{mode: file, files: [{log}], poll_interval: 100ms}}\n"
        f"response: {{backend: nftables, nft_table: {table}, bantime: 600s}}\n"
        "detection: {rules: {success_after_failures: {enabled: false}}}\n"
    )


def start_in_srv(
    daemon_factory: Callable[..., DaemonProc], pair: NetnsPair, cfg: str
) -> DaemonProc:
    d = daemon_factory(cfg, wrap=pair.wrapper(pair.srv))
    d.wait_log("sshmonitord started", timeout=20)
    return d


# ------------------------------------------------------------------------- item 4: disk full



def start_on_empty_log(daemon_factory: Any, tmp_path: Path) -> tuple[Any, Path]:
    """The daemon following a new, empty auth.log (success_after_failures off: these tests
    count bans and rows, not that rule's findings)."""
    log = tmp_path / "auth.log"
    log.write_text("")
    d = daemon_factory(
        f"sources: {{mode: file, files: [{log}], poll_interval: 100ms}}\n"
        "detection: {rules: {success_after_failures: {enabled: false}}}\n"
    )
    d.wait_log("sshmonitord started", timeout=20)
    return d, log

def test_disk_full_bans_anyway_and_stores_everything_once_space_is_back(
    state_tmpfs: Path, netns_pair: NetnsPair, daemon_factory: Any, tmp_path: Path
) -> None:
    need_nft()
    pair = netns_pair
    t_start = time.monotonic()
    log = tmp_path / "auth.log"
    log.write_text("")
    table = f"smf{secrets.token_hex(3)}"
    d = start_in_srv(daemon_factory, pair, full_disk_config(log, table))
    db = state_tmpfs / "sshmonitor.db"

    filler = fill(state_tmpfs)
    addresses = [attacker(i) for i in range(200)]
    lines = attack_lines(addresses)
    t_attack = time.monotonic()
    for k in range(0, len(lines), 100):  # ten writes: several batches to hold, in order
        append(log, lines[k : k + 100])
        time.sleep(0.1)

    # Fail closed: every attacker is in the firewall while nothing can be written.
    took = poll(lambda: set(addresses) <= nft_members(pair, table), 20, step=0.2)
    banned = nft_members(pair, table)
    assert took is not None, (
        f"{len(set(addresses) - banned)} of 200 not banned with the disk full\n"
        + d.log_text()[-4000:]
    )
    print(f"\n200 addresses in nftables {time.monotonic() - t_attack:.2f}s after the first line")
    assert filler.exists()

    # The operator is told: the store's error and the lines held.
    seen: dict[str, Any] = {}

    def store_failing() -> bool:
        st = status(d)
        seen.update(st)
        return bool(st["store"].get("error")) and st["store"].get("unstored_lines", 0) > 0

    assert poll(store_failing, 10, step=0.3) is not None, json.dumps(seen.get("store"))
    pipe = stage(seen, "pipeline")
    assert pipe.get("warnings"), pipe
    assert "lines held in memory" in pipe["warnings"][0], pipe["warnings"]
    held = seen["store"]["unstored_lines"]
    print(f"store while full: {seen['store']}")
    assert 0 < held <= len(lines)
    assert "STORE FAILING" in seen["status"], seen["status"]
    assert (stored_offset(db, log) or 0) < log.stat().st_size  # never past unstored lines

    # Space is back.
    free(filler)
    t_free = time.monotonic()

    def all_stored() -> bool:
        return (
            failures_per_ip(db) == dict.fromkeys(addresses, PER_ADDRESS)
            and stored_offset(db, log) == log.stat().st_size
            and len(q(db, "SELECT 1 FROM bans")) >= 200
        )

    took = poll(all_stored, 45, step=0.3)
    assert took is not None, (
        f"not all stored 45s after space came back: {len(failures_per_ip(db))} addresses, "
        f"offset {stored_offset(db, log)} of {log.stat().st_size}\n" + d.log_text()[-4000:]
    )
    print(f"everything stored {took:.1f}s after space came back")
    # Exactly once: one row per failure line, one ban row per address.
    assert event_rows_per_ip(db) == dict.fromkeys(addresses, PER_ADDRESS)
    assert len(q(db, "SELECT 1 FROM events")) == len(lines)
    bans = {host(n): c for n, c in q(db, "SELECT net, COUNT(*) FROM bans GROUP BY net")}
    assert bans == dict.fromkeys(addresses, 1), bans
    assert {host(r[0]) for r in q(db, "SELECT net FROM bans WHERE active = 1")} == set(addresses)
    # No re-detection: every finding raised once is stored once; none raised twice.
    assert poll(lambda: not status(d)["store"].get("error"), 5) is not None
    stored = Counter((r, s) for r, s in q(db, "SELECT rule, subject FROM findings"))
    raised = logged_findings(d.log_text())
    assert stored == raised, (stored - raised, raised - stored)
    brute = Counter(host(s) for (r, s), n in stored.items() for _ in range(n) if r == "bruteforce")
    assert brute == dict.fromkeys(addresses, 1), brute
    assert stage(status(d), "pipeline")["stats"]["unstored_lines"] == 0
    assert "Traceback" not in d.log_text()
    assert set(addresses) <= nft_members(pair, table)
    t_end = time.monotonic()
    print(f"test took {t_end - t_start:.1f}s (free -> stored {t_end - t_free:.1f}s)")


def test_disk_full_holds_at_most_the_bound_then_pauses_the_sources(
    state_tmpfs: Path, daemon_factory: Any, tmp_path: Path
) -> None:
    """Past ``MAX_UNSTORED_LINES`` (35k) handled-but-unstored lines the sources wait
    (back-pressure, never a drop); when space is back every line is stored once."""
    t_start = time.monotonic()
    d, log = start_on_empty_log(daemon_factory, tmp_path)
    db = state_tmpfs / "sshmonitor.db"
    fill(state_tmpfs)
    total = 45_000
    # Single failures from distinct addresses and users: no rule fires, only volume.
    append(
        log,
        [failed(f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}", 10000 + i, user=f"u{i}")
         for i in range(total)],
    )  # fmt: skip
    seen: dict[str, Any] = {}

    def paused() -> bool:
        st = status(d)
        seen.update(st)
        return "sources paused" in " ".join(stage(st, "pipeline").get("warnings", []))

    assert poll(paused, 20, step=0.3) is not None, seen.get("store")
    held = seen["store"]["unstored_lines"]
    print(f"\npaused with {held} lines held")
    assert MAX_UNSTORED_LINES <= held < total, held
    assert "pausing the sources" in d.log_text()
    assert stored_offset(db, log) in (None, 0)
    # Space is back (more than the filler held: 45k events need ~15 MB).
    r = subprocess.run(["mount", "-o", "remount,size=64m", str(state_tmpfs)], capture_output=True)
    assert r.returncode == 0, r.stderr
    took = poll(
        lambda: stored_offset(db, log) == log.stat().st_size
        and q(db, "SELECT COUNT(*), COUNT(DISTINCT ip) FROM events") == [(total, total)],
        60,
        step=0.5,
    )
    assert took is not None, (q(db, "SELECT COUNT(*) FROM events"), d.log_text()[-3000:])
    st = status(d)
    assert not st["store"].get("error") and not stage(st, "pipeline").get("warnings"), st["store"]
    assert "Traceback" not in d.log_text()
    t_end = time.monotonic()
    print(f"all {total} stored {took:.1f}s after space came back; test {t_end - t_start:.1f}s")


# ------------------------------------------------------------------------- item 4: kill -9


def _kill_while_full(
    state_tmpfs: Path, pair: NetnsPair, daemon_factory: Any, tmp_path: Path, warm_up: bool
) -> None:
    t_start = time.monotonic()
    log = tmp_path / "auth.log"
    log.write_text("")
    table = f"smk{secrets.token_hex(3)}"
    cfg = full_disk_config(log, table)
    d = start_in_srv(daemon_factory, pair, cfg)
    db = state_tmpfs / "sshmonitor.db"
    if warm_up:
        # A first line stored normally, so a position exists before the disk fills.
        append(log, [failed("192.0.2.77", 99, user="bob")])
        assert poll(lambda: stored_offset(db, log) == log.stat().st_size, 10) is not None
    filler = fill(state_tmpfs)
    addresses = [attacker(i) for i in range(200)]
    lines = attack_lines(addresses)
    for k in range(0, len(lines), 100):
        append(log, lines[k : k + 100])
        time.sleep(0.05)
    assert poll(lambda: set(addresses) <= nft_members(pair, table), 20, step=0.2) is not None, (
        d.log_text()[-4000:]
    )
    assert poll(lambda: status(d)["store"].get("unstored_lines", 0) > 0, 10) is not None
    held = status(d)["store"]["unstored_lines"]

    d.proc.kill()  # SIGKILL: the held lines die with the process
    d.proc.wait(timeout=10)
    first_log = d.log_text()
    free(filler)
    assert "Traceback" not in first_log

    d2 = start_in_srv(daemon_factory, pair, cfg)
    want = dict.fromkeys(addresses, PER_ADDRESS)
    if warm_up:
        want["192.0.2.77"] = 1

    def all_stored() -> bool:
        return (
            failures_per_ip(db) == want
            and stored_offset(db, log) == log.stat().st_size
            and not status(d2)["store"].get("error")
        )

    took = poll(all_stored, 20, step=0.3)
    assert took is not None, (
        f"after the restart: {len(failures_per_ip(db))} addresses stored of {len(want)}, "
        f"offset {stored_offset(db, log)} of {log.stat().st_size} (held at the kill: {held})\n"
        + d2.log_text()[-4000:]
    )
    print(f"\nheld at kill: {held} lines; all stored {took:.1f}s after the restart")
    assert event_rows_per_ip(db) == want
    # Bans: in the firewall (they outlived the process) and active in the daemon and store.
    assert set(addresses) <= nft_members(pair, table)
    r = d2.cli("bans", "--json", "--socket", str(d2.socket_path))
    assert r.returncode == 0, r.stderr
    active = {host(b["net"]) for b in json.loads(r.stdout)["bans"]}
    assert set(addresses) <= active
    assert poll(
        lambda: {host(n) for (n,) in q(db, "SELECT net FROM bans WHERE active = 1")}
        >= set(addresses),
        35,
    ) is not None
    assert "Traceback" not in d2.log_text()
    print(f"test took {time.monotonic() - t_start:.1f}s")


def test_kill_9_while_disk_full_rereads_every_held_line(
    state_tmpfs: Path, netns_pair: NetnsPair, daemon_factory: Any, tmp_path: Path
) -> None:
    need_nft()
    _kill_while_full(state_tmpfs, netns_pair, daemon_factory, tmp_path, warm_up=True)


def test_kill_9_while_disk_full_before_any_position_was_stored(
    state_tmpfs: Path, netns_pair: NetnsPair, daemon_factory: Any, tmp_path: Path
) -> None:
    """The first lines the daemon ever sees arrive while the disk is full (a fresh install on
    a full /var): no position was ever stored, and ``start_at: end`` must not skip them."""
    need_nft()
    _kill_while_full(state_tmpfs, netns_pair, daemon_factory, tmp_path, warm_up=False)


# ------------------------------------------------------------------------- items 3, 4: lock

LOCKER = r"""
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("LOCKED", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
print("RELEASED", flush=True)
"""


def test_foreign_lock_bans_meanwhile_and_loses_nothing(
    daemon_factory: Any, tmp_path: Path, http_server: Any
) -> None:
    t_start = time.monotonic()
    log = tmp_path / "auth.log"
    log.write_text("")
    d = daemon_factory(
        f"sources: {{mode: file, files: [{log}], poll_interval: 100ms}}\n"
        "detection: {rules: {success_after_failures: {enabled: false}}}\n"
        "notify:\n  digest_window: 200ms\n  hourly_cap: 1000\n  channels:\n"
        f"    - {{type: webhook, url: '{http_server.url}/hook', timeout: 5s}}\n"
    )
    d.wait_log("sshmonitord started", timeout=20)
    db = d.state_dir / "sshmonitor.db"
    append(log, [failed("192.0.2.77", 99, user="bob")])
    assert poll(lambda: stored_offset(db, log) == log.stat().st_size, 10) is not None

    hold = 8.0  # longer than the store's 5 s busy timeout
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(db), str(hold)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert locker.stdout is not None
        assert locker.stdout.readline().strip() == "LOCKED", locker.stderr
        t_lock = time.monotonic()
        # Attack in waves while the lock is held: one address every 0.25 s for 4 s.
        addresses = [attacker(i) for i in range(16)]
        written: dict[str, float] = {}
        banned_at: dict[str, float] = {}

        def scan() -> None:
            text = d.log_text()
            now = time.monotonic()
            for a in addresses:
                if a not in banned_at and re.search(rf" banning .*\bnet={re.escape(a)}\b", text):
                    banned_at[a] = now

        for a in addresses:
            append(log, attack_lines([a]))
            written[a] = time.monotonic()
            for _ in range(5):
                scan()
                time.sleep(0.05)
        while locker.poll() is None and time.monotonic() < t_lock + hold + 5:
            scan()
            time.sleep(0.05)
        t_release = time.monotonic()
        assert locker.wait(timeout=10) == 0, locker.stderr.read() if locker.stderr else ""
    finally:
        if locker.poll() is None:
            locker.kill()
        locker.wait(timeout=10)
    scan()
    lat = {a: banned_at[a] - written[a] for a in banned_at}
    print(
        f"\nlock held {t_release - t_lock:.1f}s; ban latency while locked: "
        + ", ".join(f"{lat[a]:.2f}" if a in lat else "none" for a in addresses)
    )
    # Fail closed: every address was banned while the other process still held the lock.
    late = [a for a in addresses if a not in banned_at or banned_at[a] > t_release]
    assert not late, f"banned only after the lock was released: {late}\n" + d.log_text()[-4000:]

    # After the release: every line stored once, alerts spooled (throttle rows) and delivered.
    want = dict.fromkeys(addresses, PER_ADDRESS) | {"192.0.2.77": 1}
    took = poll(
        lambda: failures_per_ip(db) == want and stored_offset(db, log) == log.stat().st_size, 15
    )
    assert took is not None, (failures_per_ip(db), d.log_text()[-4000:])
    print(f"all stored {took:.1f}s after the release")
    assert event_rows_per_ip(db) == want

    def throttled() -> set[str]:
        """Subjects whose bruteforce alert was spooled (the throttle moves only with that)."""
        keys = [r[0].split("\x00") for r in q(db, "SELECT key FROM alert_throttle")]
        return {host(k[1]) for k in keys if k[0] == "bruteforce"}

    assert poll(lambda: set(addresses) <= throttled(), 20) is not None, throttled()

    def delivered() -> Counter[str]:
        """Bruteforce alerts the webhook received, per address (a retry may repeat one)."""
        out: Counter[str] = Counter()
        for req in list(http_server.requests):
            for a in req.json()["alerts"]:
                if a["rule"] == "bruteforce":
                    out[host(a["subject"])] += 1
        return out

    assert poll(lambda: set(addresses) <= set(delivered()), 20) is not None, (
        delivered(),
        d.log_text()[-3000:],
    )
    assert delivered() == dict.fromkeys(addresses, 1), delivered()
    st = status(d)
    assert stage(st, "pipeline")["stats"]["commit_failures"] > 0  # the lock really was in the way
    stored = Counter((r, s) for r, s in q(db, "SELECT rule, subject FROM findings"))
    assert stored == logged_findings(d.log_text())
    assert "Traceback" not in d.log_text()
    print(f"test took {time.monotonic() - t_start:.1f}s")


def test_another_process_closing_the_database_leaves_the_daemons_wal_alone(
    daemon_factory: Any, tmp_path: Path
) -> None:
    """An operator's ``sqlite3 sshmonitor.db .tables`` (any read-write open and close by
    another process) must not take the WAL from under the running daemon. SQLite relies on the
    daemon's POSIX read lock on the database file to know it is not the last user; a process
    that closes any descriptor of that file loses all its locks on it."""
    log = tmp_path / "auth.log"
    log.write_text("")
    d = daemon_factory(f"sources: {{mode: file, files: [{log}], poll_interval: 100ms}}\n")
    d.wait_log("sshmonitord started", timeout=20)
    db = d.state_dir / "sshmonitor.db"
    append(log, [failed("192.0.2.77", 99, user="bob")])
    assert poll(lambda: stored_offset(db, log) == log.stat().st_size, 10) is not None
    other = subprocess.run(
        [sys.executable, "-c",
         "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
         "c.execute('SELECT COUNT(*) FROM events').fetchone(); c.close()", str(db)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert other.returncode == 0, other.stderr
    fd_dir = f"/proc/{d.proc.pid}/fd"
    fds = [os.readlink(f"{fd_dir}/{fd}") for fd in os.listdir(fd_dir)]
    wal = [f for f in fds if "sshmonitor.db-" in f]
    assert wal and not any(f.endswith("(deleted)") for f in wal), wal
    append(log, [failed("192.0.2.78", 100, user="bob")])
    assert poll(lambda: stored_offset(db, log) == log.stat().st_size, 10) is not None, (
        "a line the daemon stored is not in the database others see: "
        f"{q(db, 'SELECT ip FROM events')}\n{wal}"
    )


def test_foreign_lock_does_not_delay_bans(daemon_factory: Any, tmp_path: Path) -> None:
    """While another process holds the write lock, a ban must not wait for the store's 5 s
    busy timeout, again and again: pipeline.py promises the firewall never waits for it."""
    t_start = time.monotonic()
    d, log = start_on_empty_log(daemon_factory, tmp_path)
    db = d.state_dir / "sshmonitor.db"
    append(log, [failed("192.0.2.77", 99, user="bob")])
    assert poll(lambda: stored_offset(db, log) == log.stat().st_size, 10) is not None

    hold = 12.0
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(db), str(hold)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    addresses = [attacker(i) for i in range(40)]
    written: dict[str, float] = {}
    banned_at: dict[str, float] = {}
    bans_cli: list[float] = []
    stop = threading.Event()

    def scanner() -> None:  # its own thread: nothing the test waits on delays the stamps
        while not stop.is_set():
            text, now = d.log_text(), time.monotonic()
            for a in list(written):
                if a not in banned_at and re.search(rf" banning .*\bnet={re.escape(a)}/32\b", text):
                    banned_at[a] = now
            time.sleep(0.03)

    def operator() -> None:
        t0 = time.monotonic()
        r = d.cli("bans", "--json", "--socket", str(d.socket_path))
        bans_cli.append(time.monotonic() - t0 if r.returncode == 0 else float("inf"))

    threads = [threading.Thread(target=scanner, daemon=True)]
    threads[0].start()
    try:
        assert locker.stdout is not None
        assert locker.stdout.readline().strip() == "LOCKED"
        t_lock = time.monotonic()
        for n, a in enumerate(addresses):  # one new attacker every 0.25 s for 10 s
            append(log, attack_lines([a]))
            written[a] = time.monotonic()
            if n in (8, 24):  # the operator looks meanwhile
                threads.append(threading.Thread(target=operator, daemon=True))
                threads[-1].start()
            time.sleep(max(0.0, written[a] + 0.25 - time.monotonic()))
        locker.wait(timeout=hold + 5)
        t_release = time.monotonic()
        assert poll(lambda: len(banned_at) == len(addresses), 15) is not None
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)
        if locker.poll() is None:
            locker.kill()
        locker.wait(timeout=10)
    lat = sorted(banned_at[a] - written[a] for a in addresses)
    print(
        f"\nlock {t_release - t_lock:.1f}s; {len(lat)} attackers; ban latency median "
        f"{lat[len(lat) // 2]:.2f}s max {lat[-1]:.2f}s; `sshmonitor bans` took "
        + ", ".join(f"{x:.2f}s" for x in bans_cli)
        + f"; test took {time.monotonic() - t_start:.1f}s"
    )
    assert all(x < 10 for x in bans_cli) and len(bans_cli) == 2, bans_cli
    assert lat[-1] < 2.0, f"bans waited for the locked store: latencies {lat}"


# ------------------------------------------------------------------------- items 5, 8: damage


def _private_files(state: Path) -> None:
    for name in ("sshmonitor.db", "sshmonitor.db-wal", "sshmonitor.db-shm"):
        p = state / name
        assert p.exists(), name
        assert mode(p) == 0o600, (name, oct(mode(p)))


def _check_recovered(d: DaemonProc, db: Path) -> dict[str, Any]:
    """The damaged file was moved aside, said once, alerted on, shown by status."""
    text = d.wait_log("rule=store_recovered", timeout=10)
    assert "Traceback" not in text, text
    st = status(d)
    rec = st["store"].get("recovered")
    assert rec is not None and set(rec) >= {"moved_to", "error", "at"}, st["store"]
    moved = Path(rec["moved_to"])
    assert moved.parent == db.parent and moved.name.startswith("sshmonitor.db.corrupt-"), moved
    assert re.fullmatch(r"sshmonitor\.db\.corrupt-\d{8}T\d{6}Z(-\d+)?", moved.name), moved.name
    assert moved.exists()
    damaged = [ln for ln in error_lines(text) if "damaged" in ln]
    assert len(damaged) == 1, error_lines(text)
    assert str(db) in damaged[0] and str(moved) in damaged[0], damaged[0]
    others = [ln for ln in error_lines(text) if ln not in damaged]
    assert not others, others
    assert any(str(moved) in w for w in st["warnings"]), st["warnings"]
    assert "damaged database moved aside" in st["status"]
    assert len(re.findall(r" finding .*\brule=store_recovered\b", text)) == 1
    return rec


def _marker_stored(d: DaemonProc, db: Path, log: Path) -> None:
    """Append a line and wait until it is stored: everything read so far is stored too."""
    append(log, [failed("192.0.2.200", 4242, user="marker")])
    assert poll(lambda: stored_offset(db, log) == log.stat().st_size, 10) is not None, (
        d.log_text()[-3000:]
    )


def test_random_bytes_database_is_moved_aside_and_history_not_alerted_again(
    daemon_factory: Any, tmp_path: Path
) -> None:
    t_start = time.monotonic()
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, 0o755)
    db = state / "sshmonitor.db"
    junk = os.urandom(64 * 1024)
    db.write_bytes(junk)
    os.chmod(db, 0o644)  # from before item 8: world-readable
    log = tmp_path / "auth.log"
    old = [f"203.0.113.{i}" for i in range(1, 11)]
    append(log, attack_lines(old))  # 50 lines of history: already handled by the old store
    d = daemon_factory(
        f"sources: {{mode: file, files: [{log}], poll_interval: 100ms, start_at: beginning}}\n"
        "detection: {rules: {success_after_failures: {enabled: false}}}\n",
        wrap=UMASK_022,
    )
    d.wait_log("sshmonitord started", timeout=20)
    rec = _check_recovered(d, db)
    moved = Path(rec["moved_to"])
    assert moved.read_bytes() == junk
    assert mode(moved) == 0o600, oct(mode(moved))  # it holds the same secrets
    _marker_stored(d, db, log)
    _private_files(state)
    # The history was not read again: no events, findings or bans for it.
    assert set(event_rows_per_ip(db)) == {"192.0.2.200"}
    assert q(db, "SELECT rule, subject FROM findings") == []
    assert not any(s in old for (_r, s) in logged_findings(d.log_text()))
    assert "banning" not in d.log_text()
    # And it is live: a new attack is seen.
    append(log, attack_lines(["198.51.100.9"]))
    d.wait_log("subject=198.51.100.9", timeout=10)
    print(f"\ntest took {time.monotonic() - t_start:.1f}s")


def _smash_middle_pages(db: Path) -> int:
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    pages = len(data) // page
    assert pages > 40, pages
    first, last = pages // 3, pages // 3 + 8
    for p in range(first, last):  # page 1 (the header and schema) untouched
        off = p * page
        data[off : off + page] = os.urandom(page)
    db.write_bytes(bytes(data))
    return len(data)


def test_damaged_pages_after_kill_9_are_found_and_moved_aside(
    daemon_factory: Any, tmp_path: Path
) -> None:
    t_start = time.monotonic()
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, 0o755)
    log = tmp_path / "auth.log"
    # 3000 single failures (distinct users and addresses: no rule fires), to give the
    # database some pages.
    history = [
        failed(f"10.{i // 250}.{i % 250}.1", 20000 + i, user=f"user{i}") for i in range(3000)
    ]
    append(log, history)
    cfg = (
        f"sources: {{mode: file, files: [{log}], poll_interval: 100ms, start_at: beginning}}\n"
        "detection: {rules: {success_after_failures: {enabled: false}}}\n"
    )
    d = daemon_factory(cfg, wrap=UMASK_022)
    d.wait_log("sshmonitord started", timeout=20)
    db = state / "sshmonitor.db"
    assert poll(lambda: stored_offset(db, log) == log.stat().st_size, 20) is not None
    _private_files(state)
    d.proc.kill()
    d.proc.wait(timeout=10)
    # Fold the WAL into the file (as SQLite's next opener would) so the smashed pages are
    # the only copy; the store's "clean_shutdown" mark stays 0, as a crash leaves it.
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert conn.execute("SELECT value FROM meta WHERE key='clean_shutdown'").fetchone()[0] == "0"
    conn.close()
    size = _smash_middle_pages(db)

    d2 = daemon_factory(cfg, wrap=UMASK_022)
    d2.wait_log("sshmonitord started", timeout=30)
    rec = _check_recovered(d2, db)
    assert "integrity check failed" in rec["error"] or "malformed" in rec["error"], rec
    assert Path(rec["moved_to"]).stat().st_size == size
    _marker_stored(d2, db, log)
    _private_files(state)
    # The 3000 lines the damaged store had handled are not read again.
    assert set(event_rows_per_ip(db)) == {"192.0.2.200"}
    assert q(db, "SELECT COUNT(*) FROM findings") == [(0,)]
    # A clean stop now: the next start finds a sound store and says nothing.
    d2.signal(15)
    assert d2.proc.wait(timeout=15) == 0
    d3 = daemon_factory(cfg, wrap=UMASK_022)
    d3.wait_log("sshmonitord started", timeout=20)
    st = status(d3)
    assert "recovered" not in st["store"] and st["warnings"] == [], st
    assert len(list(state.glob("sshmonitor.db.corrupt-*"))) == 1
    print(f"\ntest took {time.monotonic() - t_start:.1f}s")


def test_start_with_the_disk_already_full(
    state_tmpfs: Path, netns_pair: NetnsPair, daemon_factory: Any, tmp_path: Path
) -> None:
    """A restart (systemd after a crash, a reboot) while the state directory is still full:
    the store can be read, not written. The daemon must still start and protect (item 4)."""
    need_nft()
    pair = netns_pair
    t_start = time.monotonic()
    log = tmp_path / "auth.log"
    log.write_text("")
    table = f"sms{secrets.token_hex(3)}"
    # Alerts for a webhook that is down (nothing listens in the namespace): they stay in the
    # spool, so the restart finds pending alerts, as after any delivery outage.
    cfg = full_disk_config(log, table) + (
        "notify:\n  digest_window: 0s\n  channels:\n"
        "    - {type: webhook, url: 'http://127.0.0.1:9/hook', timeout: 1s}\n"
    )
    d = start_in_srv(daemon_factory, pair, cfg)
    db = state_tmpfs / "sshmonitor.db"
    append(log, [*attack_lines(["192.0.2.66"]), failed("192.0.2.77", 99, user="bob")])
    assert poll(lambda: stored_offset(db, log) == log.stat().st_size, 10) is not None
    assert poll(lambda: bool(q(db, "SELECT 1 FROM alert_spool WHERE attempts > 0")), 10), (
        d.log_text()[-3000:]
    )
    d.proc.kill()
    d.proc.wait(timeout=10)
    filler = fill(state_tmpfs)

    d2 = daemon_factory(cfg, wrap=pair.wrapper(pair.srv))
    started = poll(lambda: "sshmonitord started" in d2.log_text() or d2.proc.poll() is not None, 20)
    assert started is not None and d2.proc.poll() is None, (
        f"the daemon did not start with the disk full (exit {d2.proc.poll()}):\n"
        + d2.log_text()[-4000:]
    )
    addresses = [attacker(i) for i in range(20)]
    append(log, attack_lines(addresses))
    assert poll(lambda: set(addresses) <= nft_members(pair, table), 10) is not None, (
        d2.log_text()[-4000:]
    )
    free(filler)
    want = dict.fromkeys(addresses, PER_ADDRESS) | {"192.0.2.77": 1, "192.0.2.66": PER_ADDRESS}
    assert poll(
        lambda: failures_per_ip(db) == want and stored_offset(db, log) == log.stat().st_size, 30
    ) is not None, d2.log_text()[-4000:]
    assert "Traceback" not in d2.log_text()
    print(f"\ntest took {time.monotonic() - t_start:.1f}s")
