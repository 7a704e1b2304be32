#!/usr/bin/env python3
"""Benchmarks for sshmonitord's file tailer (issue #3).

Subcommands (each prints a table; ``--json`` prints one JSON document instead):

* ``throughput``: how fast a big auth.log-like file is read, from ``cat`` down to the full
  daemon path (Tailer -> Pipeline -> SQLite Store). Warm page cache throughout.
* ``latency``: time from a writer's write() to the Line reaching the Tailer's emit callback,
  with inotify wake-ups and with pure stat() polling.
* ``idle``: CPU used by a real ``sshmonitord`` process while nothing is written to its file,
  and while a sibling file in the same directory is written to; with ``--peers``, fail2ban
  and a bare once-a-second Python loop (this machine's floor) measured the same way.
* ``stream``: the same while its own file gets one write per line.
* ``all``: the three with modest defaults.

Every timed run of ``throughput`` happens in a fresh Python process (a hidden ``_worker``
subcommand of this script), so one method's memory and garbage collector state never skews the
next, and peak RSS can be reported per method.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import inspect
import io
import json
import os
import platform
import pstats
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"

try:
    import sshmonitord
    from sshmonitord import log as smlog
    from sshmonitord.cli.daemon import limit_malloc_arenas, tune_gc
    from sshmonitord.events import Line
    from sshmonitord.pipeline import Pipeline
    from sshmonitord.sources.tailer import FileFollower, Tailer
    from sshmonitord.store import Store
except ImportError:  # run with a python that lacks the package: use the repo's venv
    if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != VENV_PYTHON.parent.parent.resolve():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])
    raise

sys.path.insert(0, str(ROOT / "bench"))
import f2b  # noqa: E402  (bench/f2b.py: fail2ban as a peer, shared with bench/attack)

SCRIPT = str(Path(__file__).resolve())
# The daemon-path methods (e, f, g) run in a process set up as `sshmonitord` sets up its own:
# its garbage collector thresholds and malloc arenas (cli/daemon.py), and the start-up heap
# frozen out of the collector's reach (daemon.py). Without them a run measured CPython's
# defaults, not the daemon (issue #17). --python-defaults runs them the old way, to show
# what the settings are worth; the worker is told by this flag.
DAEMON_PROCESS = True
MB = 1_000_000  # MB/s means 10^6 bytes per second


# ---------------------------------------------------------------------- log line generator

USERS_INVALID = (
    "admin",
    "test",
    "oracle",
    "postgres",
    "git",
    "user",
    "pi",
    "ftpuser",
    "guest",
    "support",
    "jenkins",
    "hadoop",
    "nagios",
    "minecraft",
    "ubuntu",
    "steam",
    "elastic",
    "teamspeak",
    "administrator",
    "dev",
    "sysadmin",
    "mysql",
    "tomcat",
    "vagrant",
    "ansible",
    "centos",
)
USERS_VALID = ("root", "alice", "bob", "deploy", "backup")
TEMPLATES: tuple[tuple[int, str], ...] = (
    # (weight, message after "HOST PROG[PID]: "); an internet-facing host is mostly attacked.
    (20, "Failed password for invalid user {u} from {ip} port {port} ssh2"),
    (15, "Invalid user {u} from {ip} port {port}"),
    (10, "Failed password for {v} from {ip} port {port} ssh2"),
    (10, "Connection closed by invalid user {u} {ip} port {port} [preauth]"),
    (8, "Connection closed by authenticating user {v} {ip} port {port} [preauth]"),
    (8, "Received disconnect from {ip} port {port}:11: Bye Bye [preauth]"),
    (8, "Disconnected from invalid user {u} {ip} port {port} [preauth]"),
    (
        6,
        "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= "
        "rhost={ip}  user={v}",
    ),
    (
        3,
        "error: maximum authentication attempts exceeded for root from {ip} port {port} ssh2 "
        "[preauth]",
    ),
    (
        3,
        "Unable to negotiate with {ip} port {port}: no matching key exchange method found. "
        "Their offer: diffie-hellman-group14-sha1,diffie-hellman-group1-sha1 [preauth]",
    ),
    (2, "Accepted publickey for {v} from {ip} port {port} ssh2: ED25519 SHA256:{fp}"),
    (2, "pam_unix(sshd:session): session opened for user {v}(uid={uid}) by (uid=0)"),
    (2, "banner exchange: Connection from {ip} port {port}: invalid format"),
    (
        1,
        "PAM 2 more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost={ip}  "
        "user=root",
    ),
    (1, "Timeout before authentication for {ip} port {port}"),
)
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


class LineGen:
    """Deterministic, varied auth.log lines in the classic syslog format rsyslog writes."""

    def __init__(self, seed: int = 3, host: str = "web1") -> None:
        self.rng = random.Random(seed)
        self.host = host
        self.when = datetime(2024, 11, 24, 0, 0, 0)
        self.stamp = self._stamp()
        self.pid = 1234
        self.templates = [t for _w, t in TEMPLATES]
        self.weights = [w for w, _t in TEMPLATES]
        self.session = 40

    def _stamp(self) -> str:
        return f"{self.when:%b} {self.when.day:2d} {self.when:%H:%M:%S}"

    def _ip(self) -> str:
        r = self.rng
        if r.random() < 0.1:
            return f"2001:db8:{r.randrange(65536):x}:{r.randrange(65536):x}::{r.randrange(65536):x}"
        return f"{r.randint(1, 223)}.{r.randrange(256)}.{r.randrange(256)}.{r.randint(1, 254)}"

    def line(self) -> str:
        r = self.rng
        if r.random() < 0.3:
            self.when += timedelta(seconds=1)
            self.stamp = self._stamp()
        if r.random() < 0.2:
            self.pid = r.randint(1000, 4_000_000)
        x = r.random()
        if x < 0.01:
            return (
                f"{self.stamp} {self.host} sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; "
                "USER=root ; COMMAND=/usr/bin/journalctl -u ssh --since today"
            )
        if x < 0.02:
            self.session += 1
            user = r.choice(USERS_VALID)
            return (
                f"{self.stamp} {self.host} systemd-logind[612]: "
                f"New session {self.session} of user {user}."
            )
        tmpl = r.choices(self.templates, self.weights)[0]
        msg = tmpl.format(
            u=r.choice(USERS_INVALID),
            v=r.choice(USERS_VALID),
            ip=self._ip(),
            port=r.randint(1024, 65535),
            uid=r.choice((0, 1000, 1001, 1002)),
            fp="".join(r.choice(B64) for _ in range(43)),
        )
        return f"{self.stamp} {self.host} sshd[{self.pid}]: {msg}"


def write_log(path: Path, lines: int, seed: int = 3) -> tuple[int, int]:
    """Write ``lines`` generated lines to ``path``; return (lines, bytes)."""
    gen = LineGen(seed)
    size = 0
    with open(path, "wb") as fh:
        chunk: list[str] = []
        for i in range(lines):
            chunk.append(gen.line())
            if len(chunk) == 10000 or i == lines - 1:
                data = ("\n".join(chunk) + "\n").encode()
                fh.write(data)
                size += len(data)
                chunk.clear()
    return lines, size


# ---------------------------------------------------------------------- output helpers


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(r: list[str]) -> str:
        # First column left-aligned (a name), the rest right-aligned (figures).
        figures = [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        parts = [r[0].ljust(widths[0]), *figures]
        return "  ".join(parts).rstrip()

    out = [title] if title else []
    out.append(fmt(cells[0]))
    out.append("  ".join("-" * w for w in widths))
    out.extend(fmt(r) for r in cells[1:])
    return "\n".join(out)


def human(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k"
    return f"{n:.0f}"


def note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def environment() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "sshmonitord"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        if commit and dirty:
            commit += "+dirty"
    return {
        "loadavg": os.getloadavg()[0],
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "sshmonitord": sshmonitord.__version__,
        "commit": commit,
        "when": datetime.now().isoformat(timespec="seconds"),
    }


def env_line(env: dict[str, Any]) -> str:
    return (
        f"# Python {env['python']}, kernel {env['kernel']}, {env['cpus']}x {env['cpu']}, "
        f"sshmonitord {env['sshmonitord']} @ {env['commit'] or '?'}, "
        f"load avg {env['loadavg']:.2f} at the end"
    )


def pct(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, -(-len(sorted_values) * p // 100) - 1))
    return sorted_values[int(k)]


# ---------------------------------------------------------------------- throughput

METHODS: tuple[tuple[str, str], ...] = (
    ("cat", "(a) cat FILE > /dev/null (subprocess, wall)"),
    ("binary", "(b) Python: for line in open(rb)"),
    ("text", "(c) Python: for line in open(r, utf-8)"),
    ("follower", "(d) FileFollower.resume+poll"),
    ("daemon", "(e) Tailer -> Pipeline -> Store, positions"),
    ("parse", "(f) as (e) + sshmonitord parser + events"),
    ("detect", "(g) as (f) + detection (default rules)"),
)

# --methods takes the letters of the table too: e,f is daemon,parse.
METHOD_LETTERS = {label[1]: m for m, label in METHODS}


@dataclass
class RunResult:
    seconds: float
    lines: int
    peak_rss_kb: int
    extra: dict[str, Any] = field(default_factory=dict)


def _run_cat(path: str, _expect: int) -> RunResult:
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as null:
        subprocess.run(["cat", path], stdout=null, check=True)
    dt = time.perf_counter() - t0
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(path, "rb") as fh:  # not timed: count lines to check the other methods
        lines = sum(buf.count(b"\n") for buf in iter(lambda: fh.read(1 << 20), b""))
    return RunResult(dt, lines, child)


def _run_binary(path: str, _expect: int) -> RunResult:
    n = 0
    t0 = time.perf_counter()
    with open(path, "rb") as fh:
        for _line in fh:
            n += 1
    return RunResult(time.perf_counter() - t0, n, _self_rss())


def _run_text(path: str, _expect: int) -> RunResult:
    n = 0
    t0 = time.perf_counter()
    with open(path, encoding="utf-8", errors="replace") as fh:
        for _line in fh:
            n += 1
    return RunResult(time.perf_counter() - t0, n, _self_rss())


def _count_lines(items: list[Any]) -> int:
    return sum(1 for x in items if isinstance(x, Line))


def _daemon_tailer_options(cls: Any = None) -> dict[str, Any]:
    """What the daemon's sshd source passes to its Tailer (and so to its FileFollower) beyond
    the other methods' arguments (sources/__init__), where the tree being measured has it: a
    baseline tree may predate an option."""
    params = inspect.signature(Tailer if cls is None else cls).parameters
    return {"each_position": False} if "each_position" in params else {}


def _run_follower(path: str, expect: int) -> RunResult:
    t0 = time.perf_counter()
    ff = FileFollower(
        path, start_at="beginning", max_line_length=16384, **_daemon_tailer_options(FileFollower)
    )
    n = _count_lines(ff.resume([]))
    polls = 0
    biggest = 0
    while n < expect:
        got = ff.poll()
        polls += 1
        biggest = max(biggest, len(got))
        n += _count_lines(got)
        del got
        if polls > 1000 and n == 0:
            break
    dt = time.perf_counter() - t0
    ff.close()
    return RunResult(dt, n, _self_rss(), {"polls": polls, "largest_poll_items": biggest})


def _make_pipeline(store: Store, parse: bool, detect: bool = False) -> Pipeline:
    """A Pipeline as the daemon builds it; ``parse=False`` swaps in a parser that finds nothing,
    so only the tailer, the queue and the per-batch position commit are measured. ``detect``:
    with the detection engine on the default rules, as the daemon wires it (an empty login
    history; no firewall and no alerts, which a real flood's bans and mails would add)."""
    from sshmonitord.config import Config
    from sshmonitord.detect.engine import Engine, History
    from sshmonitord.parse import Parser
    from sshmonitord.parse.prefix import load_zone

    class NullParser(Parser):
        def parse_line(self, line: Line) -> None:
            return None

    zone = load_zone("local")
    parser = (Parser if parse else NullParser)(zone=zone)
    engine = Engine(Config().detection, History(), zone=zone) if detect else None
    return Pipeline(store, parser, engine=engine, trace=False)


# Set by cmd_worker --profile: also profile what runs on the store thread (cProfile sees only
# the thread it was enabled in, and the pipeline's commits run on the store's own thread).
STORE_PROFILE: cProfile.Profile | None = None


def _time_store_thread(store: Store, busy: list[float]) -> None:
    """Add up the seconds the store thread spends in each call (the commits, mostly): wall
    time in ``busy[0]``, the thread's own CPU time in ``busy[1]`` (the difference is waiting:
    for the GIL, for a core, for the disk)."""
    plain = store.run

    async def run(fn: Callable[[Any], Any]) -> Any:
        def timed(conn: Any) -> Any:
            t, c = time.perf_counter(), time.thread_time()
            if STORE_PROFILE is not None:
                STORE_PROFILE.enable()
            try:
                return fn(conn)
            finally:
                if STORE_PROFILE is not None:
                    STORE_PROFILE.disable()
                busy[0] += time.perf_counter() - t
                busy[1] += time.thread_time() - c

        return await plain(timed)

    store.run = run  # type: ignore[method-assign]


async def _daemon_path(
    path: str, expect: int, state_dir: str, parse: bool, detect: bool = False
) -> RunResult:
    store = Store(state_dir)
    await asyncio.to_thread(store.open)
    busy = [0.0, 0.0]
    _time_store_thread(store, busy)
    pipeline = _make_pipeline(store, parse, detect)
    await pipeline.start()
    if DAEMON_PROCESS:
        gc.collect()  # as Daemon.start does once it is up
        gc.freeze()
    done = asyncio.Event()
    stall = 0.0

    async def ticker() -> None:
        # How long the event loop goes without running anything else, and when we are done.
        nonlocal stall
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            stall = max(stall, time.perf_counter() - t - 0.005)
            if pipeline.lines >= expect:
                done.set()

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    tailer = Tailer(
        [path],
        pipeline.emit,
        {},
        start_at="beginning",
        poll_interval=1.0,
        max_line_length=16384,
        use_inotify=True,
        **_daemon_tailer_options(),
    )
    t0, c0 = time.perf_counter(), time.thread_time()
    await tailer.start()
    timed_out = False
    try:
        await asyncio.wait_for(done.wait(), 900)
    except TimeoutError:
        timed_out = True
    dt, loop_cpu = time.perf_counter() - t0, time.thread_time() - c0
    tick.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await tick
    await tailer.stop()
    await pipeline.stop()
    positions = await store.run(lambda _c: store.load_file_positions())
    await asyncio.to_thread(store.close)
    offset = max((p.offset for ps in positions.values() for p in ps), default=-1)
    extra: dict[str, Any] = {
        "batches_committed": pipeline.batches,
        "committed_offset_is_eof": offset == os.path.getsize(path),
        "max_loop_stall_s": round(stall, 3),
        "store_thread_s": round(busy[0], 3),
        "store_thread_cpu_s": round(busy[1], 3),
        # The loop's own CPU, and the rest of the run: the loop thread waiting for the GIL
        # (the store thread binds each statement's values holding it), for the store, or
        # for a core. Neither counts the other thread's time.
        "loop_thread_cpu_s": round(loop_cpu, 3),
        "loop_off_cpu_s": round(dt - loop_cpu, 3),
        "timed_out": timed_out,
    }
    if parse:
        stats = pipeline.describe()["stats"]
        extra["events_stored"] = pipeline.events
        if detect:
            extra["findings"] = pipeline.findings
        for k in ("other_programs", "malformed", "unrecognized", "parser_errors"):
            if k in stats:
                extra[k] = stats[k]
    return RunResult(dt, pipeline.lines, _self_rss(), extra)


def _run_daemon(path: str, expect: int, parse: bool = False, detect: bool = False) -> RunResult:
    if DAEMON_PROCESS:
        tune_gc()
        limit_malloc_arenas()  # before any thread starts, as in the daemon
    with tempfile.TemporaryDirectory(prefix="tailbench-state-") as state:
        return asyncio.run(_daemon_path(path, expect, state, parse, detect))


def _run_daemon_parse(path: str, expect: int) -> RunResult:
    return _run_daemon(path, expect, parse=True)


def _run_daemon_detect(path: str, expect: int) -> RunResult:
    return _run_daemon(path, expect, parse=True, detect=True)


def _self_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


RUNNERS: dict[str, Callable[[str, int], RunResult]] = {
    "cat": _run_cat,
    "binary": _run_binary,
    "text": _run_text,
    "follower": _run_follower,
    "daemon": _run_daemon,
    "parse": _run_daemon_parse,
    "detect": _run_daemon_detect,
}


def cmd_worker(args: argparse.Namespace) -> int:
    """Hidden: one timed run of one method, in this fresh process; JSON on stdout."""
    smlog.setup("warning", "console")
    global DAEMON_PROCESS
    DAEMON_PROCESS = not args.python_defaults
    if args.profile:
        global STORE_PROFILE
        STORE_PROFILE = cProfile.Profile()
        prof = cProfile.Profile()
        prof.enable()
        res = RUNNERS[args.method](args.file, args.expect)
        prof.disable()
        s = io.StringIO()
        s.write("## the main thread (event loop)\n")
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(args.profile)
        if STORE_PROFILE.getstats():
            s.write("## the store thread (commits)\n")
            pstats.Stats(STORE_PROFILE, stream=s).sort_stats("tottime").print_stats(args.profile)
        res.extra["profile"] = s.getvalue()
    else:
        res = RUNNERS[args.method](args.file, args.expect)
    json.dump(res.__dict__, sys.stdout)
    return 0


def run_worker(
    method: str, path: Path, expect: int, profile: int = 0, python_defaults: bool = False
) -> RunResult:
    cmd = [sys.executable, SCRIPT, "_worker", method, str(path), "--expect", str(expect)]
    if profile:
        cmd += ["--profile", str(profile)]
    if python_defaults:
        cmd.append("--python-defaults")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {method} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return RunResult(**json.loads(proc.stdout))


def throughput(
    lines: int,
    repeat: int,
    file: str | None,
    profile: int,
    methods: Sequence[str] = (),
    python_defaults: bool = False,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tailbench-") as tmp:
        if file:
            path = Path(file)
            size = path.stat().st_size
            with open(path, "rb") as fh:
                lines = sum(b.count(b"\n") for b in iter(lambda: fh.read(1 << 20), b""))
            note(f"using {path}: {lines} lines, {size / MB:.1f} MB")
        else:
            path = Path(tmp) / "auth.log"
            t0 = time.perf_counter()
            lines, size = write_log(path, lines)
            note(f"generated {lines} lines, {size / MB:.1f} MB in {time.perf_counter() - t0:.1f}s")
        # Warm the page cache: every method below reads from memory, not disk.
        with open(path, "rb") as fh:
            while fh.read(1 << 22):
                pass
        results: list[dict[str, Any]] = []
        for method, label in METHODS:
            if methods and method not in methods:
                continue
            runs: list[RunResult] = []
            for i in range(repeat):
                r = run_worker(method, path, lines, python_defaults=python_defaults)
                note(f"  {method} run {i + 1}/{repeat}: {r.seconds:.3f}s {r.lines} lines")
                runs.append(r)
            secs = [r.seconds for r in runs]
            best, med = min(secs), statistics.median(secs)
            results.append(
                {
                    "method": method,
                    "label": label,
                    "runs_s": [round(s, 4) for s in secs],
                    "best_s": round(best, 4),
                    "median_s": round(med, 4),
                    "lines_per_s_best": round(lines / best),
                    "lines_per_s_median": round(lines / med),
                    "mb_per_s_best": round(size / MB / best, 1),
                    "mb_per_s_median": round(size / MB / med, 1),
                    "lines_seen": runs[0].lines,
                    "lines_ok": all(r.lines == lines for r in runs),
                    "peak_rss_mb": round(max(r.peak_rss_kb for r in runs) / 1024, 1),
                    "extra": runs[-1].extra,
                }
            )
        prof_text, prof_method = "", ""
        if profile:
            chosen = [m for m, _label in METHODS if not methods or m in methods]
            prof_method = chosen[-1] if chosen else "follower"
            prof_text = run_worker(prof_method, path, lines, profile, python_defaults).extra.get(
                "profile", ""
            )
    return {
        "benchmark": "throughput",
        "env": environment(),
        "file": {"lines": lines, "bytes": size, "mean_line_bytes": round(size / lines, 1)},
        "cache": "warm (file read once before timing; page cache not dropped)",
        "process": "CPython defaults" if python_defaults else "the daemon's gc and malloc settings",
        "repeat": repeat,
        "results": results,
        "profile": prof_text,
        "profile_method": prof_method,
    }


def print_throughput(doc: dict[str, Any]) -> None:
    f = doc["file"]
    print(env_line(doc["env"]))
    print(
        f"# file: {f['lines']} lines, {f['bytes'] / MB:.1f} MB, {f['mean_line_bytes']} B/line; "
        f"page cache {doc['cache'].split(' ')[0]}; best and median of {doc['repeat']} runs, "
        "each in a fresh process; MB = 10^6 bytes"
    )
    print(f"# (e)-(g) run with {doc['process']}")
    rows = []
    for r in doc["results"]:
        rows.append(
            (
                r["label"],
                f"{r['best_s']:.3f}",
                f"{r['median_s']:.3f}",
                human(r["lines_per_s_best"]),
                human(r["lines_per_s_median"]),
                f"{r['mb_per_s_best']:.1f}",
                f"{r['mb_per_s_median']:.1f}",
                f"{r['peak_rss_mb']:.0f}",
                "ok" if r["lines_ok"] else f"GOT {r['lines_seen']}",
            )
        )
    print(
        table(
            (
                "method",
                "best s",
                "median s",
                "lines/s best",
                "lines/s med",
                "MB/s best",
                "MB/s med",
                "peak RSS MB",
                "lines",
            ),
            rows,
        )
    )
    for r in doc["results"]:
        extra = {k: v for k, v in r["extra"].items() if k != "profile"}
        if extra:
            print(f"  {r['method']}: " + ", ".join(f"{k}={v}" for k, v in extra.items()))
    if doc.get("profile"):
        label = dict(METHODS).get(doc.get("profile_method", ""), "FileFollower")
        print(f"\n# cProfile of one {label} run (sorted by own time):")
        print(doc["profile"].rstrip())


# ---------------------------------------------------------------------- latency


def cmd_writer(args: argparse.Namespace) -> int:
    """Hidden: append ``rate`` lines/s for ``seconds`` s, each stamped with its write time."""
    gen = LineGen(seed=11)
    pool = [gen.line() for _ in range(997)]
    total = int(args.rate * args.seconds)
    fd = os.open(args.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    start = time.monotonic()
    for i in range(total):
        target = start + i / args.rate
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        # time.monotonic_ns is CLOCK_MONOTONIC: comparable across processes on one machine.
        os.write(fd, f"{pool[i % len(pool)]} tw={time.monotonic_ns()}\n".encode())
    elapsed = time.monotonic() - start
    os.close(fd)
    json.dump({"written": total, "seconds": elapsed}, sys.stdout)
    return 0


async def _latency_run(
    mode: str, rate: float, seconds: float, poll_interval: float, tmp: Path
) -> dict[str, Any]:
    path = tmp / f"auth-{mode}.log"
    write_log(path, 200, seed=5)  # a non-empty file, so the fingerprint is the full 1 KiB
    lat_ns: list[int] = []
    batches = 0
    received = 0
    all_in = asyncio.Event()
    expected = int(rate * seconds)

    async def emit(batch: list[Any]) -> None:
        nonlocal batches, received
        now = time.monotonic_ns()  # once per batch: where the parser would get the lines
        batches += 1
        for item in batch:
            if isinstance(item, Line):
                received += 1
                _, sep, tw = item.text.rpartition(" tw=")
                if sep:
                    lat_ns.append(now - int(tw))
        if received >= expected:
            all_in.set()

    tailer = Tailer(
        [str(path)],
        emit,
        {},
        start_at="end",
        poll_interval=poll_interval,
        use_inotify=mode == "inotify",
    )
    await tailer.start()
    await asyncio.sleep(0.5)
    cpu0 = time.process_time()
    w0 = time.monotonic()
    writer = await asyncio.create_subprocess_exec(
        sys.executable,
        SCRIPT,
        "_writer",
        str(path),
        str(rate),
        str(seconds),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await writer.communicate()
    wrote = json.loads(out)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_in.wait(), poll_interval * 2 + 2)
    wall = time.monotonic() - w0
    cpu = time.process_time() - cpu0
    await tailer.stop()
    lat_ms = sorted(v / 1e6 for v in lat_ns)
    return {
        "mode": mode,
        "poll_interval_s": poll_interval,
        "written": wrote["written"],
        "received": received,
        "achieved_rate": round(wrote["written"] / wrote["seconds"], 1),
        "batches": batches,
        "lines_per_batch": round(received / batches, 1) if batches else 0,
        "p50_ms": round(pct(lat_ms, 50), 2),
        "p90_ms": round(pct(lat_ms, 90), 2),
        "p99_ms": round(pct(lat_ms, 99), 2),
        "max_ms": round(lat_ms[-1], 2) if lat_ms else None,
        "mean_ms": round(statistics.fmean(lat_ms), 2) if lat_ms else None,
        "cpu_s": round(cpu, 3),
        "cpu_pct_of_core": round(100 * cpu / wall, 2),
    }


def latency(rate: float, seconds: float, poll_interval: float, modes: list[str]) -> dict[str, Any]:
    smlog.setup("warning", "console")
    results = []
    with tempfile.TemporaryDirectory(prefix="tailbench-lat-") as tmp:
        for mode in modes:
            note(f"latency: {mode}, {rate:g} lines/s for {seconds:g}s ...")
            results.append(asyncio.run(_latency_run(mode, rate, seconds, poll_interval, Path(tmp))))
    return {
        "benchmark": "latency",
        "env": environment(),
        "rate": rate,
        "seconds": seconds,
        "results": results,
    }


def print_latency(doc: dict[str, Any]) -> None:
    print(env_line(doc["env"]))
    print(
        f"# writer process appends {doc['rate']:g} lines/s for {doc['seconds']:g}s (O_APPEND, "
        "one write() per line); latency = write() -> Line in Tailer's emit callback"
    )
    rows = [
        (
            f"{r['mode']} (poll {r['poll_interval_s']:g}s)",
            f"{r['received']}/{r['written']}",
            f"{r['achieved_rate']:g}",
            r["batches"],
            r["lines_per_batch"],
            r["p50_ms"],
            r["p90_ms"],
            r["p99_ms"],
            r["max_ms"],
            f"{r['cpu_pct_of_core']:.1f}",
        )
        for r in doc["results"]
    ]
    print(
        table(
            (
                "wake-up",
                "lines rcvd",
                "rate/s",
                "batches",
                "lines/batch",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                "CPU % core",
            ),
            rows,
        )
    )
    print("  CPU % core: the tailer's process (event loop + watchdog thread + this callback)")


# ---------------------------------------------------------------------- idle


def _proc_cpu_ticks(pid: int) -> int:
    """utime+stime of the whole process (all threads), in clock ticks."""
    data = Path(f"/proc/{pid}/stat").read_text()
    fields = data[data.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def _proc_cpu_ns(pid: int) -> int | None:
    """The process CPU-time clock (all threads, ns resolution): clock_getcpuclockid(pid)."""
    try:
        return time.clock_gettime_ns(((~pid) << 3) | 2)  # MAKE_PROCESS_CPUCLOCK(pid, SCHED)
    except OSError:
        return None


def _thread_switches(pid: int) -> dict[int, int]:
    """Voluntary context switches per thread: how often each one woke up."""
    out: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            for ln in (task / "status").read_text().splitlines():
                if ln.startswith("voluntary_ctxt_switches:"):
                    out[int(task.name)] = int(ln.split()[1])
    return out


@dataclass
class Sample:
    t: float
    ticks: int
    ns: int | None
    switches: dict[int, int]

    @classmethod
    def take(cls, pid: int) -> Sample:
        return cls(time.monotonic(), _proc_cpu_ticks(pid), _proc_cpu_ns(pid), _thread_switches(pid))


NOISE_STYLES = {
    "held": "fd held open, O_APPEND (like rsyslog): 1 inotify event per write",
    "reopen": "open/append/close each time (like `echo >> f`, sshd on btmp): 3 events per write",
}


def _noise(path: Path, rate: float, style: str, stop: threading.Event) -> int:
    """Append a line to ``path`` ``rate`` times a second until ``stop``; return the count."""
    gen = LineGen(seed=7, host="web1")
    n = 0
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640) if style == "held" else -1
    start = time.monotonic()
    try:
        while not stop.is_set():
            data = (gen.line() + "\n").encode()
            if style == "held":
                os.write(fd, data)
            else:
                with open(path, "ab") as fh:
                    fh.write(data)
            n += 1
            stop.wait(max(0.0, start + n / rate - time.monotonic()))
    finally:
        if fd >= 0:
            os.close(fd)
    return n


def _window(pid: int, seconds: float, noise: tuple[Path, float, str] | None) -> dict[str, Any]:
    stop = threading.Event()
    written: list[int] = []
    th = None
    if noise is not None:
        th = threading.Thread(target=lambda: written.append(_noise(*noise, stop)), daemon=True)
    a = Sample.take(pid)
    if th is not None:
        th.start()
    time.sleep(seconds)
    stop.set()
    if th is not None:
        th.join()
    b = Sample.take(pid)
    wall = b.t - a.t
    tick = os.sysconf("SC_CLK_TCK")
    cpu_s = (b.ticks - a.ticks) / tick
    cpu_ns_s = (b.ns - a.ns) / 1e9 if a.ns is not None and b.ns is not None else None
    wake = {tid: b.switches[tid] - a.switches.get(tid, 0) for tid in b.switches}
    return {
        "window_s": round(wall, 2),
        "sibling_writes": written[0] if written else 0,
        "cpu_s_proc_stat": round(cpu_s, 3),
        "cpu_pct_proc_stat": round(100 * cpu_s / wall, 4),
        "cpu_s_clock": round(cpu_ns_s, 4) if cpu_ns_s is not None else None,
        "cpu_pct_clock": round(100 * cpu_ns_s / wall, 4) if cpu_ns_s is not None else None,
        "threads": len(b.switches),
        "wakeups_per_s": round(sum(wake.values()) / wall, 1),
        "wakeups_per_s_by_thread": {
            ("main" if k == pid else str(k)): round(v / wall, 2) for k, v in sorted(wake.items())
        },
    }


# The daemon with sources/tailer.py's READ_GAP set (the `stream` benchmark's A/B).
READ_GAP_RUN = (
    "import runpy, sys; from sshmonitord.sources import tailer; tailer.READ_GAP = {gap!r}; "
    "sys.argv[0] = 'sshmonitord'; runpy.run_module('sshmonitord', run_name='__main__')"
)


PEERS = {
    "fail2ban": "fail2ban-server -f -x (the system's), a copy of /etc/fail2ban with one jail on "
    "the file and no action (it bans nothing anywhere); its backend from --f2b-backend",
    "floor": "a bare Python asyncio loop woken by a 1 s timer and doing nothing else: what any "
    "process waking once a second costs on this machine",
}
FLOOR_RUN = (
    "import asyncio\n"
    "async def main():\n"
    "    while True:\n"
    "        await asyncio.sleep(1)\n"
    "asyncio.run(main())\n"
)


def _fail2ban_conf(tmp: Path, watched: Path, backend: str) -> Path:
    """One jail following ``watched`` with no action at all, so a peer run never touches a
    firewall (bench/f2b.py: the rest of the private copy)."""
    return f2b.private_conf(
        tmp,
        "[DEFAULT]\n"
        "ignoreip = 127.0.0.1/8 ::1\n"
        "\n[sshd]\n"
        "enabled = true\n"
        f"logpath = {watched}\n"
        f"backend = {backend}\n"
        "action =\n",
    )


def idle(
    seconds: float,
    settle: float,
    noise_rate: float,
    python: str,
    styles: Sequence[str] = tuple(NOISE_STYLES),
    stream_rates: Sequence[float] = (),
    read_gap: float | None = None,
    engine: str = "sshmonitord",
    f2b_backend: str = "auto",
) -> dict[str, Any]:
    """The quiet window, one window per sibling-writer style, then one per rate in
    ``stream_rates`` with the writer appending to the followed file itself (one write per
    line, fd held open, as rsyslog writes an attack). ``read_gap``: run the daemon with
    that READ_GAP (None: the package's own). ``engine``: sshmonitord, or one of PEERS in its
    place, measured the same way."""
    tmp = Path(tempfile.mkdtemp(prefix="tailbench-idle-"))
    logdir = tmp / "log"
    logdir.mkdir()
    watched = logdir / "auth.log"
    write_log(watched, 500, seed=9)
    sock = tmp / "control.sock"
    cfg = tmp / "sshmonitor.yaml"
    daemon_log = tmp / "daemon.log"
    ready: Callable[[], bool]
    if engine == "sshmonitord":
        cfg.write_text(
            "sources:\n"
            "  mode: file\n"
            f"  files: [{json.dumps(str(watched))}]\n"
            "control:\n"
            f"  socket: {json.dumps(str(sock))}\n"
            "response:\n"
            "  enabled: false  # a benchmark never touches the firewall\n"
        )
        run = ["-m", "sshmonitord"]
        if read_gap is not None:
            run = ["-c", READ_GAP_RUN.format(gap=read_gap)]
        cmd = [
            python,
            *run,
            "--config",
            str(cfg),
            "--state-dir",
            str(tmp / "state"),
            "--log-format",
            "console",
            "--dry-run",
        ]

        def ready() -> bool:
            return _socket_ready(sock)

    elif engine == "fail2ban":
        conf = _fail2ban_conf(tmp, watched, f2b_backend)
        cmd = f2b.server_argv(tmp, conf)
        f2b_log = tmp / "fail2ban.log"

        def ready() -> bool:
            text = f2b_log.read_text("utf-8", "replace") if f2b_log.exists() else ""
            return "Jail 'sshd' started" in text

    elif engine == "floor":
        cmd = [python, "-c", FLOOR_RUN]

        def ready() -> bool:
            return True

    else:
        raise ValueError(f"unknown engine {engine!r}")
    note(f"idle: {engine}: " + " ".join(cmd))
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    with open(daemon_log, "wb") as logfh:
        proc = subprocess.Popen(cmd, stdout=logfh, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 20
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = daemon_log.read_text()[-3000:]
                raise RuntimeError(f"{engine} did not start (rc={proc.returncode}):\n{tail}")
            time.sleep(0.05)
        time.sleep(settle)
        note(f"idle: {engine} pid {proc.pid} up; quiet window {seconds:g}s ...")
        results = [{"window": "quiet", **_window(proc.pid, seconds, None)}]
        for style in styles:
            note(f"idle: sibling {style} window {seconds:g}s ({noise_rate:g} writes/s) ...")
            other = logdir / f"other-{style}.log"
            got = _window(proc.pid, seconds, (other, noise_rate, style))
            results.append({"window": f"sibling {style} {noise_rate:g}/s", **got})
        for rate in stream_rates:
            note(f"idle: its own file, {rate:g} writes/s, window {seconds:g}s ...")
            got = _window(proc.pid, seconds, (watched, rate, "held"))
            results.append({"window": f"own file {rate:g}/s", **got})
        rss_kb = 0
        for ln in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if ln.startswith("VmRSS:"):
                rss_kb = int(ln.split()[1])
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        rc = proc.returncode
        tail = daemon_log.read_text(errors="replace")[-2000:] if daemon_log.exists() else ""
        backend = None
        if engine == "fail2ban" and (tmp / "fail2ban.log").exists():
            f2b_text = (tmp / "fail2ban.log").read_text(errors="replace")
            tail += f2b_text[-2000:]
            used = re.search(r"Initiated '(\w+)' backend", f2b_text)
            backend = used.group(1) if used else None
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "benchmark": "idle",
        "engine": engine,
        "engine_detail": PEERS.get(engine, "the daemon, `--dry-run`, `response.enabled: false`"),
        "fail2ban_backend": backend,
        "env": environment(),
        "command": cmd,
        "settle_s": settle,
        "daemon_rss_mb": round(rss_kb / 1024, 1),
        "daemon_exit_code": rc,
        "daemon_log_tail": tail,
        "results": results,
        "noise_styles": {k: NOISE_STYLES[k] for k in styles},
        "target_pct": 0.1,
    }


def _socket_ready(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def print_stream(doc: dict[str, Any]) -> None:
    print(env_line(doc["env"]))
    rows = []
    for run in doc["runs"]:
        for r in run["results"]:
            if r["window"].startswith("own file"):
                writes = max(1, r["sibling_writes"])
                gap = run.get("read_gap")
                rows.append(
                    (
                        run.get("engine", "sshmonitord"),
                        "-" if gap is None else f"{gap:g}",
                        r["window"],
                        r["sibling_writes"],
                        f"{r['cpu_s_proc_stat']:.2f}",
                        f"{r['cpu_pct_proc_stat']:.2f}",
                        f"{1e6 * r['cpu_s_proc_stat'] / writes:.0f}",
                        f"{r['wakeups_per_s']:.1f}",
                    )
                )
    cols = ("engine", "READ_GAP s", "window", "lines", "CPU s", "% of a core", "µs/line",
            "wake-ups/s")  # fmt: skip
    print(table(cols, rows))


def print_idle(doc: dict[str, Any]) -> None:
    print(env_line(doc["env"]))
    for d in [doc, *doc.get("peers", [])]:
        _print_idle_one(d)
    if doc.get("peers"):
        engines = [doc, *doc["peers"]]
        rows = []
        for i, r in enumerate(doc["results"]):
            rows.append((r["window"], *(f"{_pct(e['results'][i]):.3f}" for e in engines)))
        print()
        print(table(("window", *(f"{e['engine']} % core" for e in engines)), rows,
                    "Side by side (process CPU clock, all threads):"))  # fmt: skip


def _pct(r: dict[str, Any]) -> float:
    return float(r["cpu_pct_clock"] if r["cpu_pct_clock"] is not None else r["cpu_pct_proc_stat"])


def _print_idle_one(doc: dict[str, Any]) -> None:
    engine = doc.get("engine", "sshmonitord")
    print()
    print(f"## {engine}: {doc.get('engine_detail', '')}")
    if doc.get("fail2ban_backend"):
        print(f"# fail2ban's backend: {doc['fail2ban_backend']}")
    print("# command: " + " ".join(repr(c) if "\n" in c else c for c in doc["command"]))
    print(
        f"# settled {doc['settle_s']:g}s after it was ready; RSS "
        f"{doc['daemon_rss_mb']} MB; exit code after SIGTERM: {doc['daemon_exit_code']}"
    )
    rows = []
    for r in doc["results"]:
        rows.append(
            (
                r["window"],
                f"{r['window_s']:.1f}",
                r["sibling_writes"],
                f"{r['cpu_s_proc_stat']:.2f}",
                f"{r['cpu_pct_proc_stat']:.3f}",
                "-" if r["cpu_s_clock"] is None else f"{r['cpu_s_clock']:.4f}",
                "-" if r["cpu_pct_clock"] is None else f"{r['cpu_pct_clock']:.4f}",
                r["threads"],
                f"{r['wakeups_per_s']:.1f}",
                "yes" if _pct(r) < doc["target_pct"] else "NO",
            )
        )
    print(
        table(
            (
                "window",
                "secs",
                "sibling writes",
                "CPU s (stat)",
                "% core (stat)",
                "CPU s (clock)",
                "% core (clock)",
                "threads",
                "wakeups/s",
                "< 0.1 %",
            ),
            rows,
        )
    )
    print(
        "  stat: utime+stime from /proc/PID/stat (10 ms ticks); clock: the process CPU-time "
        "clock (ns); wakeups: voluntary context switches, all threads"
    )
    for k, v in doc.get("noise_styles", {}).items():
        print(f"  sibling {k}: {v}")
    for r in doc["results"]:
        per = ", ".join(f"{k}={v:g}" for k, v in r["wakeups_per_s_by_thread"].items())
        print(f"  {r['window']}: wakeups/s per thread: {per}")
    if doc["daemon_exit_code"] != 0 and engine != "floor":  # floor: SIGTERM's default action
        print("# log tail:\n" + doc["daemon_log_tail"])


# ---------------------------------------------------------------------- CLI


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench/tail.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="{throughput,latency,idle,all}")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--json", action="store_true", help="print one JSON document instead")

    def peers(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--peers",
            default="",
            help="comma list of processes measured the same way after sshmonitord, in the "
            "same run: " + "; ".join(f"{k}: {v}" for k, v in PEERS.items()),
        )
        sp.add_argument(
            "--f2b-backend",
            default="auto",
            choices=("auto", "pyinotify", "polling"),
            help="fail2ban's backend (auto: pyinotify where installed, else polling)",
        )

    t = sub.add_parser("throughput", help="lines/s and MB/s reading a big auth.log-like file")
    t.add_argument("--lines", type=int, default=1_000_000, help="lines to generate (1000000)")
    t.add_argument("--repeat", type=int, default=3, help="runs per method (3)")
    t.add_argument("--file", help="use this existing file instead of generating one")
    t.add_argument(
        "--methods",
        default=",".join(m for m, _ in METHODS),
        help="comma list of methods to run, by name or letter (default: all: "
        "cat,binary,text,follower,daemon,parse,detect = a,b,c,d,e,f,g)",
    )
    t.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also cProfile one run of the last method chosen (its store thread too) and "
        "print its top N functions",
    )
    t.add_argument(
        "--python-defaults",
        action="store_true",
        help="run the daemon-path methods (e, f, g) with CPython's default garbage collector "
        "and malloc settings instead of the daemon's own (shows what those are worth)",
    )
    common(t)

    la = sub.add_parser("latency", help="write() -> Line latency, inotify vs stat() polling")
    la.add_argument("--rate", type=float, default=1000, help="lines per second (1000)")
    la.add_argument("--seconds", type=float, default=20, help="how long the writer runs (20)")
    la.add_argument("--poll-interval", type=float, default=1.0, help="stat() period (1.0)")
    la.add_argument("--modes", default="inotify,poll", help="comma list of inotify,poll (both)")
    common(la)

    i = sub.add_parser("idle", help="CPU of a running sshmonitord with nothing to read")
    i.add_argument("--seconds", type=float, default=60, help="each measuring window (60)")
    i.add_argument("--settle", type=float, default=3, help="wait after start-up (3)")
    i.add_argument("--noise-rate", type=float, default=10, help="sibling writes/s (10)")
    i.add_argument(
        "--noise-styles",
        default=",".join(NOISE_STYLES),
        help="comma list of sibling-writer styles, one window each: "
        + "; ".join(f"{k}: {v}" for k, v in NOISE_STYLES.items()),
    )
    i.add_argument("--python", default=sys.executable, help="interpreter to run the daemon")
    peers(i)
    common(i)

    s = sub.add_parser(
        "stream",
        help="CPU of a running sshmonitord while its own file gets one write per line, "
        "with each READ_GAP given (a daemon per gap and round, alternated)",
    )
    s.add_argument("--seconds", type=float, default=20, help="each measuring window (20)")
    s.add_argument("--settle", type=float, default=3, help="wait after start-up (3)")
    s.add_argument("--rates", default="20,100", help="comma list of writes/s (20,100)")
    s.add_argument("--read-gaps", default="0.1,0", help="comma list of READ_GAP s (0.1,0)")
    s.add_argument("--repeat", type=int, default=2, help="rounds over the gaps (2)")
    s.add_argument("--python", default=sys.executable, help="interpreter to run the daemon")
    peers(s)
    common(s)

    a = sub.add_parser("all", help="throughput, latency and idle with modest defaults")
    a.add_argument("--lines", type=int, default=1_000_000)
    a.add_argument("--latency-seconds", type=float, default=10)
    a.add_argument("--idle-seconds", type=float, default=60)
    common(a)

    w = sub.add_parser("_worker")  # internal: one timed run in a fresh process
    w.add_argument("method", choices=sorted(RUNNERS))
    w.add_argument("file")
    w.add_argument("--expect", type=int, required=True)
    w.add_argument("--profile", type=int, default=0)
    w.add_argument("--python-defaults", action="store_true")

    wr = sub.add_parser("_writer")  # internal: the latency benchmark's log writer
    wr.add_argument("path")
    wr.add_argument("rate", type=float)
    wr.add_argument("seconds", type=float)
    return p


def emit(doc: dict[str, Any], as_json: bool, printer: Callable[[dict[str, Any]], None]) -> None:
    if as_json:
        json.dump(doc, sys.stdout, indent=2)
        print()
    else:
        printer(doc)
        sys.stdout.flush()


def _peers(text: str) -> list[str]:
    """``--peers``: the names, checked; fail2ban's server must be installed."""
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = sorted(set(names) - set(PEERS))
    if unknown:
        parser().error(f"--peers: unknown {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    if "fail2ban" in names and shutil.which("fail2ban-server") is None:
        parser().error("--peers fail2ban: fail2ban-server not found (apt-get install fail2ban)")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.cmd == "_worker":
        return cmd_worker(args)
    if args.cmd == "_writer":
        return cmd_writer(args)
    if args.cmd == "throughput":
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        methods = [METHOD_LETTERS.get(m, m) for m in methods]
        unknown = sorted(set(methods) - set(RUNNERS))
        if unknown:
            parser().error(f"unknown method(s): {', '.join(unknown)}")
        doc = throughput(
            args.lines, args.repeat, args.file, args.profile, methods, args.python_defaults
        )
        emit(doc, args.json, print_throughput)
    elif args.cmd == "latency":
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        doc = latency(args.rate, args.seconds, args.poll_interval, modes)
        emit(doc, args.json, print_latency)
    elif args.cmd == "idle":
        styles = [x.strip() for x in args.noise_styles.split(",") if x.strip()]
        if set(styles) - set(NOISE_STYLES):
            parser().error(f"--noise-styles: choose from {', '.join(NOISE_STYLES)}")
        others = _peers(args.peers)
        doc = idle(args.seconds, args.settle, args.noise_rate, args.python, styles)
        doc["peers"] = [
            idle(args.seconds, args.settle, args.noise_rate, args.python, styles,
                 engine=e, f2b_backend=args.f2b_backend)
            for e in others
        ]  # fmt: skip
        emit(doc, args.json, print_idle)
    elif args.cmd == "stream":
        rates = [float(x) for x in args.rates.split(",") if x.strip()]
        gaps = [float(x) for x in args.read_gaps.split(",") if x.strip()]
        others = _peers(args.peers)
        runs = []
        for _ in range(args.repeat):
            for gap in gaps:
                d = idle(args.seconds, args.settle, 0, args.python, (), rates, gap)
                runs.append({"read_gap": gap, **d})
            for e in others:
                d = idle(args.seconds, args.settle, 0, args.python, (), rates,
                         engine=e, f2b_backend=args.f2b_backend)  # fmt: skip
                runs.append({"read_gap": None, **d})
        emit({"benchmark": "stream", "env": environment(), "runs": runs}, args.json, print_stream)
    else:
        docs = []
        steps: list[tuple[Callable[[], dict[str, Any]], Callable[[dict[str, Any]], None]]] = [
            (lambda: throughput(args.lines, 3, None, 0), print_throughput),
            (lambda: latency(1000, args.latency_seconds, 1.0, ["inotify", "poll"]), print_latency),
            (lambda: idle(args.idle_seconds, 3, 10, sys.executable), print_idle),
        ]
        for run, printer in steps:
            doc = run()
            docs.append(doc)
            if not args.json:
                printer(doc)
                print()
                sys.stdout.flush()
        if args.json:
            json.dump(docs, sys.stdout, indent=2)
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
