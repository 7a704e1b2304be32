#!/usr/bin/env python3
"""Ban latency end to end: real sshd, real rsyslog, the real daemon, nftables — in namespaces.

    bench/ban_latency.py [--attackers 100] [--attempts 5] [--concurrency 10] [--json]

What runs (everything inside two network namespaces this script creates and deletes; the
machine's own firewall is never touched, and it checks that: ``nft list ruleset`` in the root
namespace is compared before and after):

- ``srv``: OpenSSH (``tests/realsshd.py``: UsePAM no, logging through a private rsyslog to a
  classic auth.log; ``MaxStartups``/``PerSourceMaxStartups``/``MaxSessions`` raised so the
  attackers' connections are never throttled by sshd itself), and the daemon:
  ``ip netns exec SRV .venv/bin/python -m sshmonitord --config CFG --state-dir DIR
  --log-format console`` with the file source (poll_interval 200ms), the nftables backend in
  its own table ``smbench`` (bantime 10m), and the ``distributed`` and
  ``success_after_failures`` rules off (every attacker fails on the same user).
- ``atk``: ``--attackers`` addresses 10.N.1.1, 10.N.1.2, ... (250 per /24, in 10.N.0.0/16; srv
  gets an on-link route to the /16), each making ``--attempts`` failed password logins with
  the real ``ssh`` (``sshpass``), sequentially per attacker, ``--concurrency`` attackers at a
  time, client timeout ``--client-timeout`` s (an attempt cut by its own ban hangs: fine).

What it measures, all on this process's monotonic clock:

- t5: when the attacker's 5th ``Failed password`` line is first seen in auth.log (a thread
  reads the file every ``--tail-poll`` s, default 5 ms: that is the error bar);
- tban: when ``ip netns exec SRV nft -j monitor`` prints the element's addition to the set
  (nft flushes each event; a reader thread timestamps each line);
- latency = tban - t5, with p50/p90/p99/max; how many attackers were banned; how many failed
  attempts of each attacker reached sshd (auth.log), and how many were logged after its ban
  was in the set; the daemon's CPU seconds (utime+stime of /proc/PID/stat) during the attack
  and since its start, and its peak RSS (VmHWM).

Clean-up runs in ``finally`` (and on SIGINT/SIGTERM/SIGHUP): the daemon gets SIGTERM and is
waited for, sshd and rsyslog are stopped (``RealSshd.stop``), every process still inside the
namespaces is killed and both namespaces are deleted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != VENV_PYTHON.parent.parent.resolve():
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])

sys.path.insert(0, str(ROOT / "tests"))  # the tests' own helpers: namespaces, a real sshd

TABLE = "smbench"
SSHD_EXTRA = "MaxStartups 10000\nPerSourceMaxStartups none\nMaxSessions 100\n"
FAILED_RE = re.compile(r"sshd\[\d+\]: Failed password for (?:invalid user )?\S+ from (\S+) port ")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def root_ruleset() -> str:
    """This machine's own (root namespace) nftables ruleset: only ever read."""
    res = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise SystemExit(f"nft list ruleset failed: {res.stderr}")
    return res.stdout


def proc_cpu_all(pid: int) -> tuple[float, float]:
    """(utime + stime, cutime + cstime): the process's CPU and its reaped children's (nft)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rfind(")") + 2 :].split()
    own = (int(fields[11]) + int(fields[12])) / CLK_TCK
    kids = (int(fields[13]) + int(fields[14])) / CLK_TCK
    return own, kids


def proc_status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
            elif key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches", "Threads"):
                out[key] = int(rest.split()[0])
    return out


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank), q in 0..100."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))
    return s[k]


STOP = threading.Event()  # set on the way out: attacker threads start no new attempt


class Interrupted(BaseException):
    pass


def on_signal(sig: int, _frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(sig).name)


# ------------------------------------------------------------------------ watchers


class AuthTail(threading.Thread):
    """Reads auth.log every ``poll`` s; timestamps each attacker's Failed password lines."""

    def __init__(self, path: Path, poll: float, nth: int) -> None:
        super().__init__(daemon=True, name="auth-tail")
        self.path = path
        self.poll = poll
        self.nth = nth
        self.fails: dict[str, list[float]] = defaultdict(list)  # address -> times seen
        self.t_nth: dict[str, float] = {}
        self.lines = 0
        self.stop_flag = threading.Event()
        self.offset = path.stat().st_size if path.exists() else 0

    def run(self) -> None:
        buf = b""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            while not self.stop_flag.is_set():
                data = f.read()
                if data:
                    now = time.monotonic()
                    buf += data
                    *complete, buf = buf.split(b"\n")
                    for raw in complete:
                        self.lines += 1
                        m = FAILED_RE.search(raw.decode(errors="replace"))
                        if m:
                            ip = m.group(1)
                            seen = self.fails[ip]
                            seen.append(now)
                            if len(seen) == self.nth:
                                self.t_nth[ip] = now
                else:
                    self.stop_flag.wait(self.poll)


