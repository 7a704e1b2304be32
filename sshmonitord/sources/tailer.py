"""Follow log files across every kind of rotation, restart and crash.

A file is known by *identity*: device, inode and a fingerprint of its first bytes, so an inode
the kernel hands to a new file is not mistaken for the old one. For each configured path we
keep one *current* file open, plus any *draining* ones: files rotated away (renamed, deleted)
that a writer may still append to for a moment. A draining file is read to its end and closed
only once it has stopped growing for ``drain_grace`` seconds.

Rotated files are *generations*: ``auth.log.1``, ``auth.log.2.gz``, ``auth.log-20240101``...,
ordered oldest first (a higher number is older; dateext names sort by their date, as logrotate
itself sorts them). On start, the saved file is found among them wherever it went (renamed,
copied by copytruncate, compressed) and read from its saved offset, then every newer
generation whole, then the current file: each exactly once. What cannot be read (a generation
deleted, or damaged) is a *gap*: a WARNING with the bytes skipped, counted and shown in
``sshmonitor status``. A position is trusted only if its fingerprint covers the bytes before
its offset (or FP_BYTES of them): a file first seen empty cannot vouch for anything.
docs/rotation.md has the whole story.

Wake-ups come from inotify (read on the event loop; through watchdog's threads where that
cannot run) **and** a ``stat()`` every ``poll_interval``, so
following still works where inotify does not (NFS, some containers, queue overflow). With no
writes nothing is read: an idle file costs one stat() per interval.

The tailer never writes positions itself. Each :class:`Line` carries the position after it;
the pipeline commits that position in the same transaction as the line's results, so a crash
replays nothing already handled and loses nothing not yet handled. When a draining file is
done, a :class:`Retired` marker lets the pipeline forget it; the marker waits until a newer
file has produced a Line, so the path always keeps a saved position to resume from.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import re
import stat
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import log
from ..events import FilePosition, Line, Retired
from ..measure import Sample, sample

FP_BYTES = 1024  # fingerprint: hash of the first (up to) this many bytes
READ_CHUNK = 256 * 1024
# Lines handed over per poll at most: a backlog (start_at: beginning, a long downtime) is
# read in slices, so memory stays flat and the event loop (and the watchdog) keep running.
MAX_LINES_PER_POLL = 5000
DRAIN_GRACE = 5.0  # a rotated-away file that stopped growing for this long is done
PARTIAL_GRACE = 2.0  # a partial last line of a rotated-away file is emitted after this
COALESCE = 0.005  # seconds to wait after an inotify wake-up before reading
# Reads woken by inotify start at least this far apart (at most poll_interval). Under an
# attack rsyslog writes each line on its own, and every read costs a poll, a batch and a
# store transaction: at 100 lines/s, one read per line was ~4x the CPU (issue #17, bench/
# tail.py stream). A line written just after a woken read waits up to this long; a lone
# line still waits only COALESCE.
READ_GAP = 0.1
MAX_WARNINGS = 20  # distinct warnings kept for `sshmonitor status`

Emit = Callable[[list[Line | Retired]], Any]
Key = tuple[str, int, int]  # (configured path, dev, inode): how the store keys a position

# Rotated generations as logrotate names them: auth.log.N or auth.log<dateext>, then maybe a
# compression suffix. A dateext suffix needs six digits or more, so auth.log.1 is numbered.
_NUMBERED = re.compile(r"\.(\d{1,5})")
_DATED = re.compile(r"[-._]\d[\d._-]*")


# The readers stay open while a file is drained (closed by _Open.close), hence no `with`;
# each decompressor's module (and its shared library) loads with the first rotated file that
# needs it, not with the daemon (issue #17).
def _gzip_open(p: str) -> Any:
    import gzip

    return gzip.open(p, "rb")


def _bz2_open(p: str) -> Any:
    import bz2

    return bz2.open(p, "rb")


def _lzma_open(p: str) -> Any:
    import lzma

    return lzma.open(p, "rb")


_OPENERS: dict[str, Callable[[str], Any]] = {
    ".gz": _gzip_open,
    ".bz2": _bz2_open,
    ".xz": _lzma_open,
    ".lzma": _lzma_open,
}
# Compressed with a tool the standard library cannot read: recognised, reported as a gap.
_UNREADABLE = (".zst", ".lz4", ".lzo", ".lz", ".br", ".Z")


def _decode_errors() -> tuple[type[BaseException], ...]:
    """What reading a rotated file may raise. Evaluated in an ``except`` clause, so only once
    something was raised, and then the decompressor that raised it is loaded already."""
    import lzma
    import zlib

    return (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError)


def fingerprint_bytes(head: bytes) -> str:
    """``LEN:HASH`` of a file's first bytes. An empty file has the empty fingerprint ``0:``."""
    if not head:
        return "0:"
    return f"{len(head)}:{hashlib.blake2b(head, digest_size=12).hexdigest()}"


# How old a file's ctime must be before its (size, mtime, ctime) may stand for its content
# (git's "racily clean" rule). Changes within one timestamp tick leave all three as they were,
# and a tick is a few ms on older kernels (a jiffy, before multigrain timestamps) and a whole
# second or two on some file systems (ext4 with 128-byte inodes, ext3; FAT): a later change
# always lands in a later tick than a ctime this old.
RACY_NS = 2_500_000_000


def _mark(o: _Open) -> tuple[int, int, int] | None:
    """What tells a file changed in place since it was last read (see ``_Open.seen``)."""
    if o.stream is not None:
        return None
    try:
        st = os.fstat(o.fd)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns)


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
    """Does the file whose first bytes ``head_reader(n)`` returns carry fingerprint ``fp``?

    The empty fingerprint matches anything: use :func:`trusted` before relying on a match.
    """
    n = _fp_len(fp)
    if n == 0:
        return True
    head = head_reader(n)
    return len(head) == n and fingerprint_bytes(head) == fp


