"""Follow log files across every kind of rotation, restart and crash.

A file is known by *identity*: device, inode and a fingerprint of its first bytes, so an inode
the kernel hands to a new file is not mistaken for the old one. For each configured path we
keep one *current* file open, plus any *draining* ones: files rotated away (renamed, deleted)
that a writer may still append to for a moment. A draining file is read to its end and closed
only once it has stopped growing for ``drain_grace`` seconds.

Wake-ups come from inotify (through watchdog) **and** a ``stat()`` every ``poll_interval``, so
following still works where inotify does not (NFS, some containers, queue overflow). With no
writes nothing is read: an idle file costs one stat() per interval.

The tailer never writes positions itself. Each :class:`Line` carries the position after it;
the pipeline commits that position in the same transaction as the line's results, so a crash
replays nothing already handled and loses nothing not yet handled. When a draining file is
closed, a :class:`Retired` marker follows its last line so the pipeline can forget it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import log
from ..events import FilePosition, Line, Retired

FP_BYTES = 1024  # fingerprint: hash of the first (up to) this many bytes
READ_CHUNK = 256 * 1024
# Lines handed over per poll at most: a backlog (start_at: beginning, a long downtime) is
# read in slices, so memory stays flat and the event loop (and the watchdog) keep running.
MAX_LINES_PER_POLL = 5000
DRAIN_GRACE = 5.0  # a rotated-away file that stopped growing for this long is done
PARTIAL_GRACE = 2.0  # a partial last line of a rotated-away file is emitted after this
COALESCE = 0.005  # seconds to wait after an inotify wake-up before reading

Emit = Callable[[list[Line | Retired]], Any]


def fingerprint_bytes(head: bytes) -> str:
    """``LEN:HASH`` of a file's first bytes. An empty file has the empty fingerprint ``0:``."""
    if not head:
        return "0:"
    return f"{len(head)}:{hashlib.blake2b(head, digest_size=12).hexdigest()}"


def _fp_len(fp: str) -> int:
    try:
        return int(fp.split(":", 1)[0])
    except ValueError:
        return 0


def read_head(fd: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = os.pread(fd, n - len(out), len(out))
        if not chunk:
            break
        out += chunk
    return out


def matches_fingerprint(head_reader: Callable[[int], bytes], fp: str) -> bool:
    """Does the file whose first bytes ``head_reader(n)`` returns carry fingerprint ``fp``?"""
    n = _fp_len(fp)
    if n == 0:
        return True  # we knew it empty: any content could have followed
    head = head_reader(n)
    return len(head) == n and fingerprint_bytes(head) == fp


@dataclass
class TailStats:
    lines: int = 0
    bytes: int = 0
    truncated_lines: int = 0
    rotations: int = 0
    truncations: int = 0
    nul_bytes: int = 0
    lost_files: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Open:
    """One open file: the current one at the path, or one being drained after rotation."""

    path: str  # the configured path this file was (or is) at
    fd: int
    dev: int
    inode: int
    fp: str
    offset: int  # bytes consumed through the last complete line
    buf: bytearray = field(default_factory=bytearray)
    skipping: bool = False  # inside an over-long line, dropping bytes until its newline
    last_growth: float = field(default_factory=time.monotonic)
    gz: Any = None  # a gzip stream when resuming a rotated-and-compressed file
    finished: bool = False  # rotated while we were down: no writer left, retire at EOF

    def position(self) -> FilePosition:
        return FilePosition(self.path, self.dev, self.inode, self.fp, self.offset)

    def close(self) -> None:
        if self.gz is not None:
            with contextlib.suppress(Exception):
                self.gz.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)


