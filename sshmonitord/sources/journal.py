"""Follow the systemd journal through ``journalctl --follow --output=json``.

Modern Debian and Ubuntu installs have no auth.log: sshd writes only to the journal. We run
journalctl as a child (no libsystemd binding needed), filtered to sshd, sudo, su and sftp
records, and resume with ``--after-cursor`` from the cursor of the last entry the pipeline
handled. If journalctl exits, it is restarted with exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from .. import log
from ..events import JournalPosition, Line

# Only these fields travel with a Line: what the parser reads, and what identifies a record.
KEEP_FIELDS = (
    "MESSAGE",
    "_PID",
    "SYSLOG_PID",
    "_COMM",
    "SYSLOG_IDENTIFIER",
    "_HOSTNAME",
    "__REALTIME_TIMESTAMP",
    "PRIORITY",
    "_SYSTEMD_UNIT",
    "__CURSOR",
    "_TRANSPORT",
)
MAX_LINE = 1 << 20
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0

Emit = Callable[[list[Any]], Any]


def group_matches(matches: Sequence[str]) -> list[str]:
    """journalctl ANDs matches on different fields; put ``+`` between fields to OR them all."""
    by_field: dict[str, list[str]] = {}
    for m in matches:
        by_field.setdefault(m.split("=", 1)[0], []).append(m)
    out: list[str] = []
    for group in by_field.values():
        if out:
            out.append("+")
        out.extend(group)
    return out


def build_command(
    journalctl: str,
    matches: Sequence[str],
    cursor: str | None,
    start_at: str = "end",
    directory: str | None = None,
    files: Sequence[str] = (),
    follow: bool = True,
) -> list[str]:
    """The journalctl argument vector (no shell is ever involved)."""
    cmd = [journalctl, "--output=json", "--no-pager", "--quiet"]
    if follow:
        cmd.append("--follow")
    if directory:
        cmd.append(f"--directory={directory}")
    for f in files:
        cmd.append(f"--file={f}")
    if cursor:
        # --follow alone shows only the last 10 entries, even after a cursor: ask for all.
        cmd += [f"--after-cursor={cursor}", "--no-tail" if follow else "--lines=all"]
    elif start_at == "end":
        cmd.append("--lines=0")
    else:
        cmd.append("--no-tail" if follow else "--lines=all")
    cmd.extend(group_matches(matches))
    return cmd


def _text(value: Any) -> str:
    """journalctl JSON gives a string, or an array of byte values for non-UTF-8 data."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if value and isinstance(value[0], list):  # a field present several times
            value = value[0]
        with contextlib.suppress(TypeError, ValueError):
            return bytes(value).decode("utf-8", "replace")
    return "" if value is None else str(value)


def record_to_line(raw: bytes, source: str = "journal") -> Line | None:
    """One journalctl JSON line → a Line carrying the journal fields; None if unusable."""
    try:
        rec = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(rec, dict):
        return None
    cursor = rec.get("__CURSOR")
    fields = {k: _text(rec[k]) for k in KEEP_FIELDS if k in rec}
    return Line(
        text=fields.get("MESSAGE", ""),
        source=source,
        position=JournalPosition(str(cursor)) if cursor else None,
        fields=fields,
    )