def trusted(pos: FilePosition) -> bool:
    """Can this position's fingerprint tell its file from another one?

    Only if it covers the bytes before the offset (or FP_BYTES of them): then a file holding
    the same first bytes holds what we read. A fingerprint taken while the file was empty
    (``0:``), or shorter than what was read after it, vouches for nothing: logrotate's
    ``create`` makes an empty file, and copytruncate puts other content on the same inode.
    """
    n = _fp_len(pos.fingerprint)
    return n > 0 and n >= min(pos.offset, FP_BYTES)


@dataclass
class TailStats:
    lines: int = 0
    bytes: int = 0
    truncated_lines: int = 0
    rotations: int = 0
    truncations: int = 0
    nul_bytes: int = 0
    lost_files: int = 0
    gaps: int = 0  # stretches of log we know we skipped (docs/rotation.md)
    gap_bytes: int = 0  # their size, where it is known
    copytruncates: int = 0  # the followed file was truncated in place while we read it
    unverified: int = 0  # saved positions too weak to trust: their file was read again

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)

    @classmethod
    def total(cls, parts: Iterable[TailStats]) -> TailStats:
        out = cls()
        for p in parts:
            for k, v in p.__dict__.items():
                setattr(out, k, getattr(out, k) + v)
        return out


@dataclass
class _Open:
    """One open file: the current one at the path, or one being drained after rotation."""

    path: str  # the configured path this file was (or is) at
    fd: int
    dev: int  # the identity its Lines carry: its own, or the saved one it continues
    inode: int
    fp: str
    offset: int  # bytes consumed through the last complete line
    buf: bytearray = field(default_factory=bytearray)
    skipping: bool = False  # inside an over-long line, dropping bytes until its newline
    last_growth: float = field(default_factory=time.monotonic)
    stream: Any = None  # a decompressing reader for a rotated-and-compressed file
    finished: bool = False  # rotated while we were down: no writer left, retire at EOF
    seq: int = 0  # age order: a newer file has a higher seq
    name: str = ""  # where it is on disk (for messages)
    retire: set[Key] = field(default_factory=set)  # further saved positions it supersedes
    broken: bool = False  # a damaged compressed file: nothing more can be read
    anchored: bool = False  # the store has a position in it (saved before, or Lines out)
    # (size, mtime_ns, ctime_ns) as fstat() gave them just before a poll that checked the
    # head and read to the end, once that ctime was RACY_NS old: while they stay so, there is
    # nothing to check or read.
    seen: tuple[int, int, int] | None = None

    def close(self) -> None:
        if self.stream is not None:
            with contextlib.suppress(Exception):
                self.stream.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)