class NftMonitor(threading.Thread):
    """``nft -j monitor`` in srv: the time each element is first added to one of our sets."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        super().__init__(daemon=True, name="nft-monitor")
        self.proc = proc
        self.added: dict[str, float] = {}
        self.tables: dict[str, float] = {}
        self.events = 0

    def run(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.monotonic()
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            self.events += 1
            add = doc.get("add") if isinstance(doc, dict) else None
            if not isinstance(add, dict):
                continue
            if "table" in add:
                self.tables.setdefault(add["table"].get("name", ""), now)
            el = add.get("element")
            if not isinstance(el, dict) or el.get("table") != TABLE:
                continue
            for item in (el.get("elem") or {}).get("set", []):
                val = item.get("elem", {}).get("val") if isinstance(item, dict) else item
                if isinstance(val, dict) and "prefix" in val:
                    key = f"{val['prefix']['addr']}/{val['prefix']['len']}"
                else:
                    key = str(val)
                self.added.setdefault(key, now)


def set_members(pair: Any) -> set[str]:
    """What the daemon's sets hold now (a cross-check of the monitor)."""
    return set(pair.nft_members(TABLE))


# ------------------------------------------------------------------------ the run


def attacker_addresses(n_net: int, count: int) -> list[str]:
    return [f"10.{n_net}.{1 + i // 250}.{1 + i % 250}" for i in range(count)]


def daemon_config(auth_log: Path, state: Path, backend: str) -> str:
    return (
        f"sources: {{mode: file, files: [{auth_log}], poll_interval: 200ms}}\n"
        f"response: {{backend: {backend}, nft_table: {TABLE}, bantime: 10m}}\n"
        f"control: {{socket: {state / 'control.sock'}}}\n"
        "detection: {rules: {distributed: {enabled: false}, "
        "success_after_failures: {enabled: false}}}\n"
    )


