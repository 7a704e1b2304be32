"""Helpers for tests that rotate real log files with the real logrotate."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from conftest import need

HERE = Path(__file__).resolve().parent
SEQ = re.compile(r"seq=(\d+)")


def logrotate_bin() -> str:
    exe = shutil.which("logrotate") or (
        "/usr/sbin/logrotate" if Path("/usr/sbin/logrotate").exists() else None
    )
    need(exe is not None, "logrotate is not installed (apt-get install logrotate)")
    return str(exe)


class Rotator:
    """Runs `logrotate -f` on one file with a chosen rotation style.

    postrotate waits 0.3 s before telling the writer to reopen, as a busy rsyslog may: for
    that long, lines keep landing in the renamed (or deleted) file.
    """

    def __init__(self, tmp: Path, log: Path, writer_pid: int) -> None:
        self.exe = logrotate_bin()
        self.tmp = tmp
        self.log = log
        self.state = tmp / "logrotate.state"
        self.writer_pid = writer_pid

    def _conf(self, style: str) -> Path:
        opts = {
            "create": "create 0640\n    delaycompress\n    compress",
            "create-compress": "create 0640\n    compress",
            "copytruncate": "copytruncate\n    delaycompress\n    compress",
        }[style]
        post = (
            ""
            if style == "copytruncate"
            else f"    postrotate\n        sleep 0.3\n        kill -HUP {self.writer_pid}\n"
            "    endscript\n"
        )
        conf = self.tmp / f"logrotate-{style}.conf"
        conf.write_text(f"{self.log} {{\n    rotate 20\n    missingok\n    {opts}\n{post}}}\n")
        conf.chmod(0o644)
        return conf

    def rotate(self, style: str) -> None:
        r = subprocess.run(
            [self.exe, "-f", "-s", str(self.state), str(self._conf(style))],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 0, r.stderr

    def delete_recreate(self) -> None:
        self.log.unlink()
        time.sleep(0.3)  # the writer keeps writing into the deleted inode for a while
        subprocess.run(["kill", "-HUP", str(self.writer_pid)], check=True)


def logrotate_once(tmp: Path, log: Path, options: str, name: str = "once") -> None:
    """Run the real `logrotate -f` once on `log` with the given option lines."""
    exe = logrotate_bin()
    conf = tmp / f"logrotate-{name}.conf"
    body = "".join(f"    {o.strip()}\n" for o in options.strip().splitlines())
    conf.write_text(f"{log} {{\n    missingok\n{body}}}\n")
    conf.chmod(0o644)
    r = subprocess.run(
        [exe, "-f", "-s", str(tmp / "logrotate.state"), str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr


def seq_line(n: int) -> str:
    """The line logwriter.py writes for number n (same shape, so tests can mix both)."""
    return f"Nov 24 22:00:00 testhost sshd[4242]: seq={n:07d} padding-{'x' * (n % 50)}\n"


def append_seq(log: Path, first: int, last: int) -> None:
    """Append lines first..last in one write(), as one burst from a logger."""
    data = "".join(seq_line(n) for n in range(first, last + 1)).encode()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def start_writer(log: Path, count: int, rate: float, report: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(HERE / "logwriter.py"), str(log), str(count), str(rate), str(report)]
    )


def traced_seqs(db: Path) -> list[int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT text FROM line_trace ORDER BY id").fetchall()
    finally:
        conn.close()
    out = []
    for (text,) in rows:
        m = SEQ.search(text)
        if m:
            out.append(int(m.group(1)))
    return out


def wait_caught_up(db: Path, expected: int, timeout: float = 30.0) -> list[int]:
    """Poll the trace until it holds `expected` lines or stops growing for 3 s."""
    deadline = time.monotonic() + timeout
    last_n, stable_since = -1, time.monotonic()
    seqs: list[int] = []
    while time.monotonic() < deadline:
        try:
            seqs = traced_seqs(db)
        except sqlite3.OperationalError:
            seqs = []
        if len(seqs) >= expected:
            return seqs
        if len(seqs) != last_n:
            last_n, stable_since = len(seqs), time.monotonic()
        elif time.monotonic() - stable_since > 3:
            return seqs
        time.sleep(0.2)
    return seqs


def lost_and_duplicated(seqs: list[int], written: int) -> tuple[list[int], dict[int, int]]:
    counts = Counter(seqs)
    lost = [n for n in range(1, written + 1) if n not in counts]
    dups = {n: c for n, c in counts.items() if c > 1}
    return lost, dups


def read_report(path: Path) -> dict[str, object]:
    return json.loads(path.read_text())