@dataclass
class _Gen:
    """One rotated generation on disk (or the current file: ``current``), before opening."""

    path: str
    st: os.stat_result
    comp: str = ""  # compression suffix (".gz"), "" for a plain file
    number: int | None = None  # auth.log.N
    stamp: str = ""  # the dateext suffix
    current: bool = False
    _head: bytes | None = None
    _head_done: bool = False

    def head(self) -> bytes | None:
        """The first FP_BYTES of its content (decompressed), or None if unreadable."""
        if not self._head_done:
            self._head_done = True
            try:
                if self.comp:
                    opener = _OPENERS.get(self.comp)
                    if opener is not None:
                        with opener(self.path) as fh:
                            self._head = fh.read(FP_BYTES)
                else:
                    fd = os.open(
                        self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW
                    )
                    try:
                        self._head = read_head(fd, FP_BYTES)
                    finally:
                        os.close(fd)
            except _decode_errors():
                self._head = None
        return self._head

    def holds(self, pos: FilePosition) -> bool:
        """Is this the file ``pos`` was saved in (same first bytes, long enough)?"""
        n = _fp_len(pos.fingerprint)
        head = self.head()
        if n == 0 or head is None or len(head) < n:
            return False
        if fingerprint_bytes(head[:n]) != pos.fingerprint:
            return False
        return bool(self.comp) or self.st.st_size >= pos.offset

    def same_inode(self, dev: int, inode: int) -> bool:
        return not self.comp and (self.st.st_dev, self.st.st_ino) == (dev, inode)


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
        saved_times: dict[Key, float] | None = None,
        each_position: bool = True,
    ) -> None:
        self.path = path
        self.start_at = start_at
        self.max_line = max_line_length
        # False: of the Lines one read makes, only the last carries its position (see _split).
        self.each_position = each_position
        self.stats = stats or TailStats()
        self.drain_grace = drain_grace
        self.partial_grace = partial_grace
        self.saved_times = saved_times or {}
        self.current: _Open | None = None
        self.draining: list[_Open] = []
        self.started = False
        self.log = log.get("tailer")
        self.missing_logged = False
        self.more = False  # the last poll stopped at its line budget: poll again at once
        self._hit_limit = False
        self._seq = 0
        # Retired markers waiting for a Line of a newer file (see _release).
        self._held: list[tuple[int, Retired]] = []
        self.warnings: list[str] = []
        # When this path last had nothing unread (monotonic): how far behind it is, in time.
        self.caught_up_at = time.monotonic()

    # ------------------------------------------------------------------ start / resume

    def resume(self, saved: Iterable[FilePosition]) -> list[Line | Retired]:
        """Open the path and plan what was written while we were down, oldest first.

        Each saved position is looked for among the rotated generations and the current
        file. The oldest file holding one is read from its saved offset, files between two
        saved ones are skipped (read and retired before we stopped), every generation newer
        than the newest saved file is read whole, then the current file. With no saved file
        left, ``saved_times`` says which generations were written after the last save.
        Reading happens in :meth:`poll`, in slices; this returns nothing to emit.
        """
        saved = list(saved)
        self.started = True
        if not saved:
            self._open_current(offset=None)  # first start: start_at decides
            return []
        cands = self._generations()
        cur = self._current_gen()
        if cur is not None:
            cands.append(cur)
        where: dict[int, int] = {}  # candidate index -> offset to read it from
        keys: dict[int, list[tuple[int, Key]]] = {}  # candidate -> (offset, saved key)
        gone: list[FilePosition] = []
        for pos in saved:
            hit = self._locate(pos, cands)
            if not trusted(pos):
                self._unverified(pos)
            if hit is None:
                gone.append(pos)
                continue
            i, off = hit
            where[i] = max(where.get(i, 0), off)
            keys.setdefault(i, []).append((off, (pos.path, pos.dev, pos.inode)))
        plan: list[tuple[int, int]] = []
        if where:
            newest = max(where)
            for i in range(min(where), len(cands)):
                if i in where:
                    plan.append((i, where[i]))
                elif i > newest:
                    plan.append((i, 0))
                # else: between two saved files, so read and retired before we stopped
            self._check_numbering(cands, newest)
        else:
            since = self._saved_since(saved)
            plan = [
                (i, 0)
                for i, g in enumerate(cands)
                if g.current or (since is not None and g.st.st_mtime > since)
            ]
        for pos in gone:
            self.stats.lost_files += 1
            self._gap(
                f"the file read up to byte {pos.offset} (inode {pos.inode}) is gone; "
                "what was written to it after that was skipped",
                None,
                file=f"inode {pos.inode}",
                offset=pos.offset,
            )
            self._held.append((-1, Retired(pos.path, pos.dev, pos.inode)))
        newest_rotated = max((i for i, _ in plan if not cands[i].current), default=-1)
        current_offset = 0
        for i, off in plan:
            g = cands[i]
            ident = max(keys[i]) if i in keys else None  # the furthest saved position in it
            if g.current:
                current_offset = off
                continue
            # The newest rotated file may still get a line or two from a writer that has
            # not reopened yet: give it the drain grace; older ones are finished.
            o = self._open_gen(g, off, ident[1] if ident else None, finished=i != newest_rotated)
            if o is None:
                continue
            o.retire |= {k for _, k in keys.get(i, [])}
            o.anchored = ident is not None
            self.log.info(
                "reading a file rotated while we were stopped",
                path=self.path,
                file=g.path,
                offset=off,
            )
            self.stats.rotations += 1
            self.draining.append(o)  # read by poll(), in slices, before the current file
        # We had a position for this path, so whatever is there now is new to us.
        self._open_current(offset=current_offset if cur is not None else 0)
        c = self.current
        if c is not None and cur is not None and len(cands) - 1 in keys:
            c.anchored = True
            # Saved under another identity (the file was replaced by a copy of itself):
            # forget those once the current file has a position of its own.
            own = (self.path, c.dev, c.inode)
            self._held += [(c.seq - 1, Retired(*k)) for _, k in keys[len(cands) - 1] if k != own]
        return []

    def _locate(self, pos: FilePosition, cands: list[_Gen]) -> tuple[int, int] | None:
        """(index of the candidate file holding ``pos``, offset to read it from), or None."""
        if not trusted(pos):
            # Nothing to recognise it by: re-read what is on its inode from the start.
            for i, g in enumerate(cands):
                if g.same_inode(pos.dev, pos.inode):
                    return i, 0
            return None
        for i, g in enumerate(cands):  # renamed: same inode, same first bytes
            if g.same_inode(pos.dev, pos.inode) and g.holds(pos):
                return i, pos.offset
        for i in range(len(cands) - 1, -1, -1):  # copied (copytruncate) or compressed
            if cands[i].holds(pos):
                return i, pos.offset
        return None

    def _saved_since(self, saved: list[FilePosition]) -> float | None:
        times = [self.saved_times.get((p.path, p.dev, p.inode)) for p in saved]
        known = [t for t in times if t is not None]
        return max(known) if known else None

    def _check_numbering(self, cands: list[_Gen], newest: int) -> None:
        """auth.log.3 was ours and auth.log.1 is there, so auth.log.2 must be too."""
        top = cands[newest].number
        if cands[newest].current or top is None:
            return
        have = {g.number for g in cands if g.number is not None}
        directory, base = os.path.split(os.path.realpath(self.path))
        for k in range(1, top):
            if k not in have:
                self._gap(
                    f"rotated file {base}.{k} is missing; its lines were skipped",
                    None,
                    file=os.path.join(directory, f"{base}.{k}"),
                )

    def _unverified(self, pos: FilePosition) -> None:
        self.stats.unverified += 1
        self.log.warning(
            "saved position cannot be verified (its fingerprint is too short); "
            "reading its file again from the start: some lines may be handled twice",
            path=self.path,
            inode=pos.inode,
            offset=pos.offset,
            fingerprint_bytes=_fp_len(pos.fingerprint),
        )
        self._warn(
            f"{self.path}: a saved position (byte {pos.offset}) could not be verified; "
            "its file was read again from the start, so some lines may have been handled twice"
        )

    def _gap(self, what: str, size: int | None, **kw: Any) -> None:
        """Lines we know we skipped: WARNING, counted, and shown in `sshmonitor status`."""
        self.stats.gaps += 1
        if size:
            self.stats.gap_bytes += size
        self.log.warning(
            f"gap: {what}",
            path=self.path,
            bytes_skipped=size if size is not None else "unknown",
            **kw,
        )
        amount = f"{size} bytes skipped" if size is not None else "size unknown"
        self._warn(f"gap in {self.path}: {what} ({amount})")

    def _warn(self, text: str) -> None:
        if text in self.warnings:
            return
        self.warnings.append(text)
        del self.warnings[:-MAX_WARNINGS]

    def _generations(self) -> list[_Gen]:
        """The rotated generations beside the (real) path, oldest first, one per generation."""
        directory, base = os.path.split(os.path.realpath(self.path))
        try:
            names = os.listdir(directory or ".")
        except OSError:
            return []
        by_stem: dict[str, _Gen] = {}
        for name in names:
            if not name.startswith(base) or name == base:
                continue
            rest = name[len(base) :]
            comp = next((c for c in (*_OPENERS, *_UNREADABLE) if rest.endswith(c)), "")
            stem = rest[: len(rest) - len(comp)]
            m = _NUMBERED.fullmatch(stem)
            if m is None and not (_DATED.fullmatch(stem) and sum(c.isdigit() for c in stem) >= 6):
                continue
            full = os.path.join(directory, name)
            try:
                # lstat: a symlink named like a generation (auth.log.1 -> /etc/...) is not one
                st = os.lstat(full)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            g = _Gen(full, st, comp, int(m.group(1)) if m else None, "" if m else stem)
            old = by_stem.get(stem)
            # auth.log.1 beside auth.log.1.gz: logrotate is compressing it; the plain file
            # is complete, the compressed one may not be yet.
            if old is None or (old.comp and not comp):
                by_stem[stem] = g
        gens = list(by_stem.values())
        if all(g.number is not None for g in gens):
            gens.sort(key=lambda g: -(g.number or 0))  # auth.log.2 is older than .1
        elif all(g.number is None for g in gens):
            gens.sort(key=lambda g: g.stamp)  # dateext: logrotate's own (lexical) order
        else:
            # Both kinds (the config changed): the modification times decide. Compression
            # keeps a file's mtime; a copytruncate copy has the rotation's time.
            gens.sort(key=lambda g: (g.st.st_mtime, -(g.number or 0), g.stamp))
        return gens

    def _current_gen(self) -> _Gen | None:
        st = self._stat_path()
        return None if st is None else _Gen(self.path, st, current=True)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _open_gen(self, g: _Gen, offset: int, ident: Key | None, finished: bool) -> _Open | None:
        """Open a rotated generation to read from ``offset``; a gap if it cannot be read.

        Its Lines carry ``ident`` (the saved position it continues) or its own identity.
        """
        stream: Any = None
        try:
            if g.comp and g.comp not in _OPENERS:
                raise OSError(f"{g.comp} files cannot be read (no decompressor)")
            fd = os.open(g.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError as exc:
            self._gap(f"cannot read rotated file {g.path}: {exc}", g.st.st_size, file=g.path)
            return None
        try:
            st = os.fstat(fd)
            if g.comp:
                stream = _OPENERS[g.comp](g.path)
                head = stream.read(FP_BYTES)
                stream.seek(offset)
            else:
                head = read_head(fd, FP_BYTES)
        except _decode_errors() as exc:
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
            os.close(fd)
            self._gap(f"cannot read rotated file {g.path}: {exc}", g.st.st_size, file=g.path)
            return None
        dev, inode = (ident[1], ident[2]) if ident else (st.st_dev, st.st_ino)
        o = _Open(self.path, fd, dev, inode, fingerprint_bytes(head), offset, stream=stream)
        o.finished = finished
        o.seq = self._next_seq()
        o.name = g.path
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
        self.current.seq = self._next_seq()
        self.current.name = self.path

    # ------------------------------------------------------------------ polling

    def poll(self) -> list[Line | Retired]:
        """Read what is new (at most MAX_LINES_PER_POLL lines; ``more`` says if there is more);
        handle rotation and truncation. Never raises on file trouble."""
        out: list[Line | Retired] = []
        self.more = False
        now = time.monotonic()
        # Rotated-away files first: their lines are older than the current file's.
        for d in list(self.draining):
            self._take(out, d, self._read_all(d, limit=MAX_LINES_PER_POLL - len(out)))
            if self._hit_limit:
                self.more = True
                return out  # finish the older file before reading the newer one
            idle = time.monotonic() - d.last_growth
            if d.finished or idle >= self.drain_grace:
                self._take(out, d, self._read_all(d, final=True))
                d.close()
                self.draining.remove(d)
                self._retire(out, d)
            elif d.buf and idle >= self.partial_grace:
                self._take(out, d, self._flush_partial(d))
        cur = self.current
        if cur is None:
            if self._stat_path() is not None:
                self._open_current(offset=0)  # appeared after we started: read all of it
                if self.current is not None:
                    self.log.info("log file appeared", path=self.path)
                    lines = self._read_all(self.current, limit=MAX_LINES_PER_POLL - len(out))
                    self._take(out, self.current, lines)
                    self.more = self._hit_limit
            return out
        mark = _mark(cur)
        settled = mark is not None and mark[2] <= time.time_ns() - RACY_NS
        if mark is None or mark != cur.seen or mark[0] != cur.offset + len(cur.buf):
            # Check for truncation before reading, so we never read past a shrink.
            if self._check_truncation(cur, None if mark is None else mark[0]):
                self.more = True
                return out  # the copy's unread end first (next round), then the new content
            self._take(out, cur, self._read_all(cur, limit=MAX_LINES_PER_POLL - len(out)))
            if self._hit_limit:
                self.more = True
                return out  # not at EOF yet: rotation is checked once the file is drained
            cur.seen = mark if settled else None
        # else nothing was written to it, truncated or replaced in place since it was last
        # checked and read to its end: the kernel sets ctime to now on every such change (no
        # user can set it back), and a mark is kept only once its ctime is RACY_NS old, so a
        # later change cannot share its timestamp tick. The stat() timer's poll of a quiet
        # file skips the head's hash and the read (issue #17).
        if not self.draining:
            self.caught_up_at = now
        st = self._stat_path()
        if st is None or (st.st_dev, st.st_ino) != (cur.dev, cur.inode):
            # Renamed or deleted (and perhaps replaced): keep the old fd to drain it.
            self.stats.rotations += 1
            cur.last_growth = now
            cur.name = f"{self.path} (rotated, inode {cur.inode})"
            self.draining.append(cur)
            self.current = None
            if st is not None:
                self._open_current(offset=0)
            # Rotated twice since we last looked: the files in between are read too.
            self._queue_skipped(cur)
            if self.current is not None:
                self.current.seq = self._next_seq()  # newer than those
                self.more = True  # read the new file on the next round, after the old one
        return out

    def _take(self, out: list[Line | Retired], o: _Open, lines: list[Line | Retired]) -> None:
        out.extend(lines)
        if lines:
            o.anchored = True
            self._release(out, o.seq)

    def _retire(self, out: list[Line | Retired], o: _Open) -> None:
        """``o`` is done: its positions may be forgotten, once a newer file has one."""
        markers = [Retired(o.path, o.dev, o.inode)]
        markers += [Retired(*k) for k in sorted(o.retire) if k != (o.path, o.dev, o.inode)]
        self._held += [(o.seq, m) for m in markers]
        # A newer file with a saved position of its own: release now.
        newer = [d for d in self.draining if d.seq > o.seq and d.anchored]
        if self.current is not None and self.current.anchored:
            newer.append(self.current)
        if newer:
            self._release(out, max(d.seq for d in newer))

    def _release(self, out: list[Line | Retired], seq: int) -> None:
        """A Line of the file with age ``seq`` is in ``out``: older files' markers follow it.

        Until then the path keeps the older file's position, so a stop before the newer file
        has any Line still resumes there (and reads the newer file whole), never at start_at.
        """
        if not self._held:
            return
        in_use = {(d.dev, d.inode) for d in self.draining}
        if self.current is not None:
            in_use.add((self.current.dev, self.current.inode))
        keep: list[tuple[int, Retired]] = []
        for s, marker in self._held:
            if s >= seq:
                keep.append((s, marker))
            elif (marker.dev, marker.inode) not in in_use:
                out.append(marker)
            # else: a file still open owns that key now (copytruncate, a reused inode): its
            # Lines replace the old position, and forgetting the key would forget its own.
        self._held = keep

    def _queue_skipped(self, old: _Open) -> None:
        """Generations newer than ``old`` that we never opened: read them whole, in order."""
        gens = self._generations()
        idx = next((i for i, g in enumerate(gens) if g.same_inode(old.dev, old.inode)), None)
        probe = FilePosition(self.path, old.dev, old.inode, old.fp, old.offset)
        if idx is None and trusted(probe):
            # Compressed already: find it by content (a short scan, newest first).
            idx = next((i for i in range(len(gens) - 1, -1, -1) if gens[i].holds(probe)), None)
        if idx is None:
            return  # deleted, or not where logrotate puts rotated files: nothing to order by
        held = {(d.dev, d.inode) for d in self.draining}
        if self.current is not None:
            held.add((self.current.dev, self.current.inode))
        for g in gens[idx + 1 :]:
            if (g.st.st_dev, g.st.st_ino) in held:
                continue
            o = self._open_gen(g, 0, None, finished=False)
            if o is None:
                continue
            self.log.info("reading a rotated file we never saw as current", file=g.path)
            self.stats.rotations += 1
            o.last_growth = time.monotonic()
            self.draining.append(o)

    def _check_truncation(self, o: _Open, size: int | None) -> bool:
        """Handle a truncation of the current file; True if a copy of it is queued to read.
        ``size``: the file's size from an fstat the caller just made (else one is made)."""
        if size is None:
            try:
                size = os.fstat(o.fd).st_size
            except OSError:
                return False
        # Log files only shrink by truncation: below our offset, or below the bytes we
        # fingerprinted, the content is new.
        truncated = size < o.offset or size < _fp_len(o.fp)
        if not truncated and _fp_len(o.fp) > 0:
            # Same inode, but are the first bytes still the ones we fingerprinted? A file
            # truncated and rewritten past our offset between two polls is caught here.
            truncated = not matches_fingerprint(lambda n: read_head(o.fd, n), o.fp)
        if not truncated:
            return False
        # We count every truncation of the followed file as a copytruncate rotation: it is
        # the routine cause, and whatever the cause, lines written between the copy and the
        # truncation are gone (docs/rotation.md).
        self.stats.truncations += 1
        self.stats.copytruncates += 1
        # What we had not read yet is in the copy logrotate just made: read it from there.
        copy = self._find_copy(o)
        self.log.warning(
            "copytruncate rotation detected (file truncated in place): lines written "
            "during the copy can be lost; use `create` (docs/rotation.md)",
            path=self.path,
            old_offset=o.offset,
            size=size,
            unread_end_from=copy.name if copy is not None else None,
        )
        self._warn(
            f"copytruncate rotation detected on {self.path}: lines written during the copy "
            "can be lost; use `create` (docs/rotation.md)"
        )
        o.offset = 0
        o.buf.clear()
        o.skipping = False
        o.fp = fingerprint_bytes(read_head(o.fd, FP_BYTES))
        if copy is None:
            return False
        copy.seq = self._next_seq()
        o.seq = self._next_seq()  # the new content is newer than the copy
        self.draining.append(copy)
        return True

    def _find_copy(self, o: _Open) -> _Open | None:
        """The rotated copy of ``o`` as it was before the truncation, opened at our offset.

        Its Lines carry ``o``'s identity: they continue that saved position, and the new
        content (same inode) takes the position over after them.
        """
        probe = FilePosition(self.path, o.dev, o.inode, o.fp, o.offset)
        if not trusted(probe):
            return None
        for g in reversed(self._generations()):  # the copy is the newest generation
            if not g.same_inode(o.dev, o.inode) and g.holds(probe):
                copy = self._open_gen(g, o.offset, (o.path, o.dev, o.inode), finished=True)
                if copy is not None:
                    copy.anchored = True
                return copy
        return None

    def _read_all(
        self, o: _Open, final: bool = False, limit: int | None = None
    ) -> list[Line | Retired]:
        out: list[Line | Retired] = []
        self._hit_limit = False
        if limit is not None and limit <= 0:
            self._hit_limit = True
            return out
        while not o.broken:
            try:
                if o.stream is not None:
                    # read1: what decompresses before damage is returned, not lost with it.
                    chunk = o.stream.read1(READ_CHUNK)
                else:
                    chunk = os.pread(o.fd, READ_CHUNK, o.offset + len(o.buf))
            except _decode_errors() as exc:
                if o.stream is None:
                    self.log.warning("read failed", path=self.path, error=str(exc))
                    break
                # Damaged compressed data: nothing after it can be read.
                o.broken = o.finished = True
                self._gap(
                    f"cannot read rotated file {o.name} past byte {o.offset}: {exc}",
                    None,
                    file=o.name,
                )
                break
            if not chunk:
                break
            o.last_growth = time.monotonic()
            self.stats.bytes += len(chunk)
            if o.stream is None and _fp_len(o.fp) < FP_BYTES:
                # Seen shorter than the fingerprint length (empty, even): strengthen the
                # fingerprint *before* these Lines carry it, so every saved position can
                # tell its file from another one on the same inode (see trusted()).
                head = read_head(o.fd, FP_BYTES)
                if len(head) > _fp_len(o.fp):
                    o.fp = fingerprint_bytes(head)
            out.extend(self._split(o, chunk))
            if len(chunk) < READ_CHUNK and o.stream is None:
                break  # at the end of a plain file; a stream says so with b""
            if limit is not None and len(out) >= limit:
                self._hit_limit = True
                return out
        if final and o.buf:
            out.extend(self._flush_partial(o))
        return out

    def _split(self, o: _Open, chunk: bytes) -> list[Line]:
        data = bytes(o.buf) + chunk if o.buf else chunk
        base = o.offset  # file offset of data[0]
        o.buf.clear()
        pieces = data.split(b"\n")
        last = pieces.pop()  # bytes after the last newline: a partial line (maybe empty)
        if (
            not self.each_position
            and pieces
            and not o.skipping
            and data.isascii()
            and b"\x00" not in data
            and b"\r" not in data
            and max(map(len, pieces)) <= self.max_line
        ):
            out = self._plain_lines(o, data, len(data) - len(last), base)
        else:
            out = self._each_line(o, pieces, base)
        start = len(data) - len(last)
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

    def _each_line(self, o: _Open, pieces: list[bytes], base: int) -> list[Line]:
        """A Line per piece (what _make keeps), each with the position after it."""
        out: list[Line] = []
        start = 0
        for piece in pieces:
            end = start + len(piece) + 1
            if o.skipping:
                o.skipping = False  # the rest of an over-long line we already emitted
            else:
                line = self._make(o, piece, base + end)
                if line is not None:
                    out.append(line)
            start = end
        return out

    def _plain_lines(self, o: _Open, data: bytes, size: int, base: int) -> list[Line]:
        """The complete lines in ``data[:size]`` when _make would change none of them (ASCII,
        no NUL or CR, none too long): one decode for all, and one FilePosition, on the last
        Line. A batch is stored with the last position it holds, and a read's Lines are never
        split between batches (the pipeline takes each hand-over whole), so the positions
        before it would only be overwritten. Of the tailer's 1.55 µs a line on a backlog,
        those positions took ~0.7 and decoding line by line ~0.5 (issue #17: 0.72 µs now).
        Blank lines make no Line, here as in _make."""
        texts = data[:size].decode("ascii").split("\n")
        texts.pop()  # after the last newline: nothing
        path = self.path
        out = [Line(t, path) for t in texts if t]
        if out:
            blank = 0  # blank lines after the last Line: its position is before them
            while not texts[-1 - blank]:
                blank += 1
            end = base + size - blank
            out[-1].position = FilePosition(path, o.dev, o.inode, o.fp, end)
            self.stats.lines += len(out)
        return out

    def _flush_partial(self, o: _Open) -> list[Line | Retired]:
        piece = bytes(o.buf)
        o.buf.clear()
        end = o.offset + len(piece)
        line = self._make(o, piece, end)
        o.offset = end
        return [line] if line is not None else []

    def _make(self, o: _Open, piece: bytes, end: int, cut: bool = False) -> Line | None:
        """``cut``: the first ``max_line`` bytes of a line whose newline is not read yet. It
        gets no position: the file's offset after it is inside the line, and a restart there
        would read the line's rest as a line of its own, any text a local writer put past
        the cut included. A stop before its newline re-reads the line (cut again) instead."""
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
            position=None if cut else FilePosition(self.path, o.dev, o.inode, o.fp, end),
        )

    def close(self) -> None:
        for o in [*self.draining, *([self.current] if self.current else [])]:
            o.close()
        self.draining.clear()
        self.current = None

    def bytes_behind(self) -> int:
        """Bytes written to this path's files that are not read yet (compressed rotated
        files, read through a decompressor, are not counted)."""
        behind = 0
        for o in [*self.draining, *([self.current] if self.current else [])]:
            if o.stream is not None or o.broken:
                continue
            try:
                size = os.fstat(o.fd).st_size
            except OSError:
                continue
            behind += max(0, size - o.offset - len(o.buf))
        return behind

    def metrics(self, now: float) -> list[Sample]:
        s, src = self.stats, self.path
        behind = self.bytes_behind()
        return [
            sample("sshmonitor_lines_read_total", s.lines, source=src),
            sample("sshmonitor_source_bytes_behind", behind, source=src),
            sample(
                "sshmonitor_source_lag_seconds",
                0.0 if behind == 0 else max(0.0, now - self.caught_up_at),
                source=src,
            ),
            sample("sshmonitor_rotations_total", s.rotations, source=src, kind="rotated"),
            sample("sshmonitor_rotations_total", s.copytruncates, source=src, kind="copytruncate"),
            sample(
                "sshmonitor_rotations_total",
                s.truncations - s.copytruncates,
                source=src,
                kind="truncated",
            ),
            # Cut at max_line_length, not dropped: the first part is read.
            sample("sshmonitor_lines_rejected_total", s.truncated_lines, source=src,
                   reason="too_long"),
        ]

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
    role = "source"  # what the daemon wires it as (docs/architecture.md)

    def __init__(
        self,
        paths: list[str],
        emit: Emit,
        saved: dict[str, list[FilePosition]] | None = None,
        start_at: str = "end",
        poll_interval: float = 1.0,
        max_line_length: int = 16384,
        use_inotify: bool = True,
        saved_times: dict[tuple[str, int, int], float] | None = None,
        watcher: str = "auto",
        each_position: bool = True,
    ) -> None:
        # saved_times: when each saved position was last written (Store.file_position_times);
        # what was rotated after that is unread when the saved file itself is gone.
        # watcher: "auto" (inotify on the event loop, else watchdog's threads), "inotify" or
        # "watchdog" only (tests pin one). each_position: see FileFollower._plain_lines; only
        # for a consumer that keeps the last position of each hand-over (the pipeline does).
        self.followers = [
            FileFollower(
                p,
                start_at,
                max_line_length,
                TailStats(),
                saved_times=saved_times,
                each_position=each_position,
            )
            for p in paths
        ]
        self.emit = emit
        self.saved = saved or {}
        self.poll_interval = poll_interval
        self.use_inotify = use_inotify
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.watcher = watcher
        self._observer: Any = None
        self._inotify: InotifyWatcher | None = None
        self._stopping = False
        self.log = log.get("tailer")
        self.last_loop = time.monotonic()
        self.read_gap = READ_GAP
        self._woken_read = -math.inf  # when the last read woken by inotify began
        self._timed_out = False  # the stat() timer, not inotify, ended the last wait

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.initial: list[FilePosition] = []
        for f in self.followers:
            out = f.resume(self.saved.get(f.path, []))
            o = f.current
            if not self.saved.get(f.path) and o is not None:
                # Where a first start begins (start_at), before anything is read: stored at
                # once, so a crash before the first batch is stored does not move it.
                self.initial.append(FilePosition(o.path, o.dev, o.inode, o.fp, o.offset))
            if out:
                await self.emit(out)
        if self.use_inotify:
            paths = [f.path for f in self.followers]
            if self.watcher in ("auto", "inotify"):
                self._inotify = InotifyWatcher.start(paths, self._wake.set, loop)
            if self._inotify is None and self.watcher in ("auto", "watchdog"):
                self._observer = _start_observer(
                    paths, lambda: loop.call_soon_threadsafe(self._wake.set)
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
            if not await self._wait():
                continue
            # Woken by inotify: a writer usually writes a burst; let it finish so one read
            # takes it all (a wake-up costs more than the few ms of latency this adds). A
            # stream of writes, each waking us again soon after a woken read, is read
            # READ_GAP apart, and never further apart than the stat() timer reads.
            gap = min(self.read_gap, self.poll_interval)
            await asyncio.sleep(max(COALESCE, self._woken_read + gap - time.monotonic()))
            self._woken_read = time.monotonic()

    async def _wait(self) -> bool:
        """Until inotify (or stop()) wakes us, True, or poll_interval passes, False.

        A timer that sets the same event, not ``asyncio.timeout``: on expiry that cancels
        the waiting task and unwinds an exception through it, which an idle daemon did once a
        second (issue #17). A cancellation of this task while it waits goes through as it
        came, and the timer goes with it."""
        if self._wake.is_set():
            return True
        self._timed_out = False
        timer = asyncio.get_running_loop().call_later(self.poll_interval, self._time_out)
        try:
            await self._wake.wait()
        finally:
            timer.cancel()
        return not self._timed_out

    def _time_out(self) -> None:
        self._timed_out = True
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    @property
    def stats(self) -> TailStats:
        """All paths together (each follower counts its own)."""
        return TailStats.total(f.stats for f in self.followers)

    def metrics(self) -> list[Sample]:
        now = time.monotonic()
        return [m for f in self.followers for m in f.metrics(now)]

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 5)
        if self._inotify is not None:
            self._inotify.close()
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
            "mode": "file",
            # Any local user can put a line in a syslog file (`logger -t sshd ...`).
            "forgeable": True,
            # The configured paths that do not exist (yet): followed all the same, read from
            # their first line when they appear. None open: nothing can arrive until then.
            "waiting_for": [f.path for f in self.followers if f.current is None],
            "open_files": sum(1 for f in self.followers if f.current is not None or f.draining),
            "can_deliver": any(f.current is not None or f.draining for f in self.followers),
            "warnings": [w for f in self.followers for w in f.warnings],
        }

    def healthy(self) -> bool:
        if self._task is not None and self._task.done():
            return False
        # The loop wakes at least every poll_interval; a long silence means it is stuck
        # (a full downstream queue counts: the pipeline behind us is not moving).
        return time.monotonic() - self.last_loop < max(30.0, 10 * self.poll_interval)


