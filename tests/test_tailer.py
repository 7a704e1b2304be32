"""FileFollower on real files: rotation, truncation, resume. (Real logrotate: test_rotation.py.)"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest

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
    assert g.resume([pos]) == []
    assert g.stats.lost_files == 1
    assert g.stats.gaps == 1 and g.stats.gap_bytes == 0
    assert any(w.startswith(f"gap in {p}:") and "size unknown" in w for w in g.warnings)
    # We had a position for this path, so the file there is new to us: read it all. The
    # lost file's position is forgotten only after that file's first Line.
    out = drain(g)
    assert texts(out) == ["z"]
    assert out[1:] == [Retired(str(p), 1, 999999)]
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


# ---------------------------------------------------------------- generations (issue #11)


def seq_text(first: int, last: int, tag: str = "") -> str:
    return "".join(
        f"Nov 24 22:00:00 host sshd[1]: {tag}line {n:05d} x\n" for n in range(first, last + 1)
    )


def nums(items: list) -> list[int]:
    return [int(t.rsplit("line ", 1)[1].split()[0]) for t in texts(items)]


def saved_after(path: Path, first: int, last: int) -> FilePosition:
    """Follow a fresh file holding lines first..last; the position after the last one."""
    append(path, seq_text(first, last))
    f = follower(path)
    f.resume([])
    pos = last_pos(drain(f))
    f.close()
    return pos


def gzip_file(src: Path, dst: Path, opener=gzip.open) -> None:
    st = src.stat()
    with open(src, "rb") as a, opener(dst, "wb") as b:
        b.write(a.read())
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))  # as logrotate's compression does
    src.unlink()


def test_rotated_twice_while_down_reads_the_middle_generation(tmp_path):
    p = tmp_path / "auth.log"
    pos = saved_after(p, 1, 10)
    append(p, seq_text(11, 20))  # unread end of the saved file
    os.rename(p, tmp_path / "auth.log.1")
    append(p, seq_text(21, 30))  # the middle file
    os.rename(tmp_path / "auth.log.1", tmp_path / "auth.log.2")
    os.rename(p, tmp_path / "auth.log.1")
    append(p, seq_text(31, 40))
    g = follower(p, start_at="end")
    assert g.resume([pos]) == []
    out = drain(g)
    assert nums(out) == list(range(11, 41))
    assert all(store_rows(out)), "the path was left without any saved position"
    # The saved file is forgotten after a newer file's line; the middle one after the current's.
    retired = [i for i in out if isinstance(i, Retired)]
    assert [r.inode for r in retired] == [pos.inode, (tmp_path / "auth.log.1").stat().st_ino]
    g.close()


def test_compressed_generations_and_a_plain_twin_are_read_once_in_order(tmp_path):
    p = tmp_path / "auth.log"
    pos = saved_after(p, 1, 10)
    append(p, seq_text(11, 20))
    os.rename(p, tmp_path / "auth.log.3")
    gzip_file(tmp_path / "auth.log.3", tmp_path / "auth.log.3.gz")  # the saved file
    append(p, seq_text(21, 30))
    os.rename(p, tmp_path / "auth.log.2")
    gzip_file(tmp_path / "auth.log.2", tmp_path / "auth.log.2.bz2", bz2_open)
    append(p, seq_text(31, 40))
    os.rename(p, tmp_path / "auth.log.1")
    # logrotate caught compressing .1: the plain file and a half-written .gz side by side
    (tmp_path / "auth.log.1.gz").write_bytes(gzip.compress(seq_text(31, 40).encode())[:30])
    append(p, seq_text(41, 50))
    g = follower(p, start_at="end")
    g.resume([pos])
    assert nums(drain(g)) == list(range(11, 51))
    assert g.stats.gaps == 0
    g.close()


def bz2_open(path, mode):
    import bz2

    return bz2.open(path, mode)


def test_dateext_generations_sort_by_their_date(tmp_path):
    p = tmp_path / "auth.log"
    pos = saved_after(p, 1, 10)
    append(p, seq_text(11, 20))
    # Names sort as text; a later mtime on an older file must not reorder them.
    os.rename(p, tmp_path / "auth.log-20250101-1735689600")
    append(p, seq_text(21, 30))
    os.rename(p, tmp_path / "auth.log-20250102-1735776000")
    gzip_file(
        tmp_path / "auth.log-20250102-1735776000", tmp_path / "auth.log-20250102-1735776000.gz"
    )
    append(p, seq_text(31, 40))
    os.rename(p, tmp_path / "auth.log-20250103-1735862400")
    os.utime(tmp_path / "auth.log-20250101-1735689600")  # touched: now the newest mtime
    append(p, seq_text(41, 50))
    (tmp_path / "auth.log-notes").write_text("not a generation\n")
    g = follower(p, start_at="end")
    g.resume([pos])
    assert nums(drain(g)) == list(range(11, 51))
    g.close()


def test_a_generation_older_than_the_saved_file_is_never_read(tmp_path):
    p = tmp_path / "auth.log"
    (tmp_path / "auth.log.2.gz").write_bytes(gzip.compress(seq_text(900, 910).encode()))
    (tmp_path / "auth.log.1").write_text(seq_text(920, 930))
    pos = saved_after(p, 1, 10)
    append(p, seq_text(11, 20))
    os.rename(tmp_path / "auth.log.2.gz", tmp_path / "auth.log.3.gz")
    os.rename(tmp_path / "auth.log.1", tmp_path / "auth.log.2")
    os.rename(p, tmp_path / "auth.log.1")
    append(p, seq_text(21, 30))
    g = follower(p, start_at="end")
    g.resume([pos])
    assert nums(drain(g)) == list(range(11, 31))
    g.close()


def test_missing_numbered_generation_is_a_gap(tmp_path):
    p = tmp_path / "auth.log"
    pos = saved_after(p, 1, 10)
    append(p, seq_text(11, 20))
    os.rename(p, tmp_path / "auth.log.3")
    (tmp_path / "auth.log.1").write_text(seq_text(31, 40))  # .2 deleted
    append(p, seq_text(41, 50))
    g = follower(p, start_at="end")
    g.resume([pos])
    assert nums(drain(g)) == list(range(11, 21)) + list(range(31, 51))
    assert g.stats.gaps == 1 and g.stats.gap_bytes == 0
    assert g.warnings == [
        f"gap in {p}: rotated file auth.log.2 is missing; its lines were skipped (size unknown)"
    ]
    g.close()


def test_unreadable_generations_are_gaps_with_their_size(tmp_path):
    p = tmp_path / "auth.log"
    pos = saved_after(p, 1, 10)
    os.rename(p, tmp_path / "auth.log.3")
    bad = tmp_path / "auth.log.2.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip" + b"\x00" * 100)
    zst = tmp_path / "auth.log.1.zst"
    zst.write_bytes(b"(\xb5/\xfd" + b"\x00" * 50)
    append(p, seq_text(41, 50))
    g = follower(p, start_at="end")
    g.resume([pos])
    assert nums(drain(g)) == list(range(41, 51))
    size = bad.stat().st_size + zst.stat().st_size
    assert g.stats.gaps == 2 and g.stats.gap_bytes == size
    assert len(g.warnings) == 2
    assert (
        f"{bad.stat().st_size} bytes skipped" in g.warnings[0] and "auth.log.2.gz" in g.warnings[0]
    )
    assert ".zst" in g.warnings[1]
    g.close()


def test_damage_inside_a_compressed_generation_is_a_gap(tmp_path):
    p = tmp_path / "auth.log"
    pos = saved_after(p, 1, 10)
    os.rename(p, tmp_path / "auth.log.2")
    data = gzip.compress(seq_text(21, 2000).encode())
    (tmp_path / "auth.log.1.gz").write_bytes(data[: len(data) // 2])  # cut short
    append(p, seq_text(3001, 3010))
    g = follower(p, start_at="end")
    g.resume([pos])
    got = nums(drain(g))
    assert got[0] == 21 and got[-10:] == list(range(3001, 3011))
    assert g.stats.gaps == 1
    assert "auth.log.1.gz" in g.warnings[0] and "size unknown" in g.warnings[0]
    g.close()


def test_saved_file_gone_reads_what_was_written_after_the_saved_time(tmp_path):
    import time as _time

    p = tmp_path / "auth.log"
    (tmp_path / "auth.log.2").write_text(seq_text(900, 910))  # read long ago
    os.utime(tmp_path / "auth.log.2", (1_000_000, 1_000_000))
    pos = saved_after(p, 1, 10)
    saved_at = _time.time()
    os.utime(p, (saved_at - 1, saved_at - 1))
    p.unlink()  # the saved file: deleted (rotate 1)
    (tmp_path / "auth.log.1").write_text(seq_text(21, 30))  # written after the save
    append(p, seq_text(31, 40))
    times = {(pos.path, pos.dev, pos.inode): saved_at - 0.5}
    g = follower(p, start_at="end", saved_times=times)
    g.resume([pos])
    assert nums(drain(g)) == list(range(21, 41))
    assert g.stats.gaps == 1 and g.stats.lost_files == 1
    # Without the times we cannot know which generations are unread: the current file only.
    h = follower(p, start_at="end")
    h.resume([pos])
    assert nums(drain(h)) == list(range(31, 41))
    g.close()
    h.close()


def test_retired_waits_for_a_line_of_the_newer_file(tmp_path):
    p = tmp_path / "auth.log"
    append(p, "a1\n")
    f = follower(p)
    f.resume([])
    assert texts(drain(f)) == ["a1"]
    old_inode = p.stat().st_ino
    os.rename(p, tmp_path / "auth.log.1")
    p.touch()  # logrotate `create`: the new file is empty
    out = drain(f) + drain(f)
    # Forgetting the old file now would leave the path with no position: a stop before the
    # new file's first line would then start at `start_at` and skip what it holds.
    assert not any(isinstance(i, Retired) for i in out)
    append(p, "b1\n")
    out = drain(f)
    assert texts(out) == ["b1"]
    assert out[1:] == [Retired(str(p), out[0].position.dev, old_inode)]
    f.close()


def test_two_rotations_between_two_polls_read_the_middle_file(tmp_path):
    p = tmp_path / "auth.log"
    append(p, "a1\n")
    f = follower(p)
    f.resume([])
    assert texts(drain(f)) == ["a1"]
    append(p, "a2\n")
    os.rename(p, tmp_path / "auth.log.1")
    append(p, "b1\nb2\n")  # never seen as the current file
    os.rename(tmp_path / "auth.log.1", tmp_path / "auth.log.2")
    os.rename(p, tmp_path / "auth.log.1")
    append(p, "c1\n")
    assert texts(drain(f)) == ["a2", "b1", "b2", "c1"]
    f.close()


def test_file_first_seen_empty_saves_a_fingerprint_that_covers_its_offset(tmp_path):
    from sshmonitord.sources.tailer import trusted

    p = tmp_path / "auth.log"
    p.touch()
    f = follower(p, start_at="end")
    f.resume([])
    assert drain(f) == []
    append(p, seq_text(1, 40))  # one burst, read in one go
    out = drain(f)
    assert nums(out) == list(range(1, 41))
    for line in out:
        assert trusted(line.position), line.position
    f.close()


def test_untrusted_saved_position_rereads_from_the_start(tmp_path):
    p = tmp_path / "auth.log"
    append(p, seq_text(1, 40))
    st = p.stat()
    # As the old code saved it for a file first seen empty: offset past an empty fingerprint.
    legacy = FilePosition(str(p), st.st_dev, st.st_ino, "0:", 1000)
    with open(p, "r+b") as fh:  # rewritten in place, same inode (copytruncate, by hand)
        fh.truncate(0)
    append(p, seq_text(101, 140))
    g = follower(p, start_at="end")
    g.resume([legacy])
    assert nums(drain(g)) == list(range(101, 141))
    assert g.stats.unverified == 1
    assert "could not be verified" in g.warnings[0]
    g.close()


def test_copytruncate_while_down_reads_the_copy_then_the_file(tmp_path):
    p = tmp_path / "auth.log"
    pos = saved_after(p, 1, 20)
    append(p, seq_text(21, 30))
    shutil.copy(p, tmp_path / "auth.log.1")
    with open(p, "r+b") as fh:
        fh.truncate(0)
    append(p, seq_text(31, 80))  # longer than the saved offset, other content
    g = follower(p, start_at="end")
    g.resume([pos])
    out = drain(g)
    assert nums(out) == list(range(21, 81))
    assert all(store_rows(out)), "the path was left without any saved position"
    # The copy continued the saved position; the file on that inode now owns it: no Retired
    # may delete the position its Lines just saved.
    assert not [i for i in out if isinstance(i, Retired) and i.inode == pos.inode]
    assert g.stats.gaps == 0
    g.close()


def test_copytruncate_while_running_reads_the_unread_end_from_the_copy(tmp_path):
    from sshmonitord.sources.tailer import Tailer

    p = tmp_path / "auth.log"
    append(p, seq_text(1, 10))
    t = Tailer([str(p)], emit=None, start_at="beginning")  # type: ignore[arg-type]
    f = t.followers[0]
    f.resume([])
    assert nums(drain(f)) == list(range(1, 11))
    append(p, seq_text(11, 15))  # written after our last read, before the copy
    shutil.copy(p, tmp_path / "auth.log.1")
    with open(p, "r+b") as fh:
        fh.truncate(0)
    append(p, seq_text(16, 20))
    assert nums(drain(f)) == list(range(11, 21))
    assert f.stats.copytruncates == 1
    d = t.describe()
    assert d["mode"] == "file" and d["forgeable"] is True
    assert d["warnings"] == [
        f"copytruncate rotation detected on {p}: lines written during the copy can be lost; "
        "use `create` (docs/rotation.md)"
    ]
    f.close()


def store_rows(stream: list) -> list[dict]:
    """What the store's file_positions hold after each item (the pipeline's upsert/delete)."""
    rows: dict = {}
    after = []
    for item in stream:
        key = (item.path, item.dev, item.inode) if isinstance(item, Retired) else None
        if key is not None:
            rows.pop(key, None)
        else:
            pos = item.position
            rows[(pos.path, pos.dev, pos.inode)] = pos
        after.append(dict(rows))
    return after


def test_saved_key_reused_by_a_newer_generation_keeps_its_position(tmp_path):
    # create+compress, three rotations while down: the saved file was compressed (its inode
    # freed) and a newer file got that inode. Lines of the compressed saved file carry the
    # saved key, the newer file's Lines the same key: no Retired may delete the newer one's.
    p = tmp_path / "auth.log"
    pos = saved_after(p, 1, 10)
    append(p, seq_text(11, 20))
    os.rename(p, tmp_path / "auth.log.2")
    gzip_file(tmp_path / "auth.log.2", tmp_path / "auth.log.2.gz")
    middle = tmp_path / "auth.log.1"
    middle.write_text(seq_text(21, 30))
    st = middle.stat()
    reused = FilePosition(pos.path, st.st_dev, st.st_ino, pos.fingerprint, pos.offset)
    append(p, seq_text(31, 40))
    g = follower(p, start_at="end")
    g.resume([reused])
    out = drain(g)
    assert nums(out) == list(range(11, 41))
    rows = store_rows(out)
    assert all(rows), "the path was left without any saved position"
    final = rows[-1]
    assert [k[2] for k in final] == [p.stat().st_ino]  # only the current file's position
    g.close()


@pytest.mark.parametrize("watcher", ["inotify", "watchdog"])
def test_inotify_wakes_the_tailer_long_before_the_stat_timer(tmp_path, watcher):
    """Each watcher really runs and wakes the tailer for an append and for a rotation, with
    the stat() timer far too slow to be what found them: the InotifyWatcher on the event loop
    (the default on Linux), and the watchdog observer it falls back to (on every watchdog the
    package supports: Debian 12's 2.2.1 has no schedule(event_filter=), see
    _start_observer)."""
    import asyncio
    import time

    from sshmonitord.sources.tailer import Tailer

    p = tmp_path / "auth.log"
    append(p, seq_text(1, 3))

    async def run() -> None:
        got: list[int] = []
        arrived = asyncio.Event()

        async def emit(items: list) -> None:
            got.extend(nums(items))
            arrived.set()

        t = Tailer([str(p)], emit=emit, start_at="beginning", poll_interval=60.0, watcher=watcher)
        await t.start()
        try:
            if watcher == "watchdog":
                assert t._inotify is None
                assert t._observer is not None, "the watchdog observer did not start"
                assert t._observer.is_alive()
            else:
                assert t._observer is None, "watchdog started beside the inotify watcher"
                assert t._inotify is not None, "the inotify watcher did not start"

            async def wait_for(last: int) -> float:
                start = time.monotonic()
                while not got or got[-1] != last:
                    arrived.clear()
                    await asyncio.wait_for(arrived.wait(), 10)
                return time.monotonic() - start

            await wait_for(3)  # the backlog, read at start without any wake-up
            await asyncio.sleep(0.2)  # the loop is now asleep for up to poll_interval
            append(p, seq_text(4, 5))
            assert await wait_for(5) < 5, "an append did not wake the tailer"
            await asyncio.sleep(0.2)
            os.rename(p, tmp_path / "auth.log.1")  # logrotate's `create`
            append(p, seq_text(6, 6))
            assert await wait_for(6) < 5, "a rotation did not wake the tailer"
            assert got == list(range(1, 7))
        finally:
            await t.stop()
        if watcher == "watchdog":
            assert not t._observer.is_alive()
        else:
            assert t._inotify is not None and t._inotify.fd == -1

    asyncio.run(run())


@pytest.mark.parametrize("read_gap", [0.25, 0.0])
def test_a_stream_of_writes_is_read_read_gap_apart_and_a_lone_line_at_once(tmp_path, read_gap):
    """rsyslog writes each line of an attack on its own, and each write wakes the tailer:
    reads woken that way start at least Tailer.read_gap apart (issue #17: one read per line
    was most of the daemon's CPU under bench/attack), every line still arrives once, in
    order. A line written after a quiet spell is read without waiting for the gap. With the
    gap at 0 (the control) the same writer is read far more often."""
    import asyncio
    import threading
    import time

    from sshmonitord.sources.tailer import COALESCE, Tailer

    p = tmp_path / "auth.log"
    append(p, seq_text(1, 1))

    async def run() -> tuple[int, float, float, list[int]]:
        got: list[int] = []
        reads: list[float] = []

        async def emit(items: list) -> None:
            got.extend(nums(items))
            reads.append(time.monotonic())

        t = Tailer([str(p)], emit=emit, start_at="beginning", poll_interval=60.0)
        t.read_gap = read_gap
        await t.start()
        try:
            deadline = time.monotonic() + 30
            while got != [1]:
                assert time.monotonic() < deadline, got
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.5)  # quiet for longer than the gap: read at once
            reads.clear()
            start = time.monotonic()
            append(p, seq_text(2, 2))
            while got[-1] != 2:
                assert time.monotonic() < deadline, got
                await asyncio.sleep(0.002)
            lone = reads[0] - start

            def writer() -> None:
                for n in range(3, 203):  # 200 lines, one write each, ~5 ms apart
                    append(p, seq_text(n, n))
                    time.sleep(0.005)

            reads.clear()
            w = threading.Thread(target=writer)
            began = time.monotonic()
            w.start()
            while got[-1] != 202:
                assert time.monotonic() < deadline, got[-5:]
                await asyncio.sleep(0.01)
            elapsed = time.monotonic() - began
            w.join()
            return len(reads), elapsed, lone, got
        finally:
            await t.stop()

    n_reads, elapsed, lone, got = asyncio.run(run())
    assert got == list(range(1, 203))
    if read_gap:
        # COALESCE (5 ms), not the gap; the margin is for a loaded machine.
        assert lone < 0.2, f"a lone line waited {lone:.3f}s, not {COALESCE}s"
        assert n_reads <= elapsed / read_gap + 2, (n_reads, elapsed)
    else:
        assert n_reads > 2 * (elapsed / 0.25 + 2), (n_reads, elapsed)


def test_the_read_gap_follows_woken_reads_only(tmp_path):
    """The stat() timer's reads start no gap: a lone line written soon after a timer read
    is still read COALESCE after its write. Gap and timer 1 s, each line 0.15-0.85 s after a
    timer read: a gap counted from any read would hold them 0.15-0.85 s (median ~0.5 s);
    here the median is ~5 ms (the limit leaves room for a loaded machine)."""
    import asyncio
    import statistics
    import time

    from sshmonitord.sources.tailer import Tailer

    p = tmp_path / "auth.log"
    append(p, seq_text(1, 1))

    async def run() -> list[float]:
        got: list[int] = []

        async def emit(items: list) -> None:
            got.extend(nums(items))

        t = Tailer([str(p)], emit=emit, start_at="beginning", poll_interval=1.0)
        t.read_gap = 1.0
        await t.start()
        waits = []
        try:
            deadline = time.monotonic() + 60
            for n in range(2, 9):
                # The timer reads 1 s after the last woken read; this line comes after it.
                await asyncio.sleep(1.0 + 0.1 * n - 0.05)
                start = time.monotonic()
                append(p, seq_text(n, n))
                while got[-1] != n:
                    assert time.monotonic() < deadline, got
                    await asyncio.sleep(0.002)
                waits.append(time.monotonic() - start)
        finally:
            await t.stop()
        return waits

    waits = asyncio.run(run())
    assert statistics.median(waits) < 0.25, waits
