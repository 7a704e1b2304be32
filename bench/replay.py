#!/usr/bin/env python3
"""Replay benchmark: ``sshmonitor replay`` against fail2ban-regex and sshguard's parser.

    bench/replay.py [--lines 1000000] [--file FILE] [--tools ours,f2b,f2b-aggr,sshguard] [--json]

Generates (or reuses) a realistic auth.log with bench/gen_authlog.py, then runs each tool on
the same file, one after the other, and measures its wall time and peak RSS (``wait4``'s
rusage of that one child):

- ``ours``:     ``sshmonitor replay --summary --format json --timezone UTC FILE``
- ``f2b``:      ``fail2ban-regex FILE /etc/fail2ban/filter.d/sshd.conf``
- ``f2b-aggr``: ``fail2ban-regex FILE "/etc/fail2ban/filter.d/sshd.conf[mode=aggressive]"``
- ``sshguard``: ``/usr/libexec/sshguard/sshg-parser < FILE``

"matches" is each tool's own count: failure-kind events for ours (auth_failure,
invalid_user, max_auth_exceeded, not_allowed, preauth_disconnect, protocol_error, penalty),
fail2ban-regex's "N matched", one output line per recognised attack for sshguard.

With ``--pss``, ours and ours-1 run once more, untimed, while their process tree is sampled
every 50 ms: the peak of the summed PSS (a page the forked parse process shares with its
parent counts once, not once per process as summed RSS counts it) beside summed RSS.

Then (unless ``--no-breakdown``) a second, untimed pass per tool says *which* lines it matched,
so they can be held against the ground truth line by line:

- ours: the same parser in-process (``sshmonitord.parse.Parser``), line numbers of the
  failure-kind events that carry an address;
- fail2ban-regex with ``--print-all-matched``;
- ``sshg-parser -a`` (marks each attack line), zipped with the addresses of the timed run.

Each matched line is classified (``gen_authlog.classify``) and counted as a *true match* when
the ground truth calls it attack evidence (an attacker's line that carries its address) and
the tool's address, where it reports one, is that attacker's. The tables show the recall
against all attack evidence and against the auth tier alone (what fail2ban's sshd filter and
sshguard are meant to catch), the matches on non-evidence lines, and per category how much
of it each tool matched. Nothing here needs root, bans anything or touches the firewall.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import gen_authlog  # noqa: E402  (a sibling script, not a package)

REPO = HERE.parent
F2B_FILTER = "/etc/fail2ban/filter.d/sshd.conf"
SSHG_PARSER = "/usr/libexec/sshguard/sshg-parser"
TOOLS = ("ours", "ours-1", "baseline", "py-regex", "f2b", "f2b-aggr", "sshguard")
DEFAULT_TOOLS = ("ours", "ours-1", "f2b", "f2b-aggr", "sshguard")
OURS = ("ours", "ours-1", "baseline")
# The floor for any Python parser: one compiled regex (a classic syslog prefix) over every
# line, nothing built. Run in the same interpreter as ours; it calibrates machines against
# each other (issue #17 measured 2.4-2.8M lines/s on the machine of its figures).
PY_REGEX = r"""
import re, sys
r = re.compile(r"(\w{3} [ \d]\d \d\d:\d\d:\d\d) (\S+) ([^\[:]+)(?:\[(\d+)\])?: ")
n = 0
with open(sys.argv[1], encoding="utf-8", errors="replace") as fh:
    for line in fh:
        if r.match(line):
            n += 1