# <sys/inotify.h>
IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x1000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
# A directory: only a name coming or going (or its attributes: logrotate's `create` mode).
# No IN_MODIFY: the other logs of /var/log being written wake nothing (issue #17).
DIR_MASK = IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM | IN_ATTRIB | IN_ONLYDIR
# A followed file itself (its inode, so the watch follows it when it is rotated away and
# drained): written, or truncated (copytruncate) - both are IN_MODIFY.
FILE_MASK = IN_MODIFY
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name


class _Libc:
    """libc's inotify calls through ctypes, loaded once (None where there are none)."""

    funcs: tuple[Any, Any, Any] | None = None
    loaded = False

    @classmethod
    def get(cls) -> tuple[Any, Any, Any] | None:
        if not cls.loaded:
            cls.loaded = True
            try:
                import ctypes

                libc = ctypes.CDLL(None, use_errno=True)
                init = libc.inotify_init1
                add = libc.inotify_add_watch
                rm = libc.inotify_rm_watch
            except (ImportError, OSError, AttributeError):
                return None
            init.argtypes, init.restype = [ctypes.c_int], ctypes.c_int
            add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
            add.restype = ctypes.c_int
            rm.argtypes, rm.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            cls.funcs = (init, add, rm)
        return cls.funcs


class InotifyWatcher:
    """inotify read on the event loop (``loop.add_reader``), no thread: each followed path's
    directory for names coming and going, and the followed file for writes. A write to
    another file of the directory causes no event at all; an event for another name (a
    sibling created or deleted) is read and dropped without waking the tailer. Rotated
    generations (``auth.log.1``...) appearing or going wake it, as they did with watchdog.

    ``start`` returns None where inotify cannot be used (not Linux, no inotify_init1, out of
    instances): the tailer then falls back to watchdog, and the stat() timer covers the rest.
    """

    def __init__(self, fd: int, add: Any, wake: Callable[[], object]) -> None:
        self.fd = fd
        self._add = add
        self._wake = wake
        # wd -> every watched directory path it stands for: two paths naming one directory
        # (a symlinked directory, a bind mount) get the kernel's one watch.
        self.dirs: dict[int, list[str]] = {}
        # Directories whose followed file could not get a watch of its own (the inotify
        # watch limit reached): their own watch takes IN_MODIFY too, filtered by name.
        self.degraded: set[str] = set()
        self.files: dict[int, str] = {}  # wd -> the followed path whose inode it watches
        self.names: dict[str, set[str]] = {}  # directory -> the followed names in it
        self.paths: list[str] = []
        self.events = 0  # read from the kernel
        self.wakeups = 0  # of those, the ones that woke the tailer
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def start(
        cls, paths: list[str], wake: Callable[[], object], loop: asyncio.AbstractEventLoop
    ) -> InotifyWatcher | None:
        funcs = _Libc.get() if os.uname().sysname == "Linux" else None
        if funcs is None:
            return None
        init, add, _rm = funcs
        fd = init(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            return None  # EMFILE (max_user_instances), ENOSYS...
        w = cls(fd, add, wake)
        for p in paths:
            for q in {os.path.abspath(p), os.path.realpath(p)}:
                d, name = os.path.split(q)
                w.names.setdefault(d, set()).add(name)
            w.paths.append(p)
        for d in w.names:
            wd = w._watch(d, DIR_MASK)
            if wd is not None:
                w.dirs.setdefault(wd, []).append(d)
        if not w.dirs:
            os.close(fd)
            return None  # no directory could be watched (limits, NFS): watchdog may try
        for p in paths:
            w.watch_file(p)
        try:
            loop.add_reader(fd, w._readable)
        except (NotImplementedError, OSError, ValueError):
            os.close(fd)
            return None
        w._loop = loop
        return w

    def _watch(self, path: str, mask: int) -> int | None:
        wd = self._add(self.fd, os.fsencode(path), mask)
        return wd if wd >= 0 else None

    def watch_file(self, path: str) -> None:
        """Watch the inode ``path`` names now (again after a rotation: the old inode keeps its
        watch while it drains, the kernel drops it when the file is deleted). Where that
        fails for a file that exists (the watch limit), its directory's watch takes the
        writes instead: a sibling's writes are then read, and dropped by name."""
        wd = self._watch(path, FILE_MASK)  # follows a symlink to its target
        if wd is not None:
            self.files[wd] = path
            return
        if not os.path.exists(path):
            return  # it appears later: its directory's IN_CREATE watches it then
        d = os.path.dirname(os.path.abspath(path))
        if d not in self.degraded and self._watch(d, DIR_MASK | IN_MODIFY) is not None:
            self.degraded.add(d)

    def _readable(self) -> None:
        wake = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                wake = True
                break
            if not data:
                break
            wake = self._handle(data) or wake
        if wake:
            self.wakeups += 1
            self._wake()

    def _handle(self, data: bytes) -> bool:
        wake = False
        rewatch: set[str] = set()
        i = 0
        while i + _EVENT.size <= len(data):
            wd, mask, _cookie, size = _EVENT.unpack_from(data, i)
            name = data[i + _EVENT.size : i + _EVENT.size + size].rstrip(b"\0")
            i += _EVENT.size + size
            self.events += 1
            if mask & IN_Q_OVERFLOW:
                # Events were lost: read everything, and watch the files named now.
                wake = True
                rewatch.update(self.paths)
                continue
            if wd in self.files:
                if mask & IN_IGNORED:
                    del self.files[wd]  # the inode is gone (or the watch was replaced)
                else:
                    wake = True
                continue
            ds = self.dirs.get(wd)
            if ds is None:
                continue
            if mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF):
                wake = True  # the directory itself went: the stat() timer carries on
                if mask & IN_IGNORED:
                    del self.dirs[wd]
                continue
            fname = os.fsdecode(name)
            for d in ds:
                followed = self.names.get(d, set())
                if fname in followed:
                    wake = True  # a write too, where the directory watch takes them
                    if mask & (IN_CREATE | IN_MOVED_TO):
                        rewatch.add(os.path.join(d, fname))
                elif not mask & IN_MODIFY and any(fname.startswith(n + ".") for n in followed):
                    wake = True  # auth.log.1 appearing or going matters while we drain
        for p in rewatch:
            self.watch_file(p)
        return wake

    def close(self) -> None:
        if self.fd < 0:
            return
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.fd)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = -1


def _start_observer(paths: list[str], wake: Callable[[], object]) -> Any:
    """inotify through watchdog on each path's directory (and a symlink target's): where the
    InotifyWatcher cannot run. Its threads get every event of the directory, a sibling
    log's writes included, and filter them in Python."""
    import inspect

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
    # schedule(event_filter=) is watchdog >= 4. Older ones (Debian 12 ships watchdog 2.2.1)
    # raise TypeError for it; they take no filter, but their fixed inotify mask already
    # leaves out opens, reads and close-after-read (it adds only attribute changes), so
    # without the filter we get at most a few more wake-ups, never fewer.
    kw: dict[str, Any] = {"recursive": False}
    if "event_filter" in inspect.signature(observer.schedule).parameters:
        kw["event_filter"] = wanted
    for d in dirs:
        try:
            observer.schedule(handler, d, **kw)
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
