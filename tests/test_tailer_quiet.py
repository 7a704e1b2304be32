"""The stat() timer's poll of a quiet file (issue #17): nothing is hashed or read while the
file is as it was, and any change in place is still seen, on file systems whose timestamps
are coarse too. Real files, no mocks of the file system; the reads are counted by wrapping
the tailer's own read functions."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import need

from sshmonitord.events import Line
from sshmonitord.sources import tailer
from sshmonitord.sources.tailer import FileFollower, Tailer


def texts(items: list) -> list[str]:
    return [i.text for i in items if isinstance(i, Line)]


def follower(path: Path) -> FileFollower:
    f = FileFollower(str(path), start_at="beginning", drain_grace=0.0, partial_grace=0.0)
    f.resume([])
    return f


def test_a_quiet_file_is_not_hashed_or_read(tmp_path: Path, monkeypatch) -> None:
    p = tmp_path / "auth.log"
    p.write_text("one\ntwo\n")
    f = follower(p)
    assert texts(f.poll()) == ["one", "two"]
    heads: list[int] = []
    reads: list[int] = []
    real_head, real_pread = tailer.read_head, os.pread

    def head(fd: int, n: int) -> bytes:
        heads.append(n)
        return real_head(fd, n)

    def pread(fd: int, n: int, off: int) -> bytes:
        reads.append(n)
        return real_pread(fd, n, off)

    monkeypatch.setattr(tailer, "read_head", head)
    monkeypatch.setattr(os, "pread", pread)
    # Just written: its ctime may share a timestamp tick with a change still to come, so
    # it is checked on every poll until that ctime is RACY_NS old.
    assert f.poll() == []
    assert heads and reads
    time.sleep(tailer.RACY_NS / 1e9 + 0.2)
    assert f.poll() == []  # checked once more, and now its mark is kept
    heads.clear()
    reads.clear()
    for _ in range(3):
        assert f.poll() == []
    assert heads == [] and reads == []
    with open(p, "a") as fh:
        fh.write("three\n")
    assert texts(f.poll()) == ["three"]
    assert heads and reads  # a change: checked and read again
    f.close()


def test_a_partial_line_then_quiet(tmp_path: Path) -> None:
    p = tmp_path / "auth.log"
    p.write_text("one\ntw")
    f = follower(p)
    assert texts(f.poll()) == ["one"]
    assert f.poll() == []
    with open(p, "a") as fh:
        fh.write("o\n")
    assert texts(f.poll()) == ["two"]
    f.close()


@pytest.mark.parametrize("restore_mtime", [False, True])
def test_rewritten_in_place_to_the_same_size_is_seen(
    tmp_path: Path, restore_mtime: bool, monkeypatch
) -> None:
    """Truncated and rewritten between two polls, same size; with its mtime set back too
    (anyone who can write the file can do that): the change time still tells. Marks are
    kept at once here, so that only the change time can tell (this kernel's ext4 and tmpfs
    timestamps are fine-grained, and the rewrite comes 50 ms later)."""
    monkeypatch.setattr(tailer, "RACY_NS", 0)
    p = tmp_path / "auth.log"
    p.write_text("aaaa 1\naaaa 2\n")
    f = follower(p)
    assert texts(f.poll()) == ["aaaa 1", "aaaa 2"]
    assert f.poll() == []
    before = p.stat()
    time.sleep(0.05)  # past the file system's timestamp tick
    with open(p, "r+") as fh:
        fh.truncate(0)
        fh.write("bbbb 1\nbbbb 2\n")
    if restore_mtime:
        os.utime(p, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert p.stat().st_size == before.st_size
    assert texts(f.poll()) == ["bbbb 1", "bbbb 2"]
    assert f.stats.truncations == 1
    f.close()


def test_a_backlog_in_slices_is_read_to_its_end_without_changing(tmp_path: Path) -> None:
    """Between slices the file does not change at all: the unread rest must still be read."""
    p = tmp_path / "auth.log"
    lines = [f"line {i} {'x' * 90}" for i in range(3 * tailer.MAX_LINES_PER_POLL)]
    p.write_text("".join(s + "\n" for s in lines))
    f = follower(p)
    got: list[str] = []
    polls = 0
    while True:
        got += texts(f.poll())
        polls += 1
        if not f.more:
            break
    assert got == lines and polls > 2
    assert f.poll() == []
    f.close()


def test_wait_ends_by_timer_by_wake_and_by_cancel(tmp_path: Path) -> None:
    asyncio.run(waits(tmp_path))


async def waits(tmp_path: Path) -> None:
    t = Tailer([str(tmp_path / "auth.log")], lambda items: None, poll_interval=0.05)
    began = time.monotonic()
    assert await t._wait() is False  # the stat() timer
    assert time.monotonic() - began >= 0.045
    t._wake.clear()
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, t.wake)
    assert await asyncio.wait_for(t._wait(), 5) is True  # woken before the timer
    t._wake.clear()
    t.poll_interval = 3600
    waiting = asyncio.ensure_future(t._wait())
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # The cancelled wait's timer went with it: nothing sets the event an hour from now.
    assert not any(
        getattr(h, "_callback", None) == t._time_out
        for h in loop._scheduled  # type: ignore[attr-defined]
        if not h.cancelled()
    )


def test_a_failed_read_is_retried_though_the_file_did_not_change(
    tmp_path: Path, monkeypatch
) -> None:
    """A read error ends a poll before the end of the file: the next poll must not take the
    file for read to its end because nothing about it changed."""
    monkeypatch.setattr(tailer, "RACY_NS", 0)  # marks kept at once (fine timestamps here)
    p = tmp_path / "auth.log"
    p.write_text("one\n")
    f = follower(p)
    assert texts(f.poll()) == ["one"]
    with open(p, "a") as fh:
        fh.write("two\n")
    real_pread = os.pread
    failures = [OSError(5, "Input/output error")]

    def pread(fd: int, n: int, off: int) -> bytes:
        if failures and off > 0:  # the read of what is new, not the head's check
            raise failures.pop()
        return real_pread(fd, n, off)

    monkeypatch.setattr(os, "pread", pread)
    assert f.poll() == []  # the read failed (and was logged)
    assert texts(f.poll()) == ["two"]
    f.close()


@pytest.fixture
def coarse_fs(tmp_path: Path) -> Iterator[Path]:
    """A ramfs: its timestamps come from the kernel's coarse clock (one tick, a few ms), as
    ext4's, xfs's and tmpfs's do on kernels before multigrain timestamps (6.13), Debian 12's
    among them. Changes within one tick leave size, mtime and ctime as they were."""
    need(os.geteuid() == 0 and shutil.which("mount") is not None, "mounting a ramfs needs root")
    mnt = tmp_path / "ramfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "none", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_same_size_rewrite_then_rotation_in_one_tick_is_not_lost(coarse_fs: Path) -> None:
    """Found by an attack pass on the quiet poll: rewritten in place to its old size right
    after a read, then renamed away (logrotate's `create`) in the same tick. Trusting that
    read's mark lost the rewritten lines for good; a mark is kept only once it is old."""
    unchanged = 0
    for _ in range(20):
        for q in coarse_fs.iterdir():
            q.unlink()
        p = coarse_fs / "auth.log"
        p.write_text("aaaa 1\naaaa 2\n")
        f = follower(p)
        got = texts(f.poll())
        before = os.stat(p)
        with open(p, "r+") as fh:
            fh.truncate(0)
            fh.write("bbbb 1\nbbbb 2\n")
        os.rename(p, coarse_fs / "auth.log.1")
        p.write_text("cccc 1\n")
        after = os.stat(coarse_fs / "auth.log.1")
        key = (before.st_size, before.st_mtime_ns, before.st_ctime_ns)
        unchanged += key == (after.st_size, after.st_mtime_ns, after.st_ctime_ns)
        for _ in range(4):
            got += texts(f.poll())
        f.close()
        assert got == ["aaaa 1", "aaaa 2", "bbbb 1", "bbbb 2", "cccc 1"]
    # The file system really hid the rewrite from fstat (else this test proves nothing).
    assert unchanged >= 10