class JournalSource:
    """The journal source stage."""

    name = "journal"

    def __init__(
        self,
        emit: Emit,
        journalctl: str = "journalctl",
        matches: Sequence[str] = (),
        cursor: str | None = None,
        start_at: str = "end",
        directory: str | None = None,
        files: Sequence[str] = (),
    ) -> None:
        self.emit = emit
        self.journalctl = journalctl
        self.matches = tuple(matches)
        self.cursor = cursor  # of the last entry we emitted
        self.start_at = start_at
        self.directory = directory
        self.files = tuple(files)
        self.proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0
        self.records = 0
        self.bad_records = 0
        self.last_error: str | None = None
        self.log = log.get("journal")

    def command(self) -> list[str]:
        return build_command(
            self.journalctl, self.matches, self.cursor, self.start_at, self.directory, self.files
        )

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="journal")

    async def _run(self) -> None:
        backoff = BACKOFF_MIN
        while not self._stopping:
            started = time.monotonic()
            try:
                await self._follow_once()
            except FileNotFoundError:
                self.last_error = f"{self.journalctl} not found"
                self.log.error("cannot run journalctl", path=self.journalctl)
            except Exception as exc:
                self.last_error = str(exc)
                self.log.exception("journal source failed")
            if self._stopping:
                break
            if time.monotonic() - started > 60:
                backoff = BACKOFF_MIN  # it ran fine for a while: this is a fresh failure
            self.restarts += 1
            self.log.warning(
                "journalctl exited; restarting",
                in_seconds=backoff,
                restarts=self.restarts,
                error=self.last_error,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _follow_once(self) -> None:
        cmd = self.command()
        self.log.info("following the journal", command=" ".join(cmd))
        self.proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=MAX_LINE,
            start_new_session=True,
        )
        # Once journalctl runs with --after-cursor/--lines=0, later restarts continue from
        # the cursor we hold; --no-tail applies only to the very first run.
        self.start_at = "end"
        assert self.proc.stdout is not None and self.proc.stderr is not None
        err_task = asyncio.create_task(self.proc.stderr.read())
        batch: list[Any] = []
        try:
            while True:
                try:
                    raw = await self.proc.stdout.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    self.bad_records += 1
                    continue
                if not raw:
                    break
                line = record_to_line(raw)
                if line is None:
                    self.bad_records += 1
                    continue
                self.records += 1
                if isinstance(line.position, JournalPosition):
                    self.cursor = line.position.cursor
                batch.append(line)
                # Hand over what has arrived; wait for more only when nothing is buffered.
                if len(batch) >= 500 or not _buffered(self.proc.stdout):
                    await self.emit(batch)
                    batch = []
        finally:
            if batch:
                await self.emit(batch)
            rc = await self._reap()
            stderr = b""
            with contextlib.suppress(Exception):
                stderr = await asyncio.wait_for(err_task, 1)
            if not self._stopping:
                msg = stderr.decode("utf-8", "replace").strip()
                self.last_error = f"exit status {rc}" + (f": {msg[-500:]}" if msg else "")

    async def _reap(self) -> int | None:
        p = self.proc
        if p is None:
            return None
        if p.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
            try:
                await asyncio.wait_for(p.wait(), 3)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()
        return p.returncode

    async def stop(self) -> None:
        self._stopping = True
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 5)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()

    def apply_config(self, cfg: Any) -> None:
        j = cfg.sources.journal
        if (j.journalctl, tuple(j.matches), j.directory, tuple(j.files)) != (
            self.journalctl,
            self.matches,
            self.directory,
            self.files,
        ):
            self.log.warning("journal settings change only on restart")

    def describe(self) -> dict[str, Any]:
        where = self.directory or ", ".join(self.files) or "the system journal"
        return {
            "name": "journal",
            "summary": f"following {where}",
            "stats": {
                "records": self.records,
                "bad_records": self.bad_records,
                "restarts": self.restarts,
            },
            "last_error": self.last_error,
        }

    def healthy(self) -> bool:
        return self._task is None or not self._task.done()


def _buffered(reader: asyncio.StreamReader) -> bool:
    """Are more bytes already waiting? (Batches bursts; CPython keeps them in ``_buffer``.)"""
    buf = getattr(reader, "_buffer", None)
    return bool(buf) and b"\n" in buf


def journalctl_available(journalctl: str = "journalctl") -> bool:
    """Is there a journalctl to run (for ``sources.mode: auto``)?"""
    if os.sep in journalctl:
        return os.access(journalctl, os.X_OK)
    return any(
        os.access(os.path.join(d, journalctl), os.X_OK)
        for d in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
    )