print(n)
"""
INSTALL_HINT = {
    "f2b": "DEBIAN_FRONTEND=noninteractive apt-get install -y fail2ban",
    "f2b-aggr": "DEBIAN_FRONTEND=noninteractive apt-get install -y fail2ban",
    "sshguard": "DEBIAN_FRONTEND=noninteractive apt-get install -y sshguard",
}
FAILURE_KINDS = (
    "auth_failure",
    "invalid_user",
    "max_auth_exceeded",
    "not_allowed",
    "preauth_disconnect",
    "protocol_error",
    "penalty",
)
_F2B_LINES = re.compile(r"^Lines: (\d+) lines, (\d+) ignored, (\d+) matched, (\d+) missed", re.M)

# Run in the project's interpreter: the line numbers of failure-kind events with an address.
OURS_BREAKDOWN = r"""
import os, sys
from datetime import UTC, datetime
from sshmonitord.parse import Parser
from sshmonitord.replay import FAILURE_KINDS
path, out = sys.argv[1], sys.argv[2]
p = Parser(zone=UTC, reference=datetime.fromtimestamp(os.stat(path).st_mtime, UTC))
parse = p.parse_text
no_ip = 0
with open(path, encoding="utf-8", errors="replace", newline="\n") as fh, \
        open(out, "w", encoding="utf-8") as w:
    for i, line in enumerate(fh):
        ev = parse(line[:-1] if line.endswith("\n") else line)
        if ev is None or ev.kind not in FAILURE_KINDS:
            continue
        if ev.ip is None:
            no_ip += 1
            continue
        w.write(f"{i}\t{ev.kind}\t{ev.ip}\n")
