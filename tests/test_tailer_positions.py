"""A file read with ``each_position=False`` (the daemon's sshd source) stores exactly what one
with a position on every Line stores (issue #17).

Only the last Line of each read carries its position; the pipeline keeps the last position of
every hand-over, so the transaction of each hand-over must get the same positions, retired
files and lines either way. Two followers of the same real files are polled in lockstep
through hostile content (NUL, CR, invalid and non-ASCII UTF-8, over-long lines, blank runs,
a partial last line), tiny reads so that chunk edges fall everywhere, rotation by rename and
copytruncate; and a restart from what was stored reads every line exactly once.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

from sshmonitord.events import FilePosition, Line, Retired
from sshmonitord.pipeline import Pipeline
from sshmonitord.sources import tailer as tailer_mod
from sshmonitord.sources.tailer import FileFollower
from sshmonitord.store import Store

MAX_LINE = 80


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


def _hostile(rng: random.Random, n: int, long: bool = True) -> bytes:
    """Lines a log can hold, and lines an attacker can make sshd write: stretches of plain
    lines (which the cheap way takes) between stretches of hostile ones."""
    out = []
    for i in range(n):
        r = rng.random() if (i // 100) % 2 else rng.random() * 0.62
        if r < 0.55:
            line = f"Nov 24 22:00:{i % 60:02d} h sshd[{i}]: Failed password for u{i} from 10.0.0.1"
            out.append(line.encode())
        elif r < 0.62:
            out.append(b"")  # a blank line, often several in a row
        elif r < 0.67:
            out.append(f"crlf {i}\r".encode())
        elif r < 0.72:
            out.append(f"nul {i} \x00\x00 run".encode())
        elif r < 0.77:
            out.append(f"Invalid user j\u00f6rg{i} from 10.0.0.2".encode())
        elif r < 0.82:
            out.append(b"bad \xff\xfe utf-8 " + str(i).encode())
        elif r < 0.87 and long:
            out.append(b"long " + b"x" * rng.randrange(MAX_LINE - 10, 3 * MAX_LINE))
        elif r < 0.90:
            out.append(b"mid\rcr " + str(i).encode())
        else:
            out.append(f"plain {i}".encode())
    return b"\n".join(out) + b"\n"


def _is_cut(item: Line | Retired) -> bool:
    """A Line cut at MAX_LINE (the only lines _hostile makes that long are its "long ")."""
    return isinstance(item, Line) and item.text.startswith("long ") and len(item.text) == MAX_LINE


def _stores(items: list[Line | Retired], state: Path) -> tuple[Any, ...]:
    """What the pipeline's transaction for this hand-over stores: its lines (as text), the
    last position of each file and the files retired (Pipeline._process, the real code)."""
    h = Pipeline(Store(state))._process(items)  # never opened: _process touches no store
    lines = [i.text for i in items if isinstance(i, Line)]
    return lines, h.files, h.retired


def _lockstep(a: FileFollower, b: FileFollower, state: Path) -> list[tuple[Any, ...]]:
    """Poll both until neither has more; every hand-over must store the same. Returns, per
    hand-over, what it stores and how many of ``b``'s Lines came without a position."""
    views = []
    for _ in range(10_000):
        out_a, out_b = a.poll(), b.poll()
        va, vb = _stores(out_a, state), _stores(out_b, state)
        assert va == vb
        assert a.more == b.more
        # The per-read rule itself: the last Line of every hand-over has its position,
        # unless it is the cut head of a line whose newline is not read yet.
        last = [i for i in out_b if isinstance(i, Line)]
        assert not last or last[-1].position is not None or _is_cut(last[-1])
        views.append((*vb, sum(1 for i in last if i.position is None)))
        if not a.more:
            return views
    raise AssertionError("never caught up")