def wait_for(pred: Any, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    from netns import NetnsPair, remove_stale, stop
    from realsshd import RealSshd

    remove_stale()  # namespaces of an earlier run of ours that was SIGKILLed
    work = Path(tempfile.mkdtemp(prefix="smbench-ban-"))
    pair = NetnsPair()
    sshd: Any = None
    daemon: subprocess.Popen[bytes] | None = None
    monitor: subprocess.Popen[str] | None = None
    tail: AuthTail | None = None
    daemon_log = work / "daemon.log"
    result: dict[str, Any] = {}
    executor: ThreadPoolExecutor | None = None
    try:
        pair.start()
        attackers = attacker_addresses(pair.n, args.attackers)
        vs, va = pair.veth_srv, pair.veth_atk
        pair.run_in(pair.srv, ["ip", "route", "add", f"10.{pair.n}.0.0/16", "dev", vs], check=True)
        batch = "".join(f"addr add {a}/24 dev {va}\n" for a in attackers)
        pair.run_in(pair.atk, ["ip", "-batch", "-"], input=batch, check=True)
        log(f"namespaces {pair.srv} / {pair.atk}; {len(attackers)} attacker addresses")

        # nft monitor first: it must see the daemon's table and every element.
        monitor = pair.popen_in(pair.srv, ["stdbuf", "-oL", "nft", "-j", "monitor"])
        mon = NftMonitor(monitor)
        mon.start()
        probe = f"{TABLE}_probe"
        pair.run_in(pair.srv, ["nft", "add", "table", "inet", probe], check=True)
        if not wait_for(lambda: probe in mon.tables, 5):
            raise RuntimeError("nft monitor printed nothing for a probe table")
        pair.run_in(pair.srv, ["nft", "delete", "table", "inet", probe], check=True)

        sshd = RealSshd(
            netns=pair.srv, listen=pair.srv4, use_pam=False, extra_config=SSHD_EXTRA,
            max_auth_tries=6,
        )  # fmt: skip
        try:
            sshd.start()
        except BaseException as e:  # RealSshd uses pytest's skip for a missing component
            raise RuntimeError(f"real sshd did not start: {type(e).__name__}: {e}") from None
        log(f"sshd in {pair.srv} on {pair.srv4}:{sshd.port}, auth.log {sshd.auth_log}")

        state = work / "state"
        state.mkdir()
        cfg = work / "sshmonitor.yaml"
        cfg.write_text(daemon_config(sshd.auth_log, state, args.backend))
        logf = open(daemon_log, "wb")  # noqa: SIM115 - closed below
        try:
            daemon = pair.popen_in(
                pair.srv,
                [sys.executable, "-m", "sshmonitord", "--config", str(cfg), "--state-dir",
                 str(state), "--log-format", "console"],
                stdout=logf, stderr=subprocess.STDOUT, text=False, cwd=str(ROOT),
            )  # fmt: skip
        finally:
            logf.close()
        t_start = time.monotonic()

        def started() -> bool:
            if daemon is not None and daemon.poll() is not None:
                raise RuntimeError(f"daemon exited {daemon.returncode}:\n{daemon_log.read_text()}")
            return "sshmonitord started" in daemon_log.read_text(errors="replace")

        if not wait_for(started, 30):
            raise RuntimeError(f"daemon did not start:\n{daemon_log.read_text()}")
        startup = time.monotonic() - t_start
        log(f"daemon pid {daemon.pid} started in {startup:.2f} s")
        time.sleep(0.5)  # its table is created at start-up; let the first poll settle
        cpu0, kids0 = proc_cpu_all(daemon.pid)
        ctx0 = proc_status(daemon.pid)["voluntary_ctxt_switches"]

        tail = AuthTail(sshd.auth_log, args.tail_poll, args.threshold)
        tail.start()

        errors: list[str] = []
        timeouts = 0
        lock = threading.Lock()

        def attack(src: str) -> None:
            nonlocal timeouts
            for _ in range(args.attempts):
                if STOP.is_set():
                    return
                try:
                    res = sshd.ssh_password(
                        sshd.user, "wrong-password", timeout=args.client_timeout,
                        client_ns=pair.atk, source=src,
                    )  # fmt: skip
                    if res.returncode == 0:
                        with lock:
                            errors.append(f"{src}: login succeeded?!")
                    elif res.returncode not in (5, 255):
                        with lock:
                            errors.append(f"{src}: exit {res.returncode}: {res.stderr.strip()}")
                except AssertionError as e:
                    if "timed out" not in str(e):
                        raise
                    with lock:
                        timeouts += 1

        log(
            f"attack: {len(attackers)} attackers x {args.attempts} attempts, "
            f"{args.concurrency} at a time"
        )
        t_attack = time.monotonic()
        executor = ThreadPoolExecutor(max_workers=args.concurrency)
        futures = [executor.submit(attack, a) for a in attackers]
        done, _ = wait(futures, timeout=args.max_seconds)
        for f in done:
            exc = f.exception()
            if exc is not None:
                errors.append(f"{type(exc).__name__}: {exc}")
        unfinished = len(futures) - len(done)
        executor.shutdown(wait=False, cancel_futures=True)
        executor = None
        attack_seconds = time.monotonic() - t_attack
        # The last bans may still be on their way.
        expected = [a for a in attackers if a in tail.t_nth]
        wait_for(lambda: all(a in mon.added for a in expected), args.settle, step=0.02)
        time.sleep(0.3)  # a late line after a ban would show here
        cpu1, kids1 = proc_cpu_all(daemon.pid)
        mem = proc_status(daemon.pid)
        cpu_since_start = cpu1
        members = set_members(pair)
        tail.stop_flag.set()
        tail.join(timeout=2)

        per: list[dict[str, Any]] = []
        for a in attackers:
            t5 = tail.t_nth.get(a)
            tb = mon.added.get(a)
            fails = tail.fails.get(a, [])
            per.append(
                {
                    "address": a,
                    "failures_logged": len(fails),
                    "failures_after_ban": sum(1 for t in fails if tb is not None and t > tb),
                    "t_nth": None if t5 is None else t5 - t_attack,
                    "t_ban": None if tb is None else tb - t_attack,
                    "latency": None if (t5 is None or tb is None) else tb - t5,
                    "in_set_at_end": a in members,
                }
            )
        lat = [p["latency"] for p in per if p["latency"] is not None]
        fails_n = [p["failures_logged"] for p in per]
        result = {
            "attackers": len(attackers),
            "attempts_per_attacker": args.attempts,
            "threshold": args.threshold,
            "concurrency": args.concurrency,
            "backend": args.backend,
            "reached_threshold": sum(1 for p in per if p["t_nth"] is not None),
            "banned": sum(1 for p in per if p["t_ban"] is not None),
            "in_set_at_end": sum(1 for p in per if p["in_set_at_end"]),
            "latency_s": {
                "n": len(lat),
                "min": min(lat) if lat else None,
                "p50": pct(lat, 50) if lat else None,
                "p90": pct(lat, 90) if lat else None,
                "p99": pct(lat, 99) if lat else None,
                "max": max(lat) if lat else None,
                "mean": statistics.fmean(lat) if lat else None,
                "over_1s": sum(1 for x in lat if x > 1.0),
            },
            "failures_logged": {
                "min": min(fails_n) if fails_n else None,
                "median": statistics.median(fails_n) if fails_n else None,
                "max": max(fails_n) if fails_n else None,
                "total": sum(fails_n),
            },
            "failures_after_ban_total": sum(p["failures_after_ban"] for p in per),
            "attack_seconds": attack_seconds,
            "client_timeouts": timeouts,
            "client_errors": errors[:20],
            "client_errors_total": len(errors),
            "unfinished_attackers": unfinished,
            "daemon": {
                "startup_s": startup,
                "cpu_s_attack": cpu1 - cpu0,
                "cpu_s_since_start": cpu_since_start,
                "children_cpu_s_attack": kids1 - kids0,
                "voluntary_ctxt_switches_attack": mem["voluntary_ctxt_switches"] - ctx0,
                "threads": mem.get("Threads"),
                "vmhwm": mem.get("VmHWM"),
                "vmrss": mem.get("VmRSS"),
            },
            "auth_log_lines": tail.lines,
            "nft_monitor_events": mon.events,
            "tail_poll_s": args.tail_poll,
            "per_attacker": per,
        }
        text = daemon_log.read_text(errors="replace")
        bad = re.compile(r"\b(error|exception|traceback)\b", re.I)
        result["daemon_log_errors"] = [ln for ln in text.splitlines() if bad.search(ln)][:20]
        if args.keep_daemon_log:
            shutil.copy(daemon_log, args.keep_daemon_log)
        return result
    finally:
        STOP.set()
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)  # clean-up is bounded: let it finish
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        if tail is not None:
            tail.stop_flag.set()
        if daemon is not None and daemon.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                daemon.send_signal(signal.SIGTERM)
            try:
                result["daemon_exit"] = daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                stop(daemon)
                result["daemon_exit"] = "killed"
        if monitor is not None:
            stop(monitor)
        if sshd is not None:
            with contextlib.suppress(Exception):
                sshd.stop()
        pair.close()  # kills whatever still runs in the namespaces, deletes them
        shutil.rmtree(work, ignore_errors=True)