print(no_ip)
"""


@dataclass
class Run:
    tool: str
    command: str
    seconds: float = 0.0
    rss_mb: float = 0.0
    lines_per_s: float = 0.0
    matches: int | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    breakdown: dict[str, Any] | None = None


# ---------------------------------------------------------------------------- running


GNU_TIME = "/usr/bin/time"
_RSS_MARK = "sshmonitord-bench-maxrss-kb="


def measure(argv: list[str], stdin_path: str | None, stdout_path: str) -> tuple[int, float, float]:
    """Run one child; (exit status, wall seconds, peak RSS in MB) from its own rusage.

    A child's ru_maxrss counts the pages of the process it was forked from until its exec,
    so a tool smaller than this script (sshguard's parser: a few MB) would read as this
    script's size. GNU time, itself small, forks the tool and reports the tool's own peak;
    without it the figure from wait4 is an upper bound."""
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL  # noqa: SIM115
    timed = os.access(GNU_TIME, os.X_OK)
    if timed:
        argv = [GNU_TIME, "-f", _RSS_MARK + "%M", *argv]
    err_path = stdout_path + ".err"
    try:
        with open(stdout_path, "wb") as out, open(err_path, "wb") as err:
            t = time.perf_counter()
            proc = subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=err)
            _, status, ru = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t
            proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if stdin_path:
            stdin.close()  # type: ignore[union-attr]
    rss_mb = ru.ru_maxrss / 1024
    if timed:
        with open(err_path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        head, mark, tail = text.rpartition(_RSS_MARK)
        if mark:
            with contextlib.suppress(ValueError):
                rss_mb = int(tail.split()[0]) / 1024
            with open(err_path, "w", encoding="utf-8") as fh:
                fh.write(head)
    return proc.returncode, wall, rss_mb


def find_sshmonitor() -> str | None:
    venv = REPO / ".venv" / "bin" / "sshmonitor"
    return str(venv) if venv.exists() else shutil.which("sshmonitor")


def interpreter_of(script: str) -> str:
    """The Python that runs an entry-point script (its venv's, from the shebang)."""
    beside = Path(script).parent / "python"
    if beside.exists():
        return str(beside)
    with open(script, encoding="utf-8", errors="replace") as fh:
        first = fh.readline()
    return first[2:].strip().split()[0] if first.startswith("#!") else sys.executable


def tool_argv(
    tool: str, path: str, sshmonitor: str | None, baseline: str | None = None
) -> tuple[list[str], str | None]:
    """(argv, stdin file) of a tool's timed run; argv is empty when the tool is missing."""
    if tool in OURS:
        if sshmonitor is None or (tool == "baseline" and baseline is None):
            return [], None
        replay = ["replay", "--summary", "--format", "json", "--timezone", "UTC", path]
        if tool == "baseline":
            # An older tree's code on the same interpreter and libraries (BASELINE is put
            # first on sys.path by the -c below).
            boot = (
                f"import sys; sys.path.insert(0, {baseline!r}); "
                "from sshmonitord.cli import main; sys.exit(main())"
            )
            return [interpreter_of(sshmonitor), "-c", boot, *replay], None
        jobs = ["--jobs", "1"] if tool == "ours-1" else []
        return [sshmonitor, *replay[:1], *jobs, *replay[1:]], None
    if tool == "py-regex":
        if sshmonitor is None:
            return [], None
        return [interpreter_of(sshmonitor), "-c", PY_REGEX, path], None
    if tool in ("f2b", "f2b-aggr"):
        exe = shutil.which("fail2ban-regex")
        if exe is None or not os.path.exists(F2B_FILTER):
            return [], None
        flt = F2B_FILTER if tool == "f2b" else F2B_FILTER + "[mode=aggressive]"
        return [exe, path, flt], None
    if tool == "sshguard":
        if not os.access(SSHG_PARSER, os.X_OK):
            return [], None
        return [SSHG_PARSER], path
    raise ValueError(tool)


def shell_words(argv: list[str], stdin: str | None) -> str:
    import shlex

    s = " ".join(shlex.quote(a) for a in argv)
    return s + (f" < {shlex.quote(stdin)}" if stdin else "")


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc/PID/task/*/children."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children", encoding="ascii") as fh:
                    todo.extend(int(c) for c in fh.read().split())
    return out


def _rollup_kb(pid: int) -> tuple[int, int]:
    """(Pss, Rss) of one process in KiB, from /proc/PID/smaps_rollup; (0, 0) once gone."""
    pss = rss = 0
    with (
        contextlib.suppress(OSError, ValueError),
        open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh,
    ):
        for line in fh:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
    return pss, rss


def sampled_memory(
    argv: list[str], stdin_path: str | None, interval: float = 0.05
) -> tuple[float, float]:
    """Run one child untimed and sample its process tree every ``interval`` s: the peak of
    the summed PSS (each shared page divided among the processes sharing it, so a forked
    process's pages shared with its parent count once in all) and of the summed RSS (which
    counts them once per process), in MB of 1,024 KiB as the timed table. Sampling misses
    peaks shorter than the interval; both figures are sampled alike."""
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL  # noqa: SIM115
    peak_pss = peak_rss = 0
    try:
        proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.DEVNULL)
        while proc.poll() is None:
            pss = rss = 0
            for pid in _tree(proc.pid):
                a, b = _rollup_kb(pid)
                pss, rss = pss + a, rss + b
            peak_pss, peak_rss = max(peak_pss, pss), max(peak_rss, rss)
            time.sleep(interval)
    finally:
        if stdin_path:
            stdin.close()  # type: ignore[union-attr]
    return peak_pss / 1024, peak_rss / 1024


def timed_run(
    tool: str,
    path: str,
    n_lines: int,
    sshmonitor: str | None,
    work: str,
    baseline: str | None = None,
) -> Run:
    argv, stdin = tool_argv(tool, path, sshmonitor, baseline)
    if not argv:
        if tool == "baseline":
            what = "no --baseline TREE given"
        elif tool in OURS or tool == "py-regex":
            what = "sshmonitor not found"
        else:
            what = f"not installed ({INSTALL_HINT[tool]})"
        return Run(tool, "", note=what)
    out = os.path.join(work, f"{tool}.out")
    rc, wall, rss = measure(argv, stdin, out)
    run = Run(tool, shell_words(argv, stdin), wall, rss, n_lines / wall if wall else 0.0)
    run.extra["stdout"] = out
    with open(out, encoding="utf-8", errors="replace") as fh:
        text = fh.read() if tool != "sshguard" else ""
    if rc != 0:
        with open(out + ".err", encoding="utf-8", errors="replace") as fh:
            run.note = f"exit {rc}: {fh.read()[-300:].strip()}"
        return run
    if tool in OURS:
        d = json.loads(text)
        run.matches = sum(d["kinds"].get(k, 0) for k in FAILURE_KINDS)
        # Memory is the sum over the processes: replay's own and its parse process's.
        worker_kb = d.get("parse_process_peak_rss_kb")
        if worker_kb:
            run.note = f"RSS {rss:.1f} + {worker_kb / 1024:.1f} MB (parse process)"
            run.rss_mb = rss + worker_kb / 1024
        run.extra["findings_by_rule"] = d.get("findings_by_rule")
        run.extra["bans"] = d.get("bans_that_would_be_placed")
        run.extra.update(
            kinds=d["kinds"],
            unrecognized=d["unrecognized"],
            unrecognized_samples=d["unrecognized_samples"],
            malformed=d["malformed"],
            parser_errors=d["parser_errors"],
            distinct_offenders=d["distinct_offenders"],
            own_lines_per_second=d["lines_per_second"],
        )
    elif tool == "py-regex":
        run.matches = None
        run.note = f"{int(text.strip() or 0):,} lines matched the prefix (a floor, not a parser)"
    elif tool in ("f2b", "f2b-aggr"):
        m = _F2B_LINES.search(text)
        if m is None:
            run.note = "no 'Lines:' summary in fail2ban-regex's output"
        else:
            total, ignored, matched, missed = map(int, m.groups())
            run.matches = matched
            run.extra.update(lines=total, ignored=ignored, matched=matched, missed=missed)
    else:
        n = 0
        with open(out, "rb") as fh:
            for _ in fh:
                n += 1
        run.matches = n
    return run


# ---------------------------------------------------------------------------- breakdown


@dataclass
class Matched:
    """What one tool matched, by line number (with the address it saw) or by text."""

    by_index: dict[int, str | None] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    note: str = ""


def breakdown_ours(path: str, sshmonitor: str, work: str) -> Matched:
    out = os.path.join(work, "ours.lines")
    py = interpreter_of(sshmonitor)
    res = subprocess.run(
        [py, "-c", OURS_BREAKDOWN, path, out], capture_output=True, text=True, check=True
    )
    no_ip = int(res.stdout.strip() or 0)
    m = Matched(note=f"{no_ip:,} more failure-kind events carried no address (not counted)")
    with open(out, encoding="utf-8") as fh:
        for row in fh:
            i, kind, ip = row.rstrip("\n").split("\t")
            m.by_index[int(i)] = ip
            m.kinds[kind] += 1
    return m


def breakdown_f2b(path: str, tool: str, work: str) -> Matched:
    argv, _ = tool_argv(tool, path, None)
    out = os.path.join(work, f"{tool}.matched")
    with open(out, "wb") as fh:
        subprocess.run(
            [argv[0], "--print-all-matched", "--print-no-missed", "--print-no-ignored", *argv[1:]],
            stdout=fh,
            stderr=subprocess.DEVNULL,
            check=True,
        )
    m = Matched()
    inside = False
    with open(out, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("|- Matched line(s):"):
                inside = True
            elif inside and line.startswith("|  "):
                m.texts.append(line[3:].rstrip("\n"))
            elif inside:
                break
    return m


def breakdown_sshguard(path: str, timed_out: str, work: str) -> Matched:
    out = os.path.join(work, "sshguard.annotated")
    with open(path, "rb") as src, open(out, "wb") as dst:
        subprocess.run([SSHG_PARSER, "-a"], stdin=src, stdout=dst, check=True)
    m = Matched()
    with open(out, "rb") as ann, open(timed_out, encoding="utf-8") as attacks:
        for i, line in enumerate(ann):
            if line.startswith(b"* "):
                # "100 203.0.113.5 4 10": service, address, family, dangerousness
                parts = attacks.readline().split()
                m.by_index[i] = parts[1] if len(parts) > 1 else None
                m.kinds[f"danger {parts[3]}" if len(parts) > 3 else "?"] += 1
    return m


_PID = re.compile(r"\S+ +\d+ \S+ \S+ sshd\[(\d+)\]: ")


def connection_kind(cats: list[str]) -> str:
    """What an attacker's connection (one sshd pid) did, from the categories of its lines."""
    tries = cats.count("failed_password") + cats.count("failed_password_invalid")
    s = set(cats)
    if "max_auth_exceeded" in s:
        return "password, MaxAuthTries reached"
    if tries > 1:
        return "password, 2-5 tries"
    if tries == 1:
        return "password, 1 try"
    for cat, kind in (
        ("invalid_user", "invalid user, no password"),
        ("closed_authenticating_user", "root, keys offered only"),
        ("disconnected_authenticating_user", "root, quit before password"),
        ("banner_invalid_format", "scan: not SSH (banner)"),
        ("unable_to_negotiate", "scan: no common algorithm"),
        ("closed_after_kex", "scan: closed in ident exchange"),
        ("reset_after_kex", "scan: reset in ident exchange"),
        ("closed_preauth", "scan: closed before auth"),
        ("reset_preauth", "scan: reset before auth"),
        ("timeout_before_auth", "scan: LoginGraceTime timeout"),
    ):
        if cat in s:
            return kind
    return "other"


def score_all(path: str, matched: dict[str, Matched], truth: dict[str, Any]) -> dict[str, Any]:
    """One pass over the file: per tool, matched lines per category, true matches, recall;
    and per attacker connection (sshd pid) whether each tool matched any of its evidence."""
    per_cat: dict[str, Counter[str]] = {t: Counter() for t in matched}
    wrong: Counter[str] = Counter()
    true: Counter[str] = Counter()
    detected: dict[str, set[int]] = {t: set() for t in matched}
    conns: dict[int, list[str]] = {}
    by_index = {t: m.by_index for t, m in matched.items() if m.by_index}
    classify = gen_authlog.classify
    categories = gen_authlog.CATEGORIES
    evidence = {c for c in categories if gen_authlog.is_evidence(c)}
    with open(path, encoding="utf-8", errors="replace", newline="\n") as fh:
        for i, line in enumerate(fh):
            cat, ip = classify(line)
            pid = -1
            if cat in categories and categories[cat][0] == "attack":
                pm = _PID.match(line)
                pid = int(pm.group(1)) if pm else -1
                conns.setdefault(pid, []).append(cat)
            for tool, idx in by_index.items():
                if i in idx:
                    per_cat[tool][cat] += 1
                    got = idx[i]
                    if ip is not None and got is not None and _norm(got) != _norm(ip):
                        wrong[tool] += 1
                    elif cat in evidence:
                        true[tool] += 1
                        detected[tool].add(pid)
    for tool, m in matched.items():
        for text in m.texts:
            cat = classify(text)[0]
            per_cat[tool][cat] += 1
            if cat in evidence:
                true[tool] += 1
                pm = _PID.match(text)
                if pm:
                    detected[tool].add(int(pm.group(1)))
    kinds = {pid: connection_kind(cats) for pid, cats in conns.items()}
    conn_total = Counter(kinds.values())
    out: dict[str, Any] = {"connections": dict(conn_total.most_common()), "tools": {}}
    for tool, m in matched.items():
        pc = per_cat[tool]
        auth = sum(n for c, n in pc.items() if categories.get(c) == ("attack", "auth"))
        total = sum(pc.values())
        det = Counter(kinds[p] for p in detected[tool] if p in kinds)
        out["tools"][tool] = {
            "matched_lines": total,
            "true_matches": true[tool],
            "recall_evidence": true[tool] / truth["attack_evidence_lines"],
            "auth_matched": auth,
            "recall_auth": auth / truth["auth_failure_evidence_lines"],
            "non_evidence_matched": total - true[tool] - wrong[tool],
            "wrong_address": wrong[tool],
            "connections_detected": sum(det.values()),
            "connections_recall": sum(det.values()) / max(1, len(kinds)),
            "connections_by_kind": dict(det),
            "per_category": dict(pc.most_common()),
            "kinds": dict(m.kinds.most_common()),
            "note": m.note,
        }
    return out


def _norm(ip: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip


# ---------------------------------------------------------------------------- output


class Table:
    def __init__(self, out: TextIO, truth: dict[str, Any]) -> None:
        self.out = out
        self.truth = truth

    def header(self) -> None:
        w = self.out.write
        w(
            f"\n{'tool':<10} {'lines/s':>10} {'seconds':>8} {'peak RSS MB':>11} {'matches':>9} "
            f"{'matches / truth':>16}\n"
        )
        w("-" * 69 + "\n")
        self.out.flush()

    def legend(self) -> None:
        self.out.write(
            "(matches: the tool's own count -- ours: failure-kind events, with or without an\n"
            " address; fail2ban-regex: its 'matched' lines; sshguard: attacks printed. truth =\n"
            f" {self.truth['attack_evidence_lines']:,} attack-evidence lines)\n"
        )

    def row(self, r: Run) -> None:
        if r.matches is None and not r.seconds:
            self.out.write(f"{r.tool:<10} {r.note}\n")
        else:
            ratio = (
                f"{100 * r.matches / self.truth['attack_evidence_lines']:.1f}%"
                if r.matches is not None
                else "-"
            )
            matches = f"{r.matches:,}" if r.matches is not None else "-"
            self.out.write(
                f"{r.tool:<10} {r.lines_per_s:>10,.0f} {r.seconds:>8.1f} {r.rss_mb:>11.1f} "
                f"{matches:>9} {ratio:>16}" + (f"  {r.note}" if r.note else "") + "\n"
            )
        self.out.flush()

    def truth_rows(self, runs: list[Run], connections: dict[str, int]) -> None:
        t = self.truth
        w = self.out.write
        scored = [r for r in runs if r.breakdown is not None]
        if not scored:
            return
        w(
            f"\nGround truth: {t['attack_evidence_lines']:,} attack-evidence lines "
            f"({t['auth_failure_evidence_lines']:,} auth tier, "
            f"{t['evidence_by_tier']['preauth']:,} preauth, "
            f"{t['evidence_by_tier']['protocol']:,} protocol) from "
            f"{t['distinct_attackers']:,} addresses; {t['password_attempts']:,} password "
            f"attempts\n\n"
        )
        w(
            f"{'tool':<10} {'true matches':>12} {'recall':>7} {'auth tier':>17} "
            f"{'other lines':>11} {'wrong addr':>10} {'conns seen':>10}\n"
        )
        w("-" * 83 + "\n")
        for r in scored:
            b = r.breakdown
            assert b is not None
            auth = f"{b['auth_matched']:,} ({100 * b['recall_auth']:.1f}%)"
            w(
                f"{r.tool:<10} {b['true_matches']:>12,} {100 * b['recall_evidence']:>6.1f}% "
                f"{auth:>17} {b['non_evidence_matched']:>11,} {b['wrong_address']:>10,} "
                f"{100 * b['connections_recall']:>9.1f}%\n"
            )
        for r in scored:
            if r.breakdown and r.breakdown["note"]:
                w(f"  {r.tool}: {r.breakdown['note']}\n")
        # Per category: matched / present.
        cats = t["categories"]
        w(
            f"\n{'category (* = evidence)':<36} {'lines':>8}"
            + "".join(f" {r.tool:>9}" for r in scored)
            + "\n"
        )
        w("-" * (45 + 10 * len(scored)) + "\n")
        shown = [c for c, v in cats.items() if v["lines"]]
        shown.sort(
            key=lambda c: (not cats[c]["evidence"], cats[c]["group"] != "attack", -cats[c]["lines"])
        )
        for c in shown:
            n = cats[c]["lines"]
            hits = [r.breakdown["per_category"].get(c, 0) for r in scored]  # type: ignore[index]
            if not cats[c]["evidence"] and not any(hits):
                continue
            mark = "*" if cats[c]["evidence"] else " "
            w(f"{mark}{c:<35} {n:>8,}" + "".join(f" {_pct(h, n):>9}" for h in hits) + "\n")
        w(
            "\n(other lines: matched lines that are not attack evidence -- a legitimate user's\n"
            " typo, or an attacker line without an address; a cell below is the share of that\n"
            " category's lines the tool matched)\n"
        )
        n_conn = sum(connections.values())
        w(
            f"\n{'attacker connections (sshd pids)':<36} {'conns':>8}"
            + "".join(f" {r.tool:>9}" for r in scored)
            + "\n"
        )
        w("-" * (45 + 10 * len(scored)) + "\n")
        for kind, n in connections.items():
            hits = [
                r.breakdown["connections_by_kind"].get(kind, 0)  # type: ignore[index]
                for r in scored
            ]
            w(f" {kind:<35} {n:>8,}" + "".join(f" {_pct(h, n):>9}" for h in hits) + "\n")
        hits = [r.breakdown["connections_detected"] for r in scored]  # type: ignore[index]
        w(f" {'all':<35} {n_conn:>8,}" + "".join(f" {_pct(h, n_conn):>9}" for h in hits) + "\n")
        w("\n(a cell is the share of those connections with at least one evidence line matched)\n")
        self.out.flush()


def _pct(hit: int, n: int) -> str:
    if not hit:
        return "-"
    if hit == n:
        return "100%"
    pct = 100 * hit / n
    return ">99.9%" if pct > 99.95 else f"{pct:.1f}%"


# ---------------------------------------------------------------------------- main


def ensure_file(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    share = "" if args.attack_share is None else f"-attack{args.attack_share:g}"
    path = args.file or os.path.join(
        tempfile.gettempdir(),
        "sshmonitord-bench",
        f"auth-{args.lines}-seed{args.seed}{share}.log",
    )
    tpath = path + ".truth.json"
    truth: dict[str, Any] | None = None
    if os.path.exists(path) and os.path.exists(tpath) and not args.regen:
        with open(tpath, encoding="utf-8") as fh:
            truth = json.load(fh)
        if args.file is None and truth.get("lines") != args.lines:
            truth = None
    if truth is None:
        if args.file and os.path.exists(path) and not os.path.exists(tpath) and not args.regen:
            sys.exit(
                f"{path} exists without {tpath}: pass --regen to overwrite it with a generated log"
            )
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        sys.stderr.write(f"generating {args.lines:,} lines into {path} ...\n")
        cron = 0.35
        if args.attack_share is not None:
            cron = gen_authlog.cron_share_for(args.attack_share, args.lines, 7.0)
        truth = gen_authlog.generate(
            path,
            args.lines,
            args.seed,
            gen_authlog.default_start(7.0),
            cron_share=cron,
            quiet=args.json,
        )
    return path, truth


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Measure sshmonitor replay, fail2ban-regex (normal and aggressive) and "
        "sshguard's parser on the same generated auth.log: wall time, peak RSS, matches, and "
        "matches against the generator's ground truth.",
    )
    ap.add_argument(
        "--lines",
        type=int,
        default=1_000_000,
        help="lines to generate when no --file is given (default 1M)",
    )
    ap.add_argument(
        "--file",
        help="the log to use (generated, with FILE.truth.json, if missing; "
        "default: $TMPDIR/sshmonitord-bench/auth-LINES-seedSEED.log)",
    )
    ap.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    ap.add_argument("--regen", action="store_true", help="regenerate the file even if present")
    ap.add_argument(
        "--attack-share",
        type=float,
        default=None,
        help="generate an attack-heavy log: this share of lines from attacks (e.g. 0.95; "
        "default: the generator's mix, where CRON is a third)",
    )
    ap.add_argument(
        "--tools",
        default=",".join(DEFAULT_TOOLS),
        help=f"comma-separated, in run order, from {','.join(TOOLS)} (default "
        f"{','.join(DEFAULT_TOOLS)}). ours: sshmonitor replay as installed (two processes "
        "where two cores are free); ours-1: with --jobs 1; baseline: the code of --baseline "
        "TREE; py-regex: one compiled regex over every line (the floor)",
    )
    ap.add_argument(
        "--baseline",
        metavar="TREE",
        help="a checkout of an older sshmonitord (e.g. `git worktree add /tmp/old 5ad1650`) "
        "to run as the tool 'baseline', on the same interpreter: before and after in one run",
    )
    ap.add_argument(
        "--no-breakdown",
        action="store_true",
        help="skip the second, untimed pass that matches lines to the ground truth",
    )
    ap.add_argument(
        "--pss",
        action="store_true",
        help="after the timed runs, run ours and ours-1 once more, untimed, sampling their "
        "processes' memory every 50 ms: peak PSS summed over the processes (a page the parse "
        "process shares with its parent counts once) beside RSS summed the same way",
    )
    ap.add_argument(
        "--json",
        action="store_true",
        help="print the results as JSON on stdout (the tables go to stderr)",
    )
    args = ap.parse_args(argv)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    bad = [t for t in tools if t not in TOOLS]
    if bad:
        ap.error(f"unknown tool(s) {', '.join(bad)}; choose from {', '.join(TOOLS)}")

    path, truth = ensure_file(args)
    n_lines = truth["lines"]
    size_mb = os.path.getsize(path) / 1e6
    out = sys.stderr if args.json else sys.stdout
    out.write(f"file: {path} ({n_lines:,} lines, {size_mb:,.1f} MB)\n")
    sshmonitor = find_sshmonitor()
    table = Table(out, truth)
    table.header()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="sshmonitord-bench-") as work:
        for tool in tools:
            r = timed_run(tool, path, n_lines, sshmonitor, work, args.baseline)
            runs.append(r)
            table.row(r)
        table.legend()
        if args.pss:
            out.write("\nmemory pass (untimed, sampled every 50 ms, MB of 1,024 KiB):\n")
            for r in runs:
                if r.tool not in ("ours", "ours-1") or r.matches is None:
                    continue
                argv_, stdin_ = tool_argv(r.tool, path, sshmonitor, args.baseline)
                pss, rss = sampled_memory(argv_, stdin_)
                r.extra.update(peak_pss_mb=round(pss, 1), sampled_peak_rss_mb=round(rss, 1))
                out.write(
                    f"  {r.tool:<8} peak PSS summed over its processes {pss:6.1f}   "
                    f"peak RSS summed {rss:6.1f}\n"
                )
                out.flush()
        if not args.no_breakdown:
            out.write("\nbreakdown pass (untimed): which lines each tool matched ...\n")
            out.flush()
            matched: dict[str, Matched] = {}
            for r in runs:
                if r.matches is None:
                    continue
                if r.tool in ("ours-1", "baseline", "py-regex"):
                    continue  # the same parser as ours (or no parser): nothing new to score
                if r.tool == "ours":
                    assert sshmonitor is not None
                    matched[r.tool] = breakdown_ours(path, sshmonitor, work)
                elif r.tool in ("f2b", "f2b-aggr"):
                    matched[r.tool] = breakdown_f2b(path, r.tool, work)
                else:
                    matched[r.tool] = breakdown_sshguard(path, r.extra["stdout"], work)
            scores = score_all(path, matched, truth)
            for r in runs:
                r.breakdown = scores["tools"].get(r.tool)
            table.truth_rows(runs, scores["connections"])
        for r in runs:
            r.extra.pop("stdout", None)
    ours = next((r for r in runs if r.tool == "ours" and r.matches is not None), None)
    if ours is not None:
        samples = ours.extra.get("unrecognized_samples") or []
        out.write(
            f"\nours: {ours.extra['unrecognized']:,} unrecognized sshd lines, "
            f"{ours.extra['malformed']:,} malformed, {ours.extra['parser_errors']} parser "
            f"errors\n"
        )
        for s in samples:
            out.write(f"  {s}\n")
    if args.json:
        doc = {
            "file": path,
            "lines": n_lines,
            "size_mb": round(size_mb, 1),
            "truth": {k: v for k, v in truth.items() if k != "attackers"},
            "runs": [
                {
                    "tool": r.tool,
                    "command": r.command,
                    "seconds": round(r.seconds, 3),
                    "lines_per_second": round(r.lines_per_s),
                    "peak_rss_mb": round(r.rss_mb, 1),
                    "matches": r.matches,
                    "note": r.note,
                    "details": r.extra,
                    "breakdown": r.breakdown,
                }
                for r in runs
            ],
        }
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0 if all(r.matches is not None for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