@pytest.fixture
def small_reads(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> int:
    size = request.param
    monkeypatch.setattr(tailer_mod, "READ_CHUNK", size)
    monkeypatch.setattr(tailer_mod, "MAX_LINES_PER_POLL", 7)
    return int(size)


def _pair(path: Path) -> tuple[FileFollower, FileFollower]:
    kw: dict[str, Any] = {"drain_grace": 0.0, "partial_grace": 0.0}
    a = FileFollower(str(path), "beginning", MAX_LINE, each_position=True, **kw)
    b = FileFollower(str(path), "beginning", MAX_LINE, each_position=False, **kw)
    a.resume([])
    b.resume([])
    return a, b


@pytest.mark.parametrize("small_reads", [61, 256, 4096], indirect=True)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_each_hand_over_stores_the_same(tmp_path: Path, small_reads: int, seed: int) -> None:
    rng = random.Random(seed)
    log = tmp_path / "auth.log"
    _append(log, _hostile(rng, 300) + b"a partial la")
    a, b = _pair(log)
    try:
        views = _lockstep(a, b, tmp_path / "state")
        _append(log, b"st line\n" + _hostile(rng, 50))
        views += _lockstep(a, b, tmp_path / "state")
        # Rotation by rename while lines are unread in the old file, then the new one.
        _append(log, _hostile(rng, 40))
        os.rename(log, tmp_path / "auth.log.1")
        _append(tmp_path / "auth.log.1", b"late write to the old inode\n")
        _append(log, _hostile(rng, 40))
        views += _lockstep(a, b, tmp_path / "state")
        views += _lockstep(a, b, tmp_path / "state")  # the old file retires
        # copytruncate: a copy, then the file cut to nothing and written again.
        _append(log, _hostile(rng, 30))
        views += _lockstep(a, b, tmp_path / "state")
        with open(log, "r+b") as fh:
            fh.truncate(0)
        _append(log, _hostile(rng, 30))
        views += _lockstep(a, b, tmp_path / "state")
        assert a.stats.lines == b.stats.lines
        assert a.stats.truncated_lines == b.stats.truncated_lines
        assert a.stats.nul_bytes == b.stats.nul_bytes
        # The cheap way was taken (some reads held several plain lines), else this proves
        # nothing. Reads of 61 bytes seldom hold two lines: there, the edges are the point.
        assert sum(v[3] for v in views) > 0 or small_reads < 100
        retired = [r for v in views for r in v[2]]
        assert retired, "the rename must retire the old file"
    finally:
        a.close()
        b.close()


def test_only_the_last_line_of_a_plain_read_carries_a_position(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    _append(log, b"one\ntwo\n\nthree\n\n\n")
    f = FileFollower(str(log), "beginning", MAX_LINE, each_position=False)
    f.resume([])
    out = [i for i in f.poll() if isinstance(i, Line)]
    assert [i.text for i in out] == ["one", "two", "three"]
    assert [i.position is None for i in out] == [True, True, False]
    pos = out[-1].position
    assert isinstance(pos, FilePosition)
    # After "three\n", before the blank lines: what a Line per piece would have said.
    assert pos.offset == len(b"one\ntwo\n\nthree\n")
    f.close()


def _read_all(f: FileFollower, out: list[str], limit: int = 10_000) -> None:
    for _ in range(limit):
        out += [i.text for i in f.poll() if isinstance(i, Line)]
        if not f.more:
            return


def _restart(log: Path, state: Path, cut: int, each: bool) -> list[str]:
    """Store each hand-over's last position as the pipeline does, stop after ``cut``
    hand-overs, resume a new follower at what was stored: every line it handed over."""
    first = FileFollower(str(log), "beginning", MAX_LINE, each_position=each)
    first.resume([])
    got: list[str] = []
    stored: FilePosition | None = None
    for _ in range(cut):
        out = first.poll()
        _, files, _ = _stores(out, state)
        got += [i.text for i in out if isinstance(i, Line)]
        stored = next(iter(files.values()), stored)
        if not first.more:
            break
    first.close()
    assert stored is not None
    again = FileFollower(str(log), "end", MAX_LINE, each_position=each)
    got += [i.text for i in again.resume([stored]) if isinstance(i, Line)]
    _read_all(again, got)
    again.close()
    return got


@pytest.mark.parametrize("small_reads", [61, 4096], indirect=True)
@pytest.mark.parametrize("cut", [1, 3, 8, 20, 40])
def test_a_restart_from_what_was_stored_reads_each_line_once(
    tmp_path: Path, small_reads: int, cut: int
) -> None:
    log = tmp_path / "auth.log"
    _append(log, _hostile(random.Random(cut), 400, long=False))
    every = FileFollower(str(log), "beginning", MAX_LINE)
    every.resume([])
    want: list[str] = []
    _read_all(every, want)
    every.close()
    assert _restart(log, tmp_path / "state", cut, each=False) == want


def _hand_overs(
    log: Path, data: bytes, state: Path, each: bool, rng: random.Random
) -> list[tuple[list[str], Any, bool]]:
    """``data`` appended to ``log`` in pieces of random size, as a writer does, the follower
    polled after each: every hand-over, with its lines, the position the pipeline stores
    after it (the last one so far), and whether its last Line is a cut head (the head of an
    over-long line whose newline is not written yet)."""
    f = FileFollower(str(log), "beginning", MAX_LINE, each_position=each)
    f.resume([])
    out: list[tuple[list[str], Any, bool]] = []
    stored = None
    at = 0
    while at < len(data):
        step = rng.randrange(1, 3 * MAX_LINE)
        _append(log, data[at : at + step])
        at += step
        for _ in range(10_000):
            items = f.poll()
            _, files, _ = _stores(items, state)
            stored = next(iter(files.values()), stored)
            lines = [i for i in items if isinstance(i, Line)]
            # Only a cut head ends a read without a position (see the lockstep test above).
            cut_last = bool(lines) and lines[-1].position is None
            assert not cut_last or _cut_text(lines[-1].text)
            out.append(([i.text for i in lines], stored, cut_last))
            if not f.more:
                break
    f.close()
    return out


@pytest.mark.parametrize("small_reads", [61, 4096], indirect=True)
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("each", [False, True])
def test_a_restart_never_resumes_inside_an_over_long_line(
    tmp_path: Path, small_reads: int, seed: int, each: bool
) -> None:
    """A stop after any hand-over that ends with a cut line (whose position would be inside
    its line) resumes at a line's start: what follows is what an uninterrupted read reads
    from that start, the cut line again included. The rest of an over-long line is never
    read as a line of its own."""
    log = tmp_path / "auth.log"
    rng = random.Random(seed)
    overs = _hand_overs(log, _hostile(rng, 400), tmp_path / "state", each, rng)
    want = [t for texts, _, _ in overs for t in texts]
    stops = [k for k, (_, _, cut_last) in enumerate(overs) if cut_last]
    assert stops, "no hand-over ended inside an over-long line: the test proves nothing"
    for k in stops:
        stored = overs[k][1]
        assert stored is not None
        read = sum(len(texts) for texts, _, _ in overs[: k + 1])
        again = FileFollower(str(log), "end", MAX_LINE, each_position=each)
        got = [i.text for i in again.resume([stored]) if isinstance(i, Line)]
        _read_all(again, got)
        again.close()
        resumed = len(want) - len(got)  # the line the second follower starts at
        assert 0 <= resumed < read and got == want[resumed:], (k, got[:3])
        assert _cut_text(want[read - 1]) and want[read - 1] in got[: read - resumed]


def _cut_text(text: str) -> bool:
    return text.startswith("long ") and len(text) == MAX_LINE


def test_the_rest_of_an_over_long_line_is_never_a_line(tmp_path: Path) -> None:
    """A local writer's over-long line whose rest, past the cut, reads as a complete sshd
    line: a daemon stopped between its cut head and its newline must not read that rest as
    a log line when it starts again (it would frame 192.0.2.66)."""
    forged = b"Nov 24 22:00:01 h sshd[9]: Failed password for root from 192.0.2.66 port 1 ssh2"
    first = b"Nov 24 22:00:00 h sshd[8]: first\n"
    for each in (False, True):
        log = tmp_path / f"auth-{each}.log"
        _append(log, first + b"x" * (MAX_LINE + 3) + b" ")
        f = FileFollower(str(log), "beginning", MAX_LINE, each_position=each)
        f.resume([])
        out = f.poll()
        assert [i.text for i in out if isinstance(i, Line)] == [first[:-1].decode(), "x" * MAX_LINE]
        _, files, _ = _stores(out, tmp_path / f"state-{each}")
        stored = next(iter(files.values()))
        assert stored.offset == len(first)  # before the long line, not inside it
        f.close()
        # The writer finishes its line while the daemon is stopped.
        _append(log, forged + b"\nNov 24 22:00:02 h sshd[10]: after\n")
        again = FileFollower(str(log), "end", MAX_LINE, each_position=each)
        got = [i.text for i in again.resume([stored]) if isinstance(i, Line)]
        _read_all(again, got)
        again.close()
        # The long line's head again (read a second time, cut again), never its rest.
        assert got == ["x" * MAX_LINE, "Nov 24 22:00:02 h sshd[10]: after"]
        assert not any("192.0.2.66" in t for t in got)
