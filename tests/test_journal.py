"""The journal source against real journal files written by systemd-journal-remote."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from conftest import need
from rotation_helpers import lost_and_duplicated, wait_caught_up

from sshmonitord.sources.journal import build_command, group_matches, record_to_line

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
BOOT = uuid.uuid4().hex


def _need_tools() -> None:
    need(
        Path(JOURNAL_REMOTE).exists(),
        "systemd-journal-remote missing (apt-get install systemd-journal-remote)",
    )
    need(shutil.which("journalctl") is not None, "journalctl missing")


def _export(seqs: range, comm: str = "sshd") -> bytes:
    out = []
    base = 1_700_000_000_000_000
    for n in seqs:
        out.append(
            f"__REALTIME_TIMESTAMP={base + n * 1000}\n"
            f"__MONOTONIC_TIMESTAMP={n * 1000}\n"
            f"_BOOT_ID={BOOT}\n"
            "_TRANSPORT=syslog\nPRIORITY=6\n"
            f"SYSLOG_IDENTIFIER={comm}\n_COMM={comm}\nSYSLOG_PID=4242\n_PID=4242\n"
            # What journald sets for sshd's own records: they count (test_journal_trust.py).
            f"_UID=0\n_GID=0\n_EXE=/usr/sbin/{comm}\n"
            f"_HOSTNAME=jhost\n_SYSTEMD_UNIT={'ssh' if comm == 'sshd' else comm}.service\n"
            f"MESSAGE=Failed password for root from 192.0.2.1 port {n} ssh2 seq={n:07d}\n"
        )
    return "\n".join(out).encode() + b"\n"


def _append(journal: Path, seqs: range, comm: str = "sshd") -> None:
    r = subprocess.run(
        [JOURNAL_REMOTE, "-o", str(journal), "-"],
        input=_export(seqs, comm),
        capture_output=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr


def _config(journal: Path) -> str:
    return f"sources:\n  mode: journal\n  start_at: beginning\n  journal:\n    files: [{journal}]\n"


def test_follow_append_restart_kill9_nothing_lost_or_repeated(tmp_path, daemon_factory):
    _need_tools()
    j = tmp_path / "test.journal"
    _append(j, range(1, 201))
    _append(j, range(10_000, 10_050), comm="cron")  # filtered out by the matches
    d = daemon_factory(_config(j), args=["--trace-lines"])
    db = d.state_dir / "sshmonitor.db"
    assert len(wait_caught_up(db, 200)) == 200
    _append(j, range(201, 401))  # appended while following
    assert len(wait_caught_up(db, 400)) == 400
    d.signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0
    _append(j, range(401, 601))  # while stopped
    d = daemon_factory(_config(j), args=["--trace-lines"])
    assert len(wait_caught_up(db, 600)) == 600
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(timeout=10)
    _append(j, range(601, 801))
    d = daemon_factory(_config(j), args=["--trace-lines"])
    seqs = wait_caught_up(db, 800)
    d.signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0
    lost, dups = lost_and_duplicated([s for s in seqs if s < 10_000], 800)
    assert not [s for s in seqs if s >= 10_000], "cron records were not filtered out"
    assert lost == [] and dups == {}, (lost[:10], list(dups)[:10])


def test_journalctl_restarted_with_backoff_when_it_dies(tmp_path, daemon_factory):
    _need_tools()
    j = tmp_path / "test.journal"
    _append(j, range(1, 11))
    d = daemon_factory(_config(j), args=["--trace-lines"])
    db = d.state_dir / "sshmonitor.db"
    assert len(wait_caught_up(db, 10)) == 10
    child = subprocess.run(
        ["pgrep", "-P", str(d.proc.pid), "journalctl"], capture_output=True, text=True
    )
    pids = [int(p) for p in child.stdout.split()]
    assert pids, "journalctl child not found"
    for p in pids:
        subprocess.run(["kill", "-9", str(p)], check=False)
    d.wait_log("journalctl exited; restarting")
    _append(j, range(11, 21))
    seqs = wait_caught_up(db, 20)
    lost, dups = lost_and_duplicated(seqs, 20)
    assert lost == [] and dups == {}


def test_group_matches_ors_fields():
    assert group_matches(["_COMM=sshd", "SYSLOG_IDENTIFIER=sshd", "_COMM=sudo"]) == [
        "_COMM=sshd",
        "_COMM=sudo",
        "+",
        "SYSLOG_IDENTIFIER=sshd",
    ]


def test_build_command_variants():
    cmd = build_command("journalctl", ["_COMM=sshd"], None, "end")
    assert cmd == [
        "journalctl",
        "--output=json",
        "--no-pager",
        "--quiet",
        "--follow",
        "--lines=0",
        "_COMM=sshd",
    ]
    cmd = build_command("journalctl", [], "s=abc;i=1", "end", directory="/x", files=["/y"])
    assert "--after-cursor=s=abc;i=1" in cmd and "--directory=/x" in cmd and "--file=/y" in cmd
    assert "--no-tail" in build_command("journalctl", [], None, "beginning")


def test_record_to_line_handles_binary_message_and_garbage():
    rec = {
        "__CURSOR": "c1",
        "MESSAGE": [104, 105, 255],
        "_PID": "7",
        "_COMM": "sshd",
        "__REALTIME_TIMESTAMP": "1700000000000000",
        "IGNORED": "x",
    }
    line = record_to_line(json.dumps(rec).encode())
    assert line is not None
    assert line.text == "hi\ufffd"
    assert line.fields["_PID"] == "7" and "IGNORED" not in line.fields
    assert line.position.cursor == "c1"
    assert record_to_line(b"not json") is None
    assert record_to_line(b"[1,2]") is None


def test_journal_source_reads_real_file_directly(tmp_path):
    _need_tools()
    from sshmonitord.sources.journal import JournalSource

    j = tmp_path / "direct.journal"
    _append(j, range(1, 6))
    got: list = []

    async def emit(batch: list) -> None:
        got.extend(batch)

    async def go() -> None:
        src = JournalSource(emit, matches=["_COMM=sshd"], start_at="beginning", files=[str(j)])
        await src.start()
        deadline = time.monotonic() + 10
        while len(got) < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await src.stop()

    asyncio.run(go())
    assert [ln.text.rsplit("seq=", 1)[1] for ln in got] == [f"{n:07d}" for n in range(1, 6)]
    assert got[0].fields["_HOSTNAME"] == "jhost"
    assert got[0].fields["__REALTIME_TIMESTAMP"] == str(1_700_000_000_000_000 + 1000)
