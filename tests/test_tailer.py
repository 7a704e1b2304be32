"""FileFollower on real files: rotation, truncation, resume. (Real logrotate: test_rotation.py.)"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

from sshmonitord.events import FilePosition, Line, Retired
from sshmonitord.sources.tailer import FileFollower


def drain(f: FileFollower) -> list:
    """poll() until the follower has nothing more right now (it reads in slices)."""
    out = f.poll()
    for _ in range(1000):
        if not f.more:
            break
        out += f.poll()
    return out


def texts(items: list) -> list[str]:
    return [i.text for i in items if isinstance(i, Line)]


def follower(path: Path, start_at: str = "beginning", **kw) -> FileFollower:
    f = FileFollower(str(path), start_at=start_at, drain_grace=0.0, partial_grace=0.0, **kw)
    return f


def append(path: Path, data: str | bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)


def last_pos(items: list) -> FilePosition:
    return [i for i in items if isinstance(i, Line)][-1].position


def test_follows_and_holds_partial_line(tmp_path):
    p = tmp_path / "auth.log"
    append(p, "one\ntwo\nthr")
    f = follower(p)
    assert texts(f.resume([])) == []
    assert texts(drain(f)) == ["one", "two"]
    assert texts(drain(f)) == []
    append(p, "ee\nfour\n")
    out = drain(f)
    assert texts(out) == ["three", "four"]
    assert last_pos(out).offset == p.stat().st_size
    f.close()


def test_start_at_end_skips_history_and_half_written_line(tmp_path):
    p = tmp_path / "auth.log"
    append(p, "old1\nold2\nhalf")
    f = follower(p, start_at="end")
    f.resume([])
    assert texts(drain(f)) == []
    append(p, "-line\nnew\n")
    # The half-written line is emitted whole once complete; history is not.
    assert texts(drain(f)) == ["half-line", "new"]
    f.close()


def test_rename_create_drains_late_writes_to_old_inode(tmp_path):
    p = tmp_path / "auth.log"
    append(p, "a1\n")
    f = FileFollower(str(p), start_at="beginning", drain_grace=0.5, partial_grace=0.5)
    f.resume([])
    assert texts(drain(f)) == ["a1"]
    old = open(p, "ab")  # noqa: SIM115 - a writer (rsyslog) holding the old file open
    os.rename(p, tmp_path / "auth.log.1")
    append(p, "b1\n")  # the new file
    old.write(b"a2-late\n")
    old.flush()
    out = drain(f)
    assert texts(out) == ["a2-late", "b1"]  # old file's lines first
    old.write(b"a3-later\n")
    old.flush()
    out = drain(f)  # still draining: the writer may not have reopened yet
    assert texts(out) == ["a3-later"]
    assert not any(isinstance(i, Retired) for i in out)
    import time

    time.sleep(0.6)  # idle for drain_grace: done with it
    assert any(isinstance(i, Retired) for i in drain(f))
    old.close()
    append(p, "b2\n")
    assert texts(drain(f)) == ["b2"]
    f.close()


def test_copytruncate_restarts_from_zero(tmp_path):
    p = tmp_path / "auth.log"
    append(p, "x1\nx2\n")
    f = follower(p)
    f.resume([])
    assert texts(drain(f)) == ["x1", "x2"]
    shutil.copy(p, tmp_path / "auth.log.1")
    os.truncate(p, 0)
    append(p, "y1\n")
    assert texts(drain(f)) == ["y1"]
    assert f.stats.truncations == 1
    f.close()


def test_truncated_and_regrown_past_offset_between_polls(tmp_path):
    p = tmp_path / "auth.log"
    append(p, "short-1\n")
    f = follower(p)
    f.resume([])
    assert texts(drain(f)) == ["short-1"]
    os.truncate(p, 0)
    append(p, "a much longer first line after truncation\nsecond\n")
    assert texts(drain(f)) == ["a much longer first line after truncation", "second"]
    f.close()


def test_copytruncate_nul_run_from_writer_without_o_append(tmp_path):
    p = tmp_path / "auth.log"
    append(p, "first line\n")
    f = follower(p)
    f.resume([])
    drain(f)
    w = os.open(p, os.O_WRONLY)  # no O_APPEND: keeps writing at its own offset
    os.lseek(w, 11, 0)
    os.truncate(p, 0)
    os.write(w, b"after\n")
    os.close(w)
    assert p.read_bytes().startswith(b"\x00" * 11)
    assert texts(drain(f)) == ["after"]
    assert f.stats.nul_bytes == 11
    f.close()


def test_delete_then_recreate(tmp_path):
    p = tmp_path / "auth.log"
    append(p, "d1\n")
    f = follower(p)
    f.resume([])
    drain(f)
    p.unlink()
    assert texts(drain(f)) == []
    append(p, "n1\n")
    assert texts(drain(f)) == ["n1"]
    f.close()


def test_absent_at_start_then_appears(tmp_path):
    p = tmp_path / "auth.log"
    f = follower(p, start_at="end")
    f.resume([])
    assert f.describe() == f"waiting for {p}"
    assert drain(f) == []
    append(p, "hello\n")
    # A file that appears after we started is read from its beginning.
    assert texts(drain(f)) == ["hello"]
    f.close()


def test_symlinked_path_follows_target_rotation(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    target = real / "auth.log"
    append(target, "s1\n")
    link = tmp_path / "auth.log"
    link.symlink_to(target)
    f = follower(link)
    f.resume([])
    assert texts(drain(f)) == ["s1"]
    os.rename(target, real / "auth.log.1")
    append(target, "s2\n")
    assert texts(drain(f)) == ["s2"]
    f.close()


def test_long_lines_are_cut_and_counted(tmp_path):
    p = tmp_path / "auth.log"
    append(p, "x" * 1000 + "\nok\n" + "y" * 700)
    f = follower(p, max_line_length=300)
    f.resume([])
    out = texts(drain(f))
    assert out == ["x" * 300, "ok", "y" * 300]
    append(p, "y" * 500 + "\nafter\n")
    assert texts(drain(f)) == ["after"]
    assert f.stats.truncated_lines == 2
    f.close()


def test_undecodable_bytes_and_crlf(tmp_path):
    p = tmp_path / "auth.log"
    append(p, b"bad \xff\xfe bytes\r\nfine\n")
    f = follower(p)
    f.resume([])
    assert texts(drain(f)) == ["bad \ufffd\ufffd bytes", "fine"]
    f.close()


def test_resume_exactly_at_saved_offset(tmp_path):
    p = tmp_path / "auth.log"
    append(p, "r1\nr2\n")
    f = follower(p)
    f.resume([])
    out = drain(f)
    pos = next(i for i in out if isinstance(i, Line)).position  # handled only r1
    f.close()
    append(p, "r3\n")
    g = follower(p, start_at="end")
    assert texts(g.resume([pos])) == []
    assert texts(drain(g)) == ["r2", "r3"]
    g.close()


def test_resume_inode_reused_by_new_file_reads_from_start(tmp_path):
    p = tmp_path / "auth.log"
    append(p, "old content line\n")
    f = follower(p)
    f.resume([])
    pos = last_pos(drain(f))
    f.close()
    ino = p.stat().st_ino
    p.unlink()
    # ext4/tmpfs hand a freed inode to the next new file; try until we get the same one.
    for i in range(50):
        q = tmp_path / f"auth.log.tmp{i}"
        q.write_text("new file\n")
        if q.stat().st_ino == ino:
            q.rename(p)
            break
        q.unlink()
    else:
        from conftest import need

        need(False, "this filesystem did not hand the freed inode to a new file")
    assert p.stat().st_ino == pos.inode
    g = follower(p, start_at="end")
    g.resume([pos])
    assert texts(drain(g)) == ["new file"]
    g.close()


def test_resume_drains_file_rotated_while_down(tmp_path):
    p = tmp_path / "auth.log"
    append(p, "k1\nk2\n")
    f = follower(p)
    f.resume([])
    out = drain(f)
    pos = next(i for i in out if isinstance(i, Line)).position  # handled k1 only
    f.close()
    append(p, "k3\n")
    os.rename(p, tmp_path / "auth.log.1")
    append(p, "n1\n")
    g = follower(p, start_at="end")
    out = g.resume([pos])
    assert out == []
    out = drain(g)
    assert texts(out) == ["k2", "k3", "n1"]  # the rotated file first
    assert Retired(str(p), pos.dev, pos.inode) in out
    g.close()


def test_resume_drains_rotated_and_compressed_file(tmp_path):
    p = tmp_path / "auth.log"
    append(p, "g1\ng2\ng3\n")
    f = follower(p)
    f.resume([])
    pos = next(i for i in drain(f) if isinstance(i, Line)).position
    f.close()
    with open(p, "rb") as src, gzip.open(tmp_path / "auth.log.1.gz", "wb") as dst:
        dst.write(src.read())
    p.unlink()
    append(p, "n1\n")
    g = follower(p, start_at="end")
    assert g.resume([pos]) == []
    assert texts(drain(g)) == ["g2", "g3", "n1"]
    g.close()


def test_resume_lost_file_is_reported(tmp_path):
    p = tmp_path / "auth.log"
    append(p, "z\n")
    pos = FilePosition(str(p), 1, 999999, "5:nothing", 2)
    g = follower(p)
    out = g.resume([pos])
    assert out == [Retired(str(p), 1, 999999)]
    assert g.stats.lost_files == 1
    # We had a position for this path, so the file there is new to us: read it all.
    assert texts(drain(g)) == ["z"]
    g.close()


def test_a_backlog_is_read_in_slices(tmp_path):
    from sshmonitord.sources.tailer import MAX_LINES_PER_POLL

    p = tmp_path / "auth.log"
    pad = "x" * 90  # about the length of a real auth.log line
    append(p, "".join(f"line {i} {pad}\n" for i in range(30_000)))
    f = follower(p)
    f.resume([])
    sizes = []
    got = []
    while True:
        out = f.poll()
        sizes.append(len(out))
        got += texts(out)
        if not f.more:
            break
    assert got == [f"line {i} {pad}" for i in range(30_000)]
    # Slices of at most the budget plus one read chunk (256 KiB: ~2,600 such lines).
    assert len(sizes) > 3 and max(sizes) <= MAX_LINES_PER_POLL + 2_700
    f.close()
