"""The tailer's own inotify watcher (issue #17): on the event loop, no thread, and blind to the
other logs of the directory. Every case runs with a 60 s stat() timer, so what arrives within
the test's few seconds was found by an inotify wake-up, not by the timer."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from sshmonitord.sources import tailer
from sshmonitord.sources.tailer import InotifyWatcher, Tailer

pytestmark = pytest.mark.skipif(
    not hasattr(os, "uname") or os.uname().sysname != "Linux", reason="inotify is Linux's"
)


def lines(a: int, b: int) -> str:
    return "".join(f"Nov 16 10:00:00 web1 sshd[1]: line {i}\n" for i in range(a, b + 1))


def append(p: Path, text: str) -> None:
    with open(p, "a") as fh:
        fh.write(text)


def nums(items: list) -> list[int]:
    return [int(x.text.rsplit(" ", 1)[1]) for x in items if hasattr(x, "text")]


async def following(
    path: Path,
    body: Callable[[Tailer, Callable[[int], Awaitable[float]]], Awaitable[None]],
    watcher: str = "inotify",
) -> list[int]:
    got: list[int] = []
    arrived = asyncio.Event()

    async def emit(items: list) -> None:
        got.extend(nums(items))
        arrived.set()

    t = Tailer([str(path)], emit=emit, start_at="beginning", poll_interval=60.0, watcher=watcher)

    async def wait_for(last: int) -> float:
        start = time.monotonic()
        while not got or got[-1] != last:
            arrived.clear()
            await asyncio.wait_for(arrived.wait(), 5)
        return time.monotonic() - start

    await t.start()
    try:
        await body(t, wait_for)
    finally:
        await t.stop()
    return got


def test_a_sibling_being_written_wakes_nothing(tmp_path: Path) -> None:
    """The idle cost of issue #17: rsyslog writing another file of /var/log (held open, or
    opened and closed each time) gives the watcher no event worth waking for."""
    p = tmp_path / "auth.log"
    append(p, lines(1, 2))

    async def body(t: Tailer, wait_for: Callable[[int], Awaitable[float]]) -> None:
        await wait_for(2)
        w = t._inotify
        assert w is not None and t._observer is None
        await asyncio.sleep(0.1)
        before = w.wakeups
        held = os.open(tmp_path / "syslog", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            for _ in range(50):
                os.write(held, b"Nov 16 10:00:00 web1 CRON[2]: noise\n")
                append(tmp_path / "btmp", "noise\n")
                append(tmp_path / "auth.logger", "not ours: no dot after the name\n")
                await asyncio.sleep(0.002)
        finally:
            os.close(held)
        (tmp_path / "syslog").unlink()
        (tmp_path / "other.log").write_text("created and renamed\n")
        (tmp_path / "other.log").rename(tmp_path / "other.log.1")
        await asyncio.sleep(0.3)
        assert w.wakeups == before, "a sibling's writes woke the tailer"
        append(p, lines(3, 3))
        assert await wait_for(3) < 3

    assert asyncio.run(following(p, body)) == [1, 2, 3]


def rename_create(p: Path) -> None:
    p.rename(p.with_name("auth.log.1"))
    p.touch()


def copytruncate(p: Path) -> None:
    shutil.copyfile(p, p.with_name("auth.log.1"))
    os.truncate(p, 0)


def delete_create(p: Path) -> None:
    p.unlink()
    p.touch()


@pytest.mark.parametrize("rotate", [rename_create, copytruncate, delete_create])
def test_each_rotation_wakes_the_tailer(tmp_path: Path, rotate: Callable[[Path], None]) -> None:
    """Rename + create (logrotate's `create`), copytruncate and delete + create: the lines
    written to the new file come at once, so the new inode is watched too."""
    p = tmp_path / "auth.log"
    append(p, lines(1, 3))

    async def body(t: Tailer, wait_for: Callable[[int], Awaitable[float]]) -> None:
        await wait_for(3)
        await asyncio.sleep(0.2)
        rotate(p)
        await asyncio.sleep(0.2)  # the rotation is seen and the new file opened
        append(p, lines(4, 5))
        assert await wait_for(5) < 3, f"no wake-up after {rotate.__name__}"
        await asyncio.sleep(0.2)
        append(p, lines(6, 6))  # and the next write to the new file as well
        assert await wait_for(6) < 3

    assert asyncio.run(following(p, body)) == list(range(1, 7))


def test_a_renamed_file_still_written_is_drained_and_two_rotations_follow(
    tmp_path: Path,
) -> None:
    """The old inode keeps its watch while it drains (a writer still holding it appends after
    the rename), and a second rotation right after the first is followed too."""
    p = tmp_path / "auth.log"
    append(p, lines(1, 1))

    async def body(t: Tailer, wait_for: Callable[[int], Awaitable[float]]) -> None:
        await wait_for(1)
        writer = open(p, "a")  # noqa: SIM115 - rsyslog's fd, across the rename
        try:
            p.rename(tmp_path / "auth.log.1")
            await asyncio.sleep(0.2)
            writer.write(lines(2, 2))
            writer.flush()
            assert await wait_for(2) < 3, "a write to the rotated-away file woke nothing"
        finally:
            writer.close()
        append(p, lines(3, 3))
        assert await wait_for(3) < 3
        await asyncio.sleep(0.2)
        (tmp_path / "auth.log.1").rename(tmp_path / "auth.log.2")
        p.rename(tmp_path / "auth.log.1")
        append(p, lines(4, 4))
        assert await wait_for(4) < 3
        await asyncio.sleep(0.2)
        append(p, lines(5, 5))
        assert await wait_for(5) < 3

    assert asyncio.run(following(p, body)) == [1, 2, 3, 4, 5]


def test_a_file_that_appears_later_and_a_symlink(tmp_path: Path) -> None:
    """A configured path missing at start is watched from its creation; a symlinked path is
    followed through its target's inode."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "log").mkdir()
    p = tmp_path / "log" / "auth.log"

    async def body(t: Tailer, wait_for: Callable[[int], Awaitable[float]]) -> None:
        await asyncio.sleep(0.2)
        append(real / "auth.log", lines(1, 1))
        p.symlink_to(real / "auth.log")
        assert await wait_for(1) < 3
        await asyncio.sleep(0.2)
        append(real / "auth.log", lines(2, 2))
        assert await wait_for(2) < 3

    assert asyncio.run(following(p, body)) == [1, 2]


def test_falls_back_to_watchdog_without_inotify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No inotify_init1 (or no instance left): watchdog's observer wakes the tailer, as
    before."""
    monkeypatch.setattr(tailer.InotifyWatcher, "start", classmethod(lambda cls, *a: None))
    p = tmp_path / "auth.log"
    append(p, lines(1, 1))

    async def body(t: Tailer, wait_for: Callable[[int], Awaitable[float]]) -> None:
        await wait_for(1)
        assert t._inotify is None and t._observer is not None and t._observer.is_alive()
        await asyncio.sleep(0.2)
        append(p, lines(2, 2))
        assert await wait_for(2) < 3

    assert asyncio.run(following(p, body, watcher="auto")) == [1, 2]


def test_no_inotify_instance_left_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """inotify_init1 failing (EMFILE: fs.inotify.max_user_instances) is not an error: start()
    says None and leaves nothing open."""

    def failing_init(_flags: int) -> int:
        return -1

    funcs = tailer._Libc.get()
    assert funcs is not None
    monkeypatch.setattr(tailer._Libc, "funcs", (failing_init, funcs[1], funcs[2]))

    async def run() -> InotifyWatcher | None:
        return InotifyWatcher.start(["/var/log/auth.log"], lambda: None, asyncio.get_running_loop())

    assert asyncio.run(run()) is None


def test_overflow_and_a_vanished_directory_wake_the_tailer(tmp_path: Path) -> None:
    """IN_Q_OVERFLOW (events lost) and the directory itself going both wake: the tailer reads
    and its stat() timer carries on."""
    import struct

    w = InotifyWatcher(-1, lambda *_a: -1, lambda: None)
    w.dirs[1] = [str(tmp_path)]
    w.names[str(tmp_path)] = {"auth.log"}
    ev = struct.Struct("iIII")
    assert w._handle(ev.pack(-1, tailer.IN_Q_OVERFLOW, 0, 0))
    assert w._handle(ev.pack(1, tailer.IN_DELETE_SELF, 0, 0))
    assert w._handle(ev.pack(1, tailer.IN_IGNORED, 0, 0)) and 1 not in w.dirs
    name = b"btmp".ljust(16, b"\0")
    assert not w._handle(ev.pack(1, tailer.IN_CREATE, 0, len(name)) + name)


def test_one_directory_by_two_names_wakes_for_both(tmp_path: Path) -> None:
    """A followed path through a symlinked directory and one through the real directory get
    the kernel's one watch: rotations and writes under either name still wake the tailer
    (the second name once overwrote the first, which then slept until the stat() timer)."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    for n in ("a.log", "b.log"):
        (real / n).write_text("")

    async def run() -> None:
        wakes: list[int] = []
        w = InotifyWatcher.start(
            [str(tmp_path / "link" / "a.log"), str(real / "b.log")],
            lambda: wakes.append(1),
            asyncio.get_running_loop(),
        )
        assert w is not None
        try:
            for name in ("a.log", "b.log"):
                p = real / name
                os.rename(p, str(p) + ".1")
                p.write_text("")
                await asyncio.sleep(0.2)
                n0 = len(wakes)
                assert n0 > 0, name  # the rotation woke it
                append(p, "x\n")  # the new file, watched since its name reappeared
                await asyncio.sleep(0.2)
                assert len(wakes) > n0, name
                wakes.clear()
        finally:
            w.close()

    asyncio.run(run())


def test_a_file_watch_refused_falls_back_to_the_directory(tmp_path: Path) -> None:
    """At the inotify watch limit (ENOSPC) the new file after a rotation gets no watch of its
    own: its directory's watch (which exists, so the limit does not apply to changing it)
    then takes the writes, filtered by name, instead of leaving it to the stat() timer."""
    p = tmp_path / "auth.log"
    p.write_text("")

    async def run() -> None:
        wakes: list[int] = []
        w = InotifyWatcher.start([str(p)], lambda: wakes.append(1), asyncio.get_running_loop())
        assert w is not None
        real_add = w._add
        # New file watches fail from now on; changing the directory's watch still works.
        w._add = lambda fd, path, mask: -1 if mask == tailer.FILE_MASK else real_add(fd, path, mask)
        try:
            os.rename(p, str(p) + ".1")
            p.write_text("")
            await asyncio.sleep(0.2)
            assert w.degraded == {str(tmp_path)}
            for _ in range(3):
                n0 = len(wakes)
                append(p, "x\n")
                await asyncio.sleep(0.15)
                assert len(wakes) > n0
            n0 = len(wakes)
            append(tmp_path / "other.log", "y\n")  # a sibling's write is read and dropped
            await asyncio.sleep(0.15)
            assert len(wakes) == n0
        finally:
            w.close()

    asyncio.run(run())
