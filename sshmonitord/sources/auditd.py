"""auditd's log as a source: the file tailer, with audit records joined into events.

``/var/log/audit/audit.log`` is followed by the same :class:`~.tailer.Tailer` as auth.log
(rotation by auditd's own ``max_log_file_action = ROTATE``, restarts, truncation). Its Lines
go through :class:`~.audit_records.AuditGrouper` before they reach the pipeline, so what the
pipeline sees is one Line per audit *event* (its records joined by newlines) whose source is
``audit:<path>``; the parser routes those to :func:`~..parse.audit.parse_audit`.

Positions keep the tailer's meaning: the position after the last line whose handling is
complete. Events leave in the order they began, and each Line carries its file's *safe*
position: never past the first record of an event still being assembled. A crash or a stop
therefore re-reads unfinished events whole (their records were never committed); what it
re-reads of events already out is only their tails, without a SYSCALL record, which make no
event. No command is lost or repeated.

Events auditd never closed (no PROCTITLE/EOE: a record lost, an unusual kernel event) are
closed by a newer record ``end_of_event_timeout`` seconds later, by the buffer bound, or, when
the log goes quiet, by a wall-clock timer here (auditd writes line-buffered, so an event's
records reach the file together).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

from .. import log
from ..events import FilePosition, Line, Retired
from ..measure import Sample
from .audit_records import END_OF_EVENT_TIMEOUT, MAX_PENDING, AuditGrouper
from .tailer import Tailer

DEFAULT_PATH = "/var/log/audit/audit.log"


class AuditSource:
    """The auditd source stage: a one-file :class:`Tailer` plus an :class:`AuditGrouper`."""

    name = "auditd"
    role = "source"  # what the daemon wires it as (docs/architecture.md)

    def __init__(
        self,
        path: str,
        emit: Callable[[list[Line | Retired]], Any],
        saved: dict[str, list[FilePosition]] | None = None,
        start_at: str = "end",
        poll_interval: float = 1.0,
        max_line_length: int = 16384,
        use_inotify: bool = True,
        end_of_event_timeout: float = END_OF_EVENT_TIMEOUT,
        max_pending: int = MAX_PENDING,
        saved_times: dict[tuple[str, int, int], float] | None = None,
    ) -> None:
        self.path = path
        self.emit = emit
        self.timeout = float(end_of_event_timeout)
        self.grouper = AuditGrouper(timeout=self.timeout, max_pending=max_pending)
        self.tailer = Tailer(
            [path],
            self._take,
            saved,
            start_at,
            poll_interval,
            max_line_length,
            use_inotify=use_inotify,
            saved_times=saved_times,
        )
        # One batch at a time through the grouper and onto the queue, so the idle flush
        # can never overtake a batch the tailer is still handing over.
        self._lock = asyncio.Lock()
        self._last_line = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self.log = log.get("auditd")

    async def start(self) -> None:
        if os.path.exists(self.path) and not os.access(self.path, os.R_OK):
            self.log.error(
                "audit log exists but is not readable by this user; waiting for access",
                path=self.path,
                uid=os.getuid(),
                hint="auditd.conf: log_group = adm (and the directory root:adm 0750), or "
                "CAP_DAC_READ_SEARCH (see docs/auditd.md, docs/systemd.md)",
            )
        await self.tailer.start()
        self._task = asyncio.create_task(self._idle_flush(), name="auditd-idle-flush")

    async def _take(self, batch: list[Line | Retired]) -> None:
        """The tailer's emit: records in, events out."""
        async with self._lock:
            out: list[Line | Retired] = []
            for item in batch:
                if isinstance(item, Retired):
                    # Events still open in a drained file will get no more records.
                    out.extend(self.grouper.retire(item.path, item.dev, item.inode))
                    out.append(item)
                else:
                    out.extend(self.grouper.feed(item))
            self._last_line = time.monotonic()
            if out:
                await self.emit(out)

    async def _idle_flush(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, self.timeout / 2))
            if not self.grouper.pending:
                continue
            if time.monotonic() - self._last_line < self.timeout:
                continue
            try:
                async with self._lock:
                    out: list[Line | Retired] = [*self.grouper.flush()]
                    if out:
                        await self.emit(out)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the timer die; the next round retries
                self.log.exception("audit idle flush failed")

    async def stop(self) -> None:
        # Open events are not emitted: their records are past the committed position and
        # are read again, whole, at the next start.
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.tailer.stop()

    def apply_config(self, cfg: Any) -> None:
        self.tailer.apply_config(cfg)
        audit = getattr(cfg.sources, "audit", None)
        timeout = getattr(audit, "end_of_event_timeout", None)
        if timeout is not None:
            self.timeout = float(timeout)
            self.grouper.timeout = self.timeout

    def describe(self) -> dict[str, Any]:
        d = self.tailer.describe()
        stats = dict(d["stats"])
        stats.update({f"audit_{k}": v for k, v in self.grouper.stats.as_dict().items()})
        stats["audit_open_events"] = len(self.grouper.pending)
        return {
            "name": self.name,
            "summary": f"audit: {d['summary']}",
            "stats": stats,
            "mode": "file",
            # Only auditd (root) writes audit.log: no local user can put a record in it.
            "forgeable": False,
            "warnings": d["warnings"],  # gaps, copytruncate (docs/rotation.md)
        }

    def metrics(self) -> list[Sample]:
        return self.tailer.metrics()

    def healthy(self) -> bool:
        if self._task is not None and self._task.done():
            return False
        return self.tailer.healthy()