class FileFollower:
    """Follows one configured path. Pure file logic; the event loop drives :meth:`poll`."""

    def __init__(
        self,
        path: str,
        start_at: str = "end",
        max_line_length: int = 16384,
        stats: TailStats | None = None,
        drain_grace: float = DRAIN_GRACE,
        partial_grace: float = PARTIAL_GRACE,
    ) -> None:
        self.path = path
        self.start_at = start_at
        self.max_line = max_line_length
        self.stats = stats or TailStats()
        self.drain_grace = drain_grace
        self.partial_grace = partial_grace
        self.current: _Open | None = None
        self.draining: list[_Open] = []
        self.started = False
        self.log = log.get("tailer")
        self.missing_logged = False
        self.more = False  # the last poll stopped at its line budget: poll again at once
        self._hit_limit = False

    # ------------------------------------------------------------------ start / resume

    def resume(self, saved: Iterable[FilePosition]) -> list[Line | Retired]:
        """Open the path, first draining any saved files that were rotated while we were down.

        Rotated files found by fingerprint are queued for draining by :meth:`poll` (before the
        current file). Returns Retired markers for saved files that exist nowhere any more.
        """
        out: list[Line | Retired] = []
        saved = list(saved)  # oldest first, as the store returns them
        at_path = self._stat_path()
        current_pos: FilePosition | None = None
        for pos in saved:
            if at_path and (at_path.st_dev, at_path.st_ino) == (pos.dev, pos.inode):
                fd = self._open_fd()
                if fd is not None and matches_fingerprint(
                    lambda n, fd=fd: read_head(fd, n), pos.fingerprint
                ):
                    current_pos = pos
                    os.close(fd)
                    continue
                if fd is not None:
                    os.close(fd)
                # Same inode, other content: the inode was reused by a new file.
            found = self._find_rotated(pos)
            if found is None:
                self.stats.lost_files += 1
                self.log.warning(
                    "saved file position not found; its unread tail (if any) is lost",
                    path=self.path,
                    inode=pos.inode,
                    offset=pos.offset,
                )
                out.append(Retired(pos.path, pos.dev, pos.inode))
                continue
            self.log.info(
                "draining file rotated while we were stopped",
                path=self.path,
                found=found.gz.name if found.gz else "(by inode)",
                offset=pos.offset,
            )
            self.stats.rotations += 1
            found.finished = True
            self.draining.append(found)  # drained by poll(), in slices, before the current file
        self.started = True
        if current_pos is not None:
            self._open_current(offset=current_pos.offset, fp=current_pos.fingerprint)
        elif saved:
            # We had a position for this path, so whatever is there now is new to us.
            self._open_current(offset=0)
        else:
            self._open_current(offset=None)  # first start: start_at decides
        return out

    def _find_rotated(self, pos: FilePosition) -> _Open | None:
        """Find a saved file by identity among its rotated siblings (``auth.log.1``, ``.gz``)."""
        directory = os.path.dirname(os.path.abspath(self.path)) or "."
        base = os.path.basename(self.path)
        try:
            names = sorted(n for n in os.listdir(directory) if n.startswith(base) and n != base)
        except OSError:
            return None
        for name in names:
            full = os.path.join(directory, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            if name.endswith(".gz"):
                found = self._match_gz(full, pos, st)
                if found is not None:
                    return found
                continue
            if (st.st_dev, st.st_ino) != (pos.dev, pos.inode):
                continue
            try:
                fd = os.open(full, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            if matches_fingerprint(lambda n, fd=fd: read_head(fd, n), pos.fingerprint):
                return _Open(pos.path, fd, st.st_dev, st.st_ino, pos.fingerprint, pos.offset)
            os.close(fd)
        return None

    def _match_gz(self, full: str, pos: FilePosition, st: os.stat_result) -> _Open | None:
        if _fp_len(pos.fingerprint) == 0:
            return None  # nothing to recognise it by
        try:
            gz = gzip.open(full, "rb")  # noqa: SIM115 - kept open in _Open, closed there
            head = gz.read(_fp_len(pos.fingerprint))
            if fingerprint_bytes(head) != pos.fingerprint:
                gz.close()
                return None
            gz.seek(pos.offset)
        except (OSError, EOFError, gzip.BadGzipFile):
            return None
        fd = os.open(full, os.O_RDONLY | os.O_CLOEXEC)
        o = _Open(pos.path, fd, pos.dev, pos.inode, pos.fingerprint, pos.offset)
        o.gz = gz
        return o

    def _stat_path(self) -> os.stat_result | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st if stat.S_ISREG(st.st_mode) else None

    def _open_fd(self) -> int | None:
        try:
            return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return None

    def _open_current(self, offset: int | None, fp: str | None = None) -> None:
        fd = self._open_fd()
        if fd is None:
            if not self.missing_logged:
                self.log.info("waiting for log file to appear", path=self.path)
                self.missing_logged = True
            self.current = None
            return
        self.missing_logged = False
        self.more = False  # the last poll stopped at its line budget: poll again at once
        self._hit_limit = False
        st = os.fstat(fd)
        head = read_head(fd, FP_BYTES)
        if offset is None:
            offset = _start_offset(fd, st.st_size) if self.start_at == "end" else 0
        if fp is None or _fp_len(fp) < len(head):
            fp = fingerprint_bytes(head)
        if offset > st.st_size:
            # Saved offset beyond the end: the file was truncated while we were down.
            self.stats.truncations += 1
            offset = 0
        self.current = _Open(self.path, fd, st.st_dev, st.st_ino, fp, offset)

    # ------------------------------------------------------------------ polling

    def poll(self) -> list[Line | Retired]:
        """Read what is new (at most MAX_LINES_PER_POLL lines; ``more`` says if there is more);
        handle rotation and truncation. Never raises on file trouble."""
        out: list[Line | Retired] = []
        self.more = False
        now = time.monotonic()
        # Rotated-away files first: their lines are older than the current file's.
        for d in list(self.draining):
            out.extend(self._read_all(d, limit=MAX_LINES_PER_POLL - len(out)))
            if self._hit_limit:
                self.more = True
                return out  # finish the older file before reading the newer one
            idle = time.monotonic() - d.last_growth
            if d.finished or idle >= self.drain_grace:
                out.extend(self._read_all(d, final=True))
                out.append(Retired(d.path, d.dev, d.inode))
                d.close()
                self.draining.remove(d)
            elif d.buf and idle >= self.partial_grace:
                out.extend(self._flush_partial(d))
        cur = self.current
        if cur is None:
            if self._stat_path() is not None:
                self._open_current(offset=0)  # appeared after we started: read all of it
                if self.current is not None:
                    self.log.info("log file appeared", path=self.path)
                    out.extend(self._read_all(self.current, limit=MAX_LINES_PER_POLL - len(out)))
                    self.more = self._hit_limit
            return out
        # Check for truncation before reading, so we never read past a shrink.
        self._check_truncation(cur)
        out.extend(self._read_all(cur, limit=MAX_LINES_PER_POLL - len(out)))
        if self._hit_limit:
            self.more = True
            return out  # not at EOF yet: rotation is checked once the file is drained
        st = self._stat_path()
        if st is None or (st.st_dev, st.st_ino) != (cur.dev, cur.inode):
            # Renamed or deleted (and perhaps replaced): keep the old fd to drain it.
            self.stats.rotations += 1
            cur.last_growth = now
            self.draining.append(cur)
            self.current = None
            if st is not None:
                self._open_current(offset=0)
                self.more = True  # read the new file on the next round, after the old one
        return out

    def _check_truncation(self, o: _Open) -> None:
        try:
            size = os.fstat(o.fd).st_size
        except OSError:
            return
        # Log files only shrink by truncation: below our offset, or below the bytes we
        # fingerprinted, the content is new.
        truncated = size < o.offset or size < _fp_len(o.fp)
        if not truncated and _fp_len(o.fp) > 0:
            # Same inode, but are the first bytes still the ones we fingerprinted? A file
            # truncated and rewritten past our offset between two polls is caught here.
            truncated = not matches_fingerprint(lambda n: read_head(o.fd, n), o.fp)
        if truncated:
            self.stats.truncations += 1
            self.log.info(
                "log file truncated; reading it from the start",
                path=self.path,
                old_offset=o.offset,
                size=size,
            )
            o.offset = 0
            o.buf.clear()
            o.skipping = False
            o.fp = fingerprint_bytes(read_head(o.fd, FP_BYTES))

    def _read_all(
        self, o: _Open, final: bool = False, limit: int | None = None
    ) -> list[Line | Retired]:
        out: list[Line | Retired] = []
        self._hit_limit = False
        if limit is not None and limit <= 0:
            self._hit_limit = True
            return out
        while True:
            try:
                if o.gz is not None:
                    chunk = o.gz.read(READ_CHUNK)
                else:
                    chunk = os.pread(o.fd, READ_CHUNK, o.offset + len(o.buf))
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                self.log.warning("read failed", path=self.path, error=str(exc))
                break
            if not chunk:
                break
            o.last_growth = time.monotonic()
            self.stats.bytes += len(chunk)
            out.extend(self._split(o, chunk))
            if len(chunk) < READ_CHUNK:
                break
            if limit is not None and len(out) >= limit:
                self._hit_limit = True
                return out
        if _fp_len(o.fp) < FP_BYTES and o.gz is None:
            # The file was shorter than the fingerprint length when first seen; strengthen it.
            head = read_head(o.fd, FP_BYTES)
            if len(head) > _fp_len(o.fp):
                o.fp = fingerprint_bytes(head)
        if final and o.buf:
            out.extend(self._flush_partial(o))
        return out

    def _split(self, o: _Open, chunk: bytes) -> list[Line | Retired]:
        out: list[Line | Retired] = []
        data = bytes(o.buf) + chunk if o.buf else chunk
        base = o.offset  # file offset of data[0]
        o.buf.clear()
        start = 0
        pieces = data.split(b"\n")
        last = pieces.pop()  # bytes after the last newline: a partial line (maybe empty)
        for piece in pieces:
            end = start + len(piece) + 1
            if o.skipping:
                o.skipping = False  # the rest of an over-long line we already emitted
            else:
                line = self._make(o, piece, base + end)
                if line is not None:
                    out.append(line)
            start = end
        o.offset = base + start
        if last:
            if o.skipping:
                o.offset += len(last)
            elif len(last) > self.max_line:
                self.stats.truncated_lines += 1
                line = self._make(o, last[: self.max_line], base + start + len(last), cut=True)
                if line is not None:
                    out.append(line)
                o.offset = base + start + len(last)
                o.skipping = True
            else:
                o.buf += last
        return out

    def _flush_partial(self, o: _Open) -> list[Line | Retired]:
        piece = bytes(o.buf)
        o.buf.clear()
        end = o.offset + len(piece)
        line = self._make(o, piece, end)
        o.offset = end
        return [line] if line is not None else []

    def _make(self, o: _Open, piece: bytes, end: int, cut: bool = False) -> Line | None:
        if len(piece) > self.max_line and not cut:
            self.stats.truncated_lines += 1
            piece = piece[: self.max_line]
        if b"\x00" in piece:
            # copytruncate with a writer lacking O_APPEND leaves a run of NULs; not text.
            before = len(piece)
            piece = piece.replace(b"\x00", b"")
            self.stats.nul_bytes += before - len(piece)
        if piece.endswith(b"\r"):
            piece = piece[:-1]
        if not piece:
            return None
        self.stats.lines += 1
        return Line(
            text=piece.decode("utf-8", "replace"),
            source=self.path,
            position=FilePosition(self.path, o.dev, o.inode, o.fp, end),
        )

    def close(self) -> None:
        for o in [*self.draining, *([self.current] if self.current else [])]:
            o.close()
        self.draining.clear()
        self.current = None

    def describe(self) -> str:
        if self.current is None:
            return f"waiting for {self.path}"
        extra = f" (+{len(self.draining)} rotated draining)" if self.draining else ""
        return f"following {self.path}{extra}"


def _start_offset(fd: int, size: int) -> int:
    """``start_at: end``: just after the last complete line, so a half-written line is whole."""
    if size == 0:
        return 0
    back = min(size, 65536)
    tail = os.pread(fd, back, size - back)
    nl = tail.rfind(b"\n")
    if nl < 0:
        return size - back if back < size else 0
    return size - back + nl + 1


class Tailer:
    """The file source stage: several FileFollowers, woken by inotify and a stat() timer."""

    name = "tailer"

    def __init__(
        self,
        paths: list[str],
        emit: Emit,
        saved: dict[str, list[FilePosition]] | None = None,
        start_at: str = "end",
        poll_interval: float = 1.0,
        max_line_length: int = 16384,
        use_inotify: bool = True,
    ) -> None:
        self.stats = TailStats()
        self.followers = [FileFollower(p, start_at, max_line_length, self.stats) for p in paths]
        self.emit = emit
        self.saved = saved or {}
        self.poll_interval = poll_interval
        self.use_inotify = use_inotify
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._observer: Any = None
        self._stopping = False
        self.log = log.get("tailer")
        self.last_loop = time.monotonic()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for f in self.followers:
            out = f.resume(self.saved.get(f.path, []))
            if out:
                await self.emit(out)
        if self.use_inotify:
            self._observer = _start_observer(
                [f.path for f in self.followers], lambda: loop.call_soon_threadsafe(self._wake.set)
            )
        self._task = asyncio.create_task(self._run(), name="tailer")

    async def _run(self) -> None:
        while not self._stopping:
            self.last_loop = time.monotonic()
            # Clear before polling: a wake-up that arrives while emit() waits on a full
            # pipeline queue must not be lost.
            self._wake.clear()
            more = False
            for f in self.followers:
                try:
                    out = f.poll()
                except Exception:
                    # Never let one odd file state kill the source; the next poll retries.
                    self.log.exception("tailer poll failed", path=f.path)
                    out = []
                if out:
                    await self.emit(out)
                more = more or f.more
            if more:
                await asyncio.sleep(0)  # a backlog: keep going, but let others run
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            except TimeoutError:
                continue
            # Woken by inotify: a writer usually writes a burst; let it finish so one read
            # takes it all (a wake-up costs more than the few ms of latency this adds).
            await asyncio.sleep(COALESCE)

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 5)
        if self._observer is not None:
            with contextlib.suppress(Exception):
                self._observer.stop()
                await asyncio.to_thread(self._observer.join, 2)
        for f in self.followers:
            f.close()

    def apply_config(self, cfg: Any) -> None:
        self.poll_interval = float(cfg.sources.poll_interval)
        for f in self.followers:
            f.max_line = cfg.sources.max_line_length

    def describe(self) -> dict[str, Any]:
        return {
            "name": "tailer",
            "summary": "; ".join(f.describe() for f in self.followers),
            "stats": self.stats.as_dict(),
        }

    def healthy(self) -> bool:
        if self._task is not None and self._task.done():
            return False
        # The loop wakes at least every poll_interval; a long silence means it is stuck
        # (a full downstream queue counts: the pipeline behind us is not moving).
        return time.monotonic() - self.last_loop < max(30.0, 10 * self.poll_interval)


def _start_observer(paths: list[str], wake: Callable[[], None]) -> Any:
    """inotify through watchdog on each path's directory (and a symlink target's)."""
    try:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer
    except ImportError:  # pragma: no cover - watchdog is a dependency
        return None

    interesting: set[str] = set()
    dirs: set[str] = set()
    for p in paths:
        for q in {os.path.abspath(p), os.path.realpath(p)}:
            interesting.add(q)
            d = os.path.dirname(q)
            if os.path.isdir(d):
                dirs.add(d)

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: Any) -> None:
            src = os.fsdecode(event.src_path)
            dest = os.fsdecode(getattr(event, "dest_path", "") or "")
            if src in interesting or dest in interesting or _sibling(src, interesting):
                wake()

    from watchdog.events import (
        FileClosedEvent,
        FileCreatedEvent,
        FileDeletedEvent,
        FileModifiedEvent,
        FileMovedEvent,
    )

    # Only what can change a log file's content or identity: this narrows the kernel's
    # inotify mask, so opens, reads and attribute changes in /var/log cost nothing.
    wanted = [
        FileModifiedEvent,
        FileCreatedEvent,
        FileDeletedEvent,
        FileMovedEvent,
        FileClosedEvent,
    ]
    observer = Observer()
    handler = Handler()
    for d in dirs:
        try:
            observer.schedule(handler, d, recursive=False, event_filter=wanted)
        except OSError:
            continue  # no inotify here (limits, NFS): the stat() timer still covers us
    try:
        observer.start()
    except Exception:
        return None
    return observer


def _sibling(path: str, interesting: set[str]) -> bool:
    # auth.log.1 being written or renamed matters while we drain it.
    return any(path.startswith(i + ".") for i in interesting)


def existing_paths(paths: Iterable[str]) -> list[str]:
    """The configured paths that exist now (for ``sources.mode: auto``)."""
    return [p for p in paths if Path(p).exists()]