def table(r: dict[str, Any]) -> str:
    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x * 1000:,.0f}"

    lat, fl, d = r["latency_s"], r["failures_logged"], r["daemon"]
    rows = [
        ("attackers x attempts (concurrency)",
         f"{r['attackers']} x {r['attempts_per_attacker']} ({r['concurrency']})"),
        ("reached the threshold (5th failure logged)", f"{r['reached_threshold']}"),
        ("banned (seen added by nft monitor)", f"{r['banned']} / {r['attackers']}"),
        ("in the set at the end (nft list set)", f"{r['in_set_at_end']}"),
        ("latency ms p50 / p90 / p99 / max",
         f"{ms(lat['p50'])} / {ms(lat['p90'])} / {ms(lat['p99'])} / {ms(lat['max'])}"),
        ("latency ms min / mean; n; over 1 s",
         f"{ms(lat['min'])} / {ms(lat['mean'])}; {lat['n']}; {lat['over_1s']}"),
        ("failed attempts logged per attacker min / median / max",
         f"{fl['min']} / {fl['median']} / {fl['max']} (total {fl['total']})"),
        ("failures logged after the attacker's ban", f"{r['failures_after_ban_total']}"),
        ("attack phase s", f"{r['attack_seconds']:.1f}"),
        ("client timeouts / other client errors / unfinished",
         f"{r['client_timeouts']} / {r['client_errors_total']} / {r['unfinished_attackers']}"),
        ("daemon start-up s", f"{d['startup_s']:.2f}"),
        ("daemon CPU s during the attack / since start",
         f"{d['cpu_s_attack']:.2f} / {d['cpu_s_since_start']:.2f}"),
        ("daemon's reaped children (nft) CPU s during the attack",
         f"{d['children_cpu_s_attack']:.2f}"),
        ("daemon wake-ups (voluntary ctx switches) during the attack",
         f"{d['voluntary_ctxt_switches_attack']:,} ({d['threads']} threads)"),
        ("daemon VmHWM / VmRSS MB",
         f"{(d['vmhwm'] or 0) / 1e6:.1f} / {(d['vmrss'] or 0) / 1e6:.1f}"),
        ("auth.log lines read / nft monitor events", f"{r['auth_log_lines']} / "
         f"{r['nft_monitor_events']}"),
        ("daemon exit code after SIGTERM", f"{r.get('daemon_exit')}"),
        ("root namespace ruleset unchanged", f"{r.get('root_ruleset_unchanged')}"),
    ]  # fmt: skip
    w = max(len(k) for k, _ in rows)
    out = [f"| {'measure':<{w}} | value |", f"|{'-' * (w + 2)}|---|"]
    out += [f"| {k:<{w}} | {v} |" for k, v in rows]
    if r["client_errors"]:
        out += ["", "client errors (first 20):", *r["client_errors"]]
    if r["daemon_log_errors"]:
        out += ["", "daemon log lines with error/exception:", *r["daemon_log_errors"]]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Time from the 5th failed password in auth.log to the nftables ban.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--attackers", type=int, default=100, help="attacker addresses (<= 5000)")
    p.add_argument("--attempts", type=int, default=5, help="failed logins per attacker (<= 20)")
    p.add_argument(
        "--threshold",
        type=int,
        default=5,
        help="the failure whose log line starts the clock (bruteforce threshold)",
    )
    p.add_argument("--concurrency", type=int, default=10, help="attackers at a time (<= 50)")
    p.add_argument("--client-timeout", type=float, default=5.0, help="seconds per ssh attempt")
    p.add_argument("--backend", choices=["nftables"], default="nftables")
    p.add_argument("--tail-poll", type=float, default=0.005, help="auth.log read period, s")
    p.add_argument(
        "--settle",
        type=float,
        default=10.0,
        help="seconds to wait for the last bans after the attack",
    )
    p.add_argument("--max-seconds", type=float, default=900.0, help="attack phase bound")
    p.add_argument("--keep-daemon-log", metavar="FILE", help="copy the daemon's log here")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--json-out", metavar="FILE", help="also write the JSON document here")
    args = p.parse_args(argv)  # fmt: skip
    if not 1 <= args.attackers <= 5000:
        p.error("--attackers must be 1..5000")
    if not 1 <= args.attempts <= 20 or not 1 <= args.threshold <= args.attempts:
        p.error("--attempts must be 1..20 and --threshold 1..attempts")
    if not 1 <= args.concurrency <= 50:
        p.error("--concurrency must be 1..50")
    if os.geteuid() != 0:
        p.error("needs root (network namespaces)")
    for b in ("ip", "nft", "sshpass", "ssh", "rsyslogd", "/usr/sbin/sshd", "stdbuf"):
        if shutil.which(b) is None:
            p.error(f"{b} is not installed")

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    before = root_ruleset()
    try:
        r = run_bench(args)
    except Interrupted as e:
        log(f"interrupted ({e}); cleaned up")
        return 130
    finally:
        after = root_ruleset()
        if after != before:
            log(f"ROOT NAMESPACE RULESET CHANGED!\nbefore:\n{before}\nafter:\n{after}")
    r["root_ruleset_unchanged"] = after == before
    r["root_ruleset_empty"] = before.strip() == ""
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(r, indent=2) + "\n")
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(table(r))
    return 0 if after == before else 3


if __name__ == "__main__":
    sys.exit(main())
