"""Rotations while the daemon is down, with the real logrotate (issue #11 items 2, 9, 12).

Each test runs the real daemon with --trace-lines (every handled line is recorded in the
same transaction as the position after it), stops it with SIGTERM, rotates and writes while it
is down, starts it again and compares the handled line numbers with what was written: every
line exactly once, or a gap that is reported (WARNING in the log, and in `sshmonitor status`).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from rotation_helpers import (
    append_seq,
    logrotate_bin,
    logrotate_once,
    lost_and_duplicated,
    traced_seqs,
    wait_caught_up,
)

ROOT = Path(__file__).resolve().parent.parent


def _config(log: Path) -> str:
    return (
        f"sources:\n  mode: file\n  files: [{log}]\n  start_at: beginning\n  poll_interval: 200ms\n"
    )


class Run:
    """One log file and the daemon following it, started and stopped by the test."""

    def __init__(self, tmp: Path, daemon_factory: Any) -> None:
        logrotate_bin()
        self.tmp = tmp
        self.log = tmp / "auth.log"
        self.factory = daemon_factory
        self.d: Any = None
        self.db = tmp / "state" / "sshmonitor.db"

    def start(self) -> None:
        self.d = self.factory(_config(self.log), args=["--trace-lines"])
        self.d.wait_log("sshmonitord started")

    def stop(self) -> None:
        self.d.signal(signal.SIGTERM)
        assert self.d.proc.wait(timeout=10) == 0

    def wait_for(self, n: int) -> list[int]:
        return wait_caught_up(self.db, n, timeout=20)

    def status(self) -> dict[str, Any]:
        r = self.d.cli("status", "--socket", str(self.d.socket_path), "--json")
        assert r.returncode == 0, r.stderr
        st = json.loads(r.stdout)
        return next(s for s in st["stages"] if s["name"] == "tailer")


def _check_exactly(seqs: list[int], first: int, last: int) -> None:
    """Every line first..last handled exactly once (lines outside the range are ignored)."""
    inside = [s for s in seqs if first <= s <= last]
    lost, dups = lost_and_duplicated(inside, last)
    lost = [n for n in lost if n >= first]
    assert not lost, f"lost {len(lost)} lines: {lost[:5]}..{lost[-5:]}"
    assert not dups, f"duplicated {len(dups)} lines: {list(dups.items())[:10]}"


# The rotation styles of item 2, each run twice while the daemon is stopped.
STYLES = {
    "create": "rotate 5\ncreate 0640",
    "compress": "rotate 5\ncreate 0640\ncompress",
    "delaycompress": "rotate 5\ncreate 0640\ncompress\ndelaycompress",
    "dateext": "rotate 5\ncreate 0640\ndateext\ndateformat -%Y%m%d-%s",
    "dateext-compress": "rotate 5\ncreate 0640\ndateext\ndateformat -%Y%m%d-%s\ncompress",
    "copytruncate": "rotate 5\ncopytruncate\ncompress\ndelaycompress",
}


@pytest.mark.parametrize("style", list(STYLES))
def test_two_rotations_while_stopped_every_line_once(tmp_path, daemon_factory, style):
    r = Run(tmp_path, daemon_factory)
    append_seq(r.log, 1, 100)
    r.start()
    assert len(r.wait_for(100)) == 100
    r.stop()
    # Down: the saved file gets more lines, is rotated, the next one too.
    append_seq(r.log, 101, 200)
    logrotate_once(tmp_path, r.log, STYLES[style])
    if "dateext" in style:
        time.sleep(1.05)  # dateformat -%Y%m%d-%s: one name per second
    append_seq(r.log, 201, 300)  # the middle file
    logrotate_once(tmp_path, r.log, STYLES[style])
    append_seq(r.log, 301, 400)
    r.start()
    r.wait_for(400)
    r.stop()
    seqs = traced_seqs(r.db)
    _check_exactly(seqs, 1, 400)
    assert len(seqs) == 400


@pytest.mark.parametrize("damage", ["deleted", "corrupt"])
def test_missing_or_unreadable_middle_generation_is_a_reported_gap(
    tmp_path, daemon_factory, damage
):
    r = Run(tmp_path, daemon_factory)
    opts = "rotate 4\ncreate 0640\ncompress\ndelaycompress"
    append_seq(r.log, 1, 100)
    r.start()
    assert len(r.wait_for(100)) == 100
    r.stop()
    append_seq(r.log, 101, 200)
    logrotate_once(tmp_path, r.log, opts)
    append_seq(r.log, 201, 300)
    logrotate_once(tmp_path, r.log, opts)
    append_seq(r.log, 301, 400)
    logrotate_once(tmp_path, r.log, opts)
    append_seq(r.log, 401, 500)
    # .3.gz holds 1..200 (the saved file), .2.gz 201..300, .1 301..400, auth.log 401..500.
    middle = tmp_path / "auth.log.2.gz"
    size = middle.stat().st_size
    if damage == "deleted":
        middle.unlink()
    else:
        middle.write_bytes(b"\x00" * size)  # same size, not gzip any more
    r.start()
    r.wait_for(400)
    text = r.d.log_text()
    status = r.status()
    r.stop()
    seqs = traced_seqs(r.db)
    _check_exactly(seqs, 1, 200)
    assert not [s for s in seqs if 201 <= s <= 300]  # the damaged generation's lines
    _check_exactly(seqs, 301, 500)
    assert len(seqs) == 400
    gap_logs = [ln for ln in text.splitlines() if "WARNING" in ln and "gap" in ln]
    assert gap_logs, text
    assert "auth.log.2" in gap_logs[0]
    warnings = status["warnings"]
    assert any("gap" in w and "auth.log.2" in w for w in warnings), warnings
    assert status["stats"]["gaps"] == 1
    if damage == "corrupt":
        assert f"bytes_skipped={size}" in gap_logs[0]
        assert any(f"{size} bytes" in w for w in warnings), warnings
        assert status["stats"]["gap_bytes"] == size
    else:
        assert "bytes_skipped=unknown" in gap_logs[0]


def test_saved_file_deleted_by_rotate_1_is_a_reported_gap(tmp_path, daemon_factory):
    r = Run(tmp_path, daemon_factory)
    opts = "rotate 1\ncreate 0640"
    append_seq(r.log, 1, 100)
    r.start()
    assert len(r.wait_for(100)) == 100
    r.stop()
    time.sleep(0.05)  # mtimes after the saved time
    append_seq(r.log, 101, 200)  # lands in the saved file, which rotate 1 then deletes
    logrotate_once(tmp_path, r.log, opts)
    append_seq(r.log, 201, 300)
    logrotate_once(tmp_path, r.log, opts)
    append_seq(r.log, 301, 400)
    r.start()
    r.wait_for(300)
    text = r.d.log_text()
    status = r.status()
    r.stop()
    seqs = traced_seqs(r.db)
    assert not [s for s in seqs if 101 <= s <= 200]  # gone with the deleted file
    _check_exactly(seqs, 1, 100)
    _check_exactly(seqs, 201, 400)
    assert len(seqs) == 300
    gap_logs = [ln for ln in text.splitlines() if "WARNING" in ln and "gap" in ln]
    assert gap_logs and "bytes_skipped=unknown" in gap_logs[0], text
    assert any("gap" in w for w in status["warnings"]), status


# Item 12: a file the daemon first saw empty (logrotate `create` made it).


@pytest.mark.parametrize("change", ["copytruncate", "rewrite"])
def test_file_first_seen_empty_then_changed_while_stopped(tmp_path, daemon_factory, change):
    r = Run(tmp_path, daemon_factory)
    append_seq(r.log, 1, 50)  # history, rotated away before we ever start
    logrotate_once(tmp_path, r.log, "rotate 5\ncreate 0640")
    assert r.log.stat().st_size == 0
    r.start()
    time.sleep(0.5)  # the daemon has opened the empty file
    append_seq(r.log, 51, 90)  # one burst: read in one go while the file was known empty
    assert len(r.wait_for(40)) == 40
    r.stop()
    if change == "copytruncate":
        append_seq(r.log, 91, 130)
        logrotate_once(tmp_path, r.log, "rotate 5\ncopytruncate\ncompress\ndelaycompress")
        append_seq(r.log, 131, 210)  # same inode, new content longer than what we had read
    else:
        with open(r.log, "r+b") as fh:  # rewritten in place: same inode, other content
            fh.truncate(0)
        append_seq(r.log, 91, 210)
    r.start()
    r.wait_for(160)
    r.stop()
    seqs = traced_seqs(r.db)
    assert not [s for s in seqs if s <= 50]  # history before the first start is not read
    _check_exactly(seqs, 51, 210)
    assert len(seqs) == 160


# Item 9: copytruncate while running is reported in status.


def test_copytruncate_while_running_warns_in_status(tmp_path, daemon_factory):
    r = Run(tmp_path, daemon_factory)
    append_seq(r.log, 1, 20)
    r.start()
    assert len(r.wait_for(20)) == 20
    before = r.status()
    assert before["mode"] == "file" and before["forgeable"] is True
    assert before["warnings"] == []
    logrotate_once(tmp_path, r.log, "rotate 5\ncopytruncate")
    append_seq(r.log, 21, 30)
    assert len(r.wait_for(30)) == 30
    status = r.status()
    text = r.d.log_text()
    r.stop()
    want = f"copytruncate rotation detected on {r.log}"
    assert any(w.startswith(want) and "docs/rotation.md" in w for w in status["warnings"]), status
    assert status["stats"]["copytruncates"] == 1
    assert any("WARNING" in ln and "copytruncate" in ln for ln in text.splitlines()), text
    doc = (ROOT / "docs" / "rotation.md").read_text()
    assert "copytruncate" in doc and "create" in doc
