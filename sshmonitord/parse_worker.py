"""Parse in a second process: ``replay`` on two cores, with the very same results.

Parsing is sequential by nature (the connection memory, the year of a classic stamp), and so
is detection; but they are separate stages, so replay runs them as a two-stage pipeline: a
forked child reads the files and runs the real :class:`~sshmonitord.parse.Parser` over them,
the parent detects. The child sends the events in batches through a pipe, in file order,
as plain tuples (:func:`pack`: the kind as its index, an address as an int) that pickle
and unpickle in a fraction of what Event objects would cost; :class:`Unpacker` rebuilds
equal Events. The parser's statistics travel with every batch (a run stopped early still
has an exact summary); an error reading a file (a damaged .gz) is sent as what it was,
after the events before it, and raised again here.

Only replay uses this (the daemon reads as lines arrive); parse and detect stay the same pure
functions in both. tests/test_replay_golden.py holds both ways to the same results.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import ipaddress
import os
import pickle
import signal
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, NoReturn

from .addresses import address_int, int_address
from .events import Event, Kind
from .parse import Parser, ParseStats

KINDS: tuple[Kind, ...] = tuple(Kind)
_KIND_INDEX = {k: i for i, k in enumerate(KINDS)}
# Lines per message. The pipe is made as large as allowed (1 MiB by default) so the child
# can run several batches ahead; with the default 64 KiB it waited for each batch to be
# detected before it could send the next, and the two processes took turns.
BATCH_LINES = 1024
PIPE_SIZE = 1 << 20
# A frame's length: 8 bytes (a batch of 1,024 lines of megabytes each must not overflow it).
_HEADER = struct.Struct("<Q")

Packed = tuple[Any, ...]


def pack(ev: Event) -> Packed:
    """An Event as a tuple of plain values (see :func:`unpack`)."""
    ip = ev.ip
    return (
        ev.ts,
        ev.host,
        ev.program,
        ev.pid,
        _KIND_INDEX[ev.kind],
        ev.user,
        None if ip is None else address_int(ip),
        ev.port,
        ev.method,
        ev.key_fp,
        ev.count,
        ev.session,
        ev.detail,
        ev.raw,
    )


class Unpacker:
    """Rebuilds Events; one address object per address (attackers repeat)."""

    def __init__(self) -> None:
        self._ips: dict[int, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}

    def __call__(self, t: Packed) -> Event:
        ip_v = t[6]
        ip = None
        if ip_v is not None:
            ips = self._ips
            ip = ips.get(ip_v)
            if ip is None:
                if len(ips) >= 8192:
                    ips.clear()
                ip = ips[ip_v] = int_address(ip_v)
        return Event(
            t[0], t[1], t[2], t[3], KINDS[t[4]], t[5], ip, t[7], t[8], t[9], t[10], t[11],
            t[12], t[13],
        )  # fmt: skip


@dataclass
class FileStart:
    path: str
    size: int | None
    reference: datetime  # the file's modification time (now for stdin): the parser's year


@dataclass
class Batch:
    stats: ParseStats  # the parser's statistics after this batch, all files
    consumed: int | None  # bytes of the open file read so far (compressed for .gz)
    events: list[Packed]


def line_batches(stream: Iterator[str], n: int) -> Iterator[list[str]]:
    """The lines of a text stream in lists of ``n``, each without its newline. A stream
    that fails part-way (a damaged .gz) first gives up the lines it did read, then raises.
    Parsing a batch before detecting it is some 8 % faster than line by line (the code and
    data of one stage stay in the CPU's caches) and changes no result: the parser never
    looks at what detection did."""
    batch: list[str] = []
    append = batch.append
    try:
        for line in stream:
            append(line)
            if len(batch) >= n:
                # Iterating a text file yields one "\n" at most, at the end of a line.
                yield [x.rstrip("\n") for x in batch]
                batch = []
                append = batch.append
    except Exception:
        if batch:
            yield [x.rstrip("\n") for x in batch]
        raise
    if batch:
        yield [x.rstrip("\n") for x in batch]


def _send(fd: int, obj: object) -> None:
    data = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _child(
    fd: int,
    paths: list[str],
    zone: tzinfo,
    open_counted: Callable[[str], Any],
) -> None:
    parser = Parser(zone=zone)
    parse = parser.parse_text
    st = parser.stats
    try:
        for path in paths:
            log = open_counted(path)
            parser.time.set_reference(log.reference)
            _send(fd, FileStart(path, log.size, log.reference))
            try:
                for lines in line_batches(log.stream, BATCH_LINES):
                    out = [pack(ev) for ev in map(parse, lines) if ev is not None]
                    # The statistics travel with every batch (a few hundred bytes): a run
                    # stopped early or a child killed still has an exact summary so far.
                    _send(fd, Batch(st, _consumed(log), out))
            finally:
                log.close()
            _send(fd, Batch(st, _consumed(log, done=True), []))
    except BrokenPipeError:
        return
    except BaseException as exc:  # everything goes back to the parent, which decides
        with contextlib.suppress(BrokenPipeError):
            _send(fd, ("error", _error_kind(exc), str(exc), parser.stats))
        return
    _send(fd, ("end", parser.stats))


def _consumed(log: Any, done: bool = False) -> int | None:
    if log.consumed is None:
        return None
    if done and log.size is not None:
        return int(log.size)
    with contextlib.suppress(OSError, ValueError):
        return int(log.consumed())
    return None


def _error_kind(exc: BaseException) -> str:
    """What the parent re-raises for a child's exception (see :func:`_raise`): the errors a
    file can raise while read, by class (not by name: struct.error and re.error are also
    called "error"); anything else is a bug."""
    if isinstance(exc, zlib.error):
        return "zlib"
    if isinstance(exc, EOFError):
        return "eof"
    if isinstance(exc, OSError):
        # A builtin subclass (FileNotFoundError...) by its name; gzip's BadGzipFile and the
        # like as OSError, which prints the same.
        name = type(exc).__name__
        builtin = getattr(builtins, name, None)
        return name if isinstance(builtin, type) and issubclass(builtin, OSError) else "OSError"
    return "bug:" + type(exc).__qualname__


def _raise(kind: str, text: str) -> NoReturn:
    if kind == "zlib":
        raise zlib.error(text)
    if kind == "eof":
        raise EOFError(text)
    builtin = getattr(builtins, kind, None)
    if isinstance(builtin, type) and issubclass(builtin, OSError):
        raise builtin(text)
    raise ParseProcessError(f"{kind.removeprefix('bug:')}: {text}")


class ParseProcessError(RuntimeError):
    """The parse process failed in a way no file explains (a bug): its message."""


def _recv(f: Any) -> Any:
    head = f.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise ParseProcessError("the parse process ended without finishing (killed?)")
    (size,) = _HEADER.unpack(head)
    data = f.read(size)
    if len(data) < size:
        raise ParseProcessError("the parse process ended mid-message (killed?)")
    return pickle.loads(data)


def parse_forked(
    paths: list[str],
    zone: tzinfo,
    open_counted: Callable[[str], Any],
    peak_rss_kb: list[int] | None = None,
) -> Iterator[FileStart | Batch | ParseStats]:
    """Fork a child that parses ``paths`` in order; yield what it sends: a FileStart per
    file, Batches of packed events, and last the child's ParseStats. A file error in the
    child is raised here as the same exception type, after every batch before it. The
    child's peak RSS (kB) is appended to ``peak_rss_kb`` once it has been reaped."""
    r, w = os.pipe()
    with contextlib.suppress(OSError, AttributeError):  # Linux only; a smaller pipe still works
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: parse, send, and leave without running the parent's exit code
        status = 0
        try:
            os.close(r)
            # The parent ends this process with SIGTERM, whatever it inherited (a replay
            # started with SIGTERM ignored would otherwise wait for it forever).
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _child(w, paths, zone, open_counted)
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(w)
    f = os.fdopen(r, "rb", buffering=1 << 16)
    finished = False
    try:
        while True:
            msg = _recv(f)
            if isinstance(msg, (FileStart, Batch)):
                yield msg
                continue
            if msg[0] == "end":
                finished = True
                yield msg[1]
                return
            _, kind, text, stats = msg
            finished = True
            yield stats
            _raise(kind, text)
    finally:
        f.close()
        if not finished:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(ChildProcessError):
            _, _, usage = os.wait4(pid, 0)
            if peak_rss_kb is not None:
                peak_rss_kb.append(usage.ru_maxrss)
