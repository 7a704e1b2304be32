#!/usr/bin/env python3
"""Each stage of a line's way, in µs per line, for this tree and an older one side by side.

    bench/stages.py --file FILE [--lines 200000] [--baseline TREE] [--rounds 3] [--runs 5]

Whole-program figures (bench/replay.py, bench/tail.py) move 5-10 % from one run to the next
on a shared machine: too much to see a change of a few per cent in one stage. This script
times the stages on their own, in fresh processes, the two trees taking turns, and keeps
the best of many runs:

- ``parse``: ``Parser.parse_text`` over the lines, in batches of 1,024 (as replay does);
- ``detect``: ``Engine.feed`` over those events on the default rules (as replay does: every
  event, including the ones no rule reads);
- ``pack``, ``pickle``, ``unpickle``, ``unpack``: replay's hand-off between its parse process
  and the detecting one (sshmonitord/parse_worker.py), per batch of 1,024 lines;
- ``row``: ``store.event_row`` of every event (the daemon's events table);
- ``floor``: not ours, a lower bound for any parser that builds an Event per line: one regex
  for the syslog prefix, one search for "from ADDRESS port N", a cached stamp and address,
  and the Event (no message told from another, no user, no connection memory, no
  statistics). No parser of the same output can do less per line.

After the table, the *ceiling* each tree's stages allow, in lines/s, if nothing else cost
anything: one process (parse + detect), and replay's two processes perfectly balanced
(the slower of parse + pack + pickle and unpickle + unpack + detect); then the same with
``floor`` in place of ``parse``. Whole-program figures can only be lower.

Each worker process sets up its garbage collector as the daemon and replay do (``tune_gc``).
Every figure is per *line* of the file (not per event), so the stages add up. With
``--baseline TREE`` (e.g. ``git worktree add /tmp/prev a6395c2``), the same is run on that
tree's code, with this script, on the same interpreter. A stage the older tree lacks shows
"-". Nothing here writes outside a temporary directory or needs root.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
STAGES = ("parse", "detect", "pack", "pickle", "unpickle", "unpack", "row", "floor")


def each(fn: Any, batches: list[list[Any]]) -> None:
    """``fn`` on every item of every batch, in order (the stage being timed)."""
    for batch in batches:
        for item in batch:
            fn(item)


def worker(path: str, lines: int, runs: int) -> dict[str, list[float]]:
    """Time every stage ``runs`` times in this process; µs per line for each run."""
    import pickle
    from datetime import UTC, datetime

    from sshmonitord.cli.daemon import tune_gc
    from sshmonitord.config import Config
    from sshmonitord.detect.engine import Engine, History
    from sshmonitord.parse import Parser
    from sshmonitord.store import event_row

    try:
        from sshmonitord import parse_worker as pw
    except ImportError:  # a tree from before replay's two processes
        pw = None  # type: ignore[assignment]

    tune_gc()
    with open(path, encoding="utf-8", errors="replace") as fh:
        text = [line.rstrip("\n") for _, line in zip(range(lines), fh, strict=False)]
    n = len(text)
    batches = [text[i : i + 1024] for i in range(0, n, 1024)]
    reference = datetime.fromtimestamp(os.stat(path).st_mtime, UTC)
    out: dict[str, list[float]] = {s: [] for s in STAGES}

    def per_line(t0: float) -> float:
        return (time.perf_counter() - t0) / n * 1e6

    for _ in range(runs):
        parser = Parser(reference=reference)
        parse = parser.parse_text
        t0 = time.perf_counter()
        events = [[ev for ev in map(parse, b) if ev is not None] for b in batches]
        out["parse"].append(per_line(t0))

        engine = Engine(Config().detection, History(), zone=UTC)
        t0 = time.perf_counter()
        each(engine.feed, events)
        out["detect"].append(per_line(t0))

        if pw is not None:
            pack = pw.pack
            t0 = time.perf_counter()
            packed = [[pack(ev) for ev in evs] for evs in events]
            out["pack"].append(per_line(t0))
            t0 = time.perf_counter()
            frames = [pickle.dumps(p, pickle.HIGHEST_PROTOCOL) for p in packed]
            out["pickle"].append(per_line(t0))
            t0 = time.perf_counter()
            loaded = [pickle.loads(f) for f in frames]
            out["unpickle"].append(per_line(t0))
            unpack = pw.Unpacker()
            t0 = time.perf_counter()
            each(unpack, loaded)
            out["unpack"].append(per_line(t0))
            del packed, frames, loaded

        t0 = time.perf_counter()
        each(event_row, events)
        out["row"].append(per_line(t0))
        del events, engine

        floor = Floor(parser)
        t0 = time.perf_counter()
        each(floor, batches)
        out["floor"].append(per_line(t0))
        del parser, floor
    return out


class Floor:
    """The ``floor`` stage: what any parser that builds an Event per line must at least do
    (see the module's docstring). Stamps are read by the real parser's clock, once each."""

    PREFIX = re.compile(r"(\w{3} [ \d]\d \d\d:\d\d:\d\d) (\S+) ([\w.-]+)\[(\d+)\]: ")
    ADDRESS = re.compile(r" from (\S+) port (\d+)")

    def __init__(self, parser: Any) -> None:
        from sshmonitord.events import Event, Kind
        from sshmonitord.parse import PROGRAMS

        self.programs = PROGRAMS
        self.classic = parser.time.classic
        self.event = Event
        self.kind = Kind.AUTH_FAILURE
        self.stamps: dict[str, Any] = {}
        self.ips: dict[str, Any] = {}

    def __call__(self, text: str) -> Any:
        m = self.PREFIX.match(text)
        if m is None:
            return None
        stamp, host, program, pid = m.groups()
        if program not in self.programs:  # cron and the like: no event, as in the parser
            return None
        ts = self.stamps.get(stamp)
        if ts is None:
            ts = self.stamps[stamp] = self.classic(stamp)
        ip = port = None
        a = self.ADDRESS.search(text, m.end())
        if a is not None:
            ip = self.ips.get(a[1])
            if ip is None:
                try:
                    ip = self.ips[a[1]] = ipaddress.ip_address(a[1])
                except ValueError:
                    ip = None
            port = int(a[2])
        return self.event(
            ts, host, program, int(pid), self.kind, None, ip, port, None, None, 1, pid, {}, text
        )


def ceilings(best: dict[str, float]) -> dict[str, float]:
    """Lines/s the stages allow if nothing else cost anything (see the module's docstring)."""
    out: dict[str, float] = {}
    for name, parse in (("parse", best.get("parse")), ("floor", best.get("floor"))):
        if parse is None or "detect" not in best:
            continue
        out[f"one process, {name}"] = 1e6 / (parse + best["detect"])
        hand = ("pack", "pickle", "unpickle", "unpack")
        if all(k in best for k in hand):
            child = parse + best["pack"] + best["pickle"]
            parent = best["unpickle"] + best["unpack"] + best["detect"]
            out[f"two processes, {name}"] = 1e6 / max(child, parent)
    return out


def run_worker(tree: Path, path: str, lines: int, runs: int) -> dict[str, list[float]]:
    # The tree first on sys.path: its sshmonitord, not the one installed here. An editable
    # install's finder would still lend a module the tree lacks from this checkout: it goes.
    boot = (
        f"import sys; sys.path.insert(0, {str(tree)!r}); "
        "sys.meta_path[:] = [f for f in sys.meta_path "
        "if not getattr(f, '__module__', '').startswith('__editable__')]; "
        "import json; from stages import worker; "
        f"print(json.dumps(worker({path!r}, {lines}, {runs})))"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent))
    proc = subprocess.run(
        [sys.executable, "-c", boot],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench/stages.py: the worker on {tree} failed:\n{proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="bench/stages.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--file", required=True, help="an auth.log (bench/gen_authlog.py writes one)")
    ap.add_argument("--lines", type=int, default=200_000, help="lines read from it (200000)")
    ap.add_argument("--baseline", type=Path, help="an older tree to time beside this one")
    ap.add_argument("--rounds", type=int, default=3, help="fresh processes per tree (3)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs in each process (5)")
    ap.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = ap.parse_args(argv)
    if not os.path.exists(args.file):
        ap.error(f"no such file: {args.file}")
    if args.baseline is not None and not (args.baseline / "sshmonitord").is_dir():
        ap.error(f"--baseline {args.baseline}: no sshmonitord/ in it")

    trees = {"this": ROOT}
    if args.baseline is not None:
        trees["baseline"] = args.baseline.resolve()
    runs: dict[str, dict[str, list[float]]] = {t: {s: [] for s in STAGES} for t in trees}
    for r in range(args.rounds):
        for name, tree in trees.items():
            print(f"  round {r + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
            for stage, values in run_worker(tree, args.file, args.lines, args.runs).items():
                runs[name][stage].extend(values)

    doc: dict[str, Any] = {"file": args.file, "lines": args.lines, "trees": {}}
    for name, tree in trees.items():
        doc["trees"][name] = {
            "path": str(tree),
            "best_us_per_line": {s: round(min(v), 3) for s, v in runs[name].items() if v},
            "median_us_per_line": {
                s: round(statistics.median(v), 3) for s, v in runs[name].items() if v
            },
            "ceiling_lines_per_s": {
                k: round(v)
                for k, v in ceilings({s: min(v) for s, v in runs[name].items() if v}).items()
            },
        }
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        print()
        return 0
    print(f"# {args.file}, first {args.lines} lines; µs per line, best (median) of ", end="")
    print(f"{args.rounds} processes x {args.runs} runs per tree")
    print(f"{'stage':10s}" + "".join(f"{n:>22s}" for n in trees))
    for s in STAGES:
        cells = []
        for name in trees:
            t = doc["trees"][name]
            if s in t["best_us_per_line"]:
                cells.append(f"{t['best_us_per_line'][s]:.2f} ({t['median_us_per_line'][s]:.2f})")
            else:
                cells.append("-")
        print(f"{s:10s}" + "".join(f"{c:>22s}" for c in cells))
    print("\n# ceiling, lines/s: the best stages above and nothing else")
    labels = sorted({k for name in trees for k in doc["trees"][name]["ceiling_lines_per_s"]})
    for k in labels:
        cells = [
            f"{doc['trees'][name]['ceiling_lines_per_s'][k]:,}"
            if k in doc["trees"][name]["ceiling_lines_per_s"]
            else "-"
            for name in trees
        ]
        print(f"{k:24s}" + "".join(f"{c:>22s}" for c in cells))
    return 0


if __name__ == "__main__":
    if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != VENV_PYTHON.parent.parent.resolve():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])
    sys.exit(main())
