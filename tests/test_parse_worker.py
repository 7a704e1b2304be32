"""``replay --jobs 2``: parsing in a second process changes nothing but the speed.

The digests of whole generated logs are in tests/test_replay_golden.py (both ways); here the
edges: a time window, stdin, several files, a damaged .gz, hostile text, the parse process
killed mid-way, and a consumer that stops early (the child must not be left behind).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sshmonitord import parse_worker as pw
from sshmonitord import replay as replay_mod
from sshmonitord.config import Config
from sshmonitord.replay import Replay, event_json


def _log(path: Path, n: int, start_minute: int = 0, hostile: bool = False) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            m = start_minute + i // 60
            stamp = f"Dec  6 {12 + m // 60:02d}:{m % 60:02d}:{i % 60:02d}"
            ip = f"198.51.{i % 7}.{i % 13}" if i % 5 else f"2001:db8:{i % 3}::{i % 11 + 1}"
            user = "root" if i % 3 else f"u{i % 40}"
            if hostile and i % 17 == 0:
                user = "é\u202e\x1b[31mx from 203.0.113.9 port 22 ssh2"
            fh.write(
                f"{stamp} web1 sshd[{1000 + i // 4}]: Failed password for {user} from {ip} "
                f"port {40000 + i} ssh2\n"
            )
            if i % 9 == 0:
                fh.write(f"{stamp} web1 CRON[{5000 + i}]: pam_unix(cron:session): x\n")
            if i % 4 == 3:
                fh.write(
                    f"{stamp} web1 sshd[{1000 + i // 4}]: Connection closed by authenticating "
                    f"user root {ip} port {40000 + i} [preauth]\n"
                )
    os.utime(path, (1796558400, 1796558400))  # 2026-12-06: the year of the classic stamps
    return path


def _run(paths: list[str], jobs: int, **kw: object) -> tuple[list[str], dict[str, object]]:
    r = Replay(UTC, config=Config(), jobs=jobs, **kw)  # type: ignore[arg-type]
    events = [json.dumps(event_json(ev), sort_keys=True) for ev in r.events(paths)]
    d = replay_mod.summary_dict(r)
    for k in ("seconds", "lines_per_second", "parse_process_peak_rss_kb"):
        d.pop(k)
    return events, d


def _children() -> set[int]:
    """This process's live child processes (from /proc)."""
    kids: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as fh:
            kids.update(int(p) for p in fh.read().split())
    return kids


def test_several_files_and_a_time_window_the_same_both_ways(tmp_path: Path) -> None:
    a = _log(tmp_path / "a.log", 9000, hostile=True)
    b = _log(tmp_path / "b.log", 6000, start_minute=150)
    gz = tmp_path / "b.log.gz"
    gz.write_bytes(gzip.compress(b.read_bytes()))
    os.utime(gz, (1796558400, 1796558400))
    since = datetime(2026, 12, 6, 12, 30, tzinfo=UTC)
    until = datetime(2026, 12, 6, 14, 50, tzinfo=UTC)
    one = _run([str(a), str(gz)], 1, since=since, until=until)
    two = _run([str(a), str(gz)], 2, since=since, until=until)
    assert one[0] and one[1]["findings_by_rule"]  # a meaningful log
    assert two == one
    assert one[1]["files"] == [str(a), str(gz)]


def test_stdin_the_same_both_ways(tmp_path: Path) -> None:
    log = _log(tmp_path / "a.log", 5000)
    outs = []
    for jobs in ("1", "2"):
        with log.open("rb") as stdin:
            r = subprocess.run(
                [sys.executable, "-m", "sshmonitord.cli", "replay", "--jobs", jobs,
                 "--timezone", "UTC", "--format", "json", "-"],
                stdin=stdin, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
        assert r.returncode == 0, r.stderr
        summary = json.loads(r.stderr)
        outs.append((r.stdout, summary["kinds"], summary["findings_by_rule"]))
    assert outs[0] == outs[1] and outs[0][0].count("\n") > 5000


def test_a_damaged_gz_stops_at_the_same_place_both_ways(tmp_path: Path) -> None:
    log = _log(tmp_path / "a.log", 20000)
    data = gzip.compress(log.read_bytes())
    gz = tmp_path / "cut.log.gz"
    gz.write_bytes(data[: len(data) // 2])
    results = []
    for jobs in (1, 2):
        out = io.StringIO()
        rc = replay_mod.run([str(gz)], "text", False, None, None, "UTC", out=out, err=out, jobs=jobs)
        results.append((rc, out.getvalue()))
    assert results[0][0] == results[1][0] == 1
    text = results[1][1]
    assert "stopped there" in text and "Traceback" not in text
    # The same lines were read before the error (the summary's first line says how many).
    head = [r[1].split("stopped there")[1].splitlines()[1].split(" in ")[0] for r in results]
    assert head[0] == head[1] and "lines" in head[0]


def test_the_parse_process_killed_is_one_line_not_a_hang(tmp_path: Path) -> None:
    log = _log(tmp_path / "a.log", 60000)
    r = Replay(UTC, config=Config(), jobs=2)
    before = _children()
    it = r.events([str(log)])
    next(it)
    (child,) = _children() - before
    os.kill(child, signal.SIGKILL)
    with pytest.raises(pw.ParseProcessError, match="killed"):
        for _ in it:
            pass
    assert child not in _children()  # reaped
    # The summary of what was read is still exact: the statistics came with every batch.
    st = r.parser.stats
    assert st.lines >= pw.BATCH_LINES and st.events > 0
    assert st.events == sum(st.kinds.values())


def test_a_consumer_that_stops_early_leaves_no_process(tmp_path: Path) -> None:
    log = _log(tmp_path / "a.log", 60000)
    before = _children()
    r = Replay(UTC, config=Config(), jobs=2)
    it = r.events([str(log)])
    for _ in range(10):
        next(it)
    assert len(_children() - before) == 1
    it.close()
    deadline = time.monotonic() + 10
    while _children() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _children() - before


def test_a_missing_file_is_the_same_error_both_ways(tmp_path: Path) -> None:
    good = _log(tmp_path / "a.log", 100)
    for jobs in (1, 2):
        r = Replay(UTC, config=Config(), jobs=jobs)
        with pytest.raises(FileNotFoundError):
            list(r.events([str(good), str(tmp_path / "gone.log")]))


def test_pack_and_unpack_keep_every_field() -> None:
    from ipaddress import ip_address

    from sshmonitord.events import Event, Kind

    unpack = pw.Unpacker()
    for ip in (None, ip_address("192.0.2.1"), ip_address("2001:db8::1"), ip_address("::")):
        ev = Event(
            datetime(2026, 12, 6, 1, 2, 3, 456789, tzinfo=UTC), "h", "sshd", 7, Kind.SU, "ü",
            ip, 22, "password", "SHA256:x", 3, "7", {"a": [1, "b"], "c": None}, "raw ☃",
        )  # fmt: skip
        assert unpack(pw.pack(ev)) == ev


def test_errors_come_back_as_what_they_were() -> None:
    """By class, not by name: struct.error and re.error are also called "error", and must
    not come back as zlib.error (a "damaged file" with exit 1)."""
    import gzip
    import re
    import struct
    import zlib

    cases: list[tuple[BaseException, type[BaseException]]] = [
        (zlib.error("bad"), zlib.error),
        (EOFError("cut"), EOFError),
        (FileNotFoundError("gone"), FileNotFoundError),
        (PermissionError("no"), PermissionError),
        (gzip.BadGzipFile("magic"), OSError),
        (struct.error("too big"), pw.ParseProcessError),
        (re.error("pattern"), pw.ParseProcessError),
        (ValueError("bug"), pw.ParseProcessError),
    ]
    for exc, want in cases:
        with pytest.raises(want) as info:
            pw._raise(pw._error_kind(exc), str(exc))
        assert type(info.value) is want, (exc, info.value)
        assert str(exc) in str(info.value)


def test_two_processes_only_where_two_cores_are_allowed(tmp_path: Path) -> None:
    quota = tmp_path / "cpu.max"
    if len(os.sched_getaffinity(0)) < 2:
        assert replay_mod.default_jobs(str(quota)) == 1
        return
    assert replay_mod.default_jobs(str(tmp_path / "absent")) == 2  # no cgroup v2 file
    for text, want in (("max 100000\n", 2), ("50000 100000\n", 1), ("150000 100000\n", 1),
                       ("200000 100000\n", 2), ("garbage\n", 2)):  # fmt: skip
        quota.write_text(text)
        assert replay_mod.default_jobs(str(quota)) == want, text


def test_stdin_named_twice_is_one_line() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "sshmonitord.cli", "replay", "-", "-"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr == "sshmonitor replay: - (standard input) can be read only once\n"
