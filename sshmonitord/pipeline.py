"""The handling stage between sources and the store.

Sources put batches of :class:`Line` (and :class:`Retired` markers) on one bounded queue; a
single consumer handles them in order and, in **one SQLite transaction per batch**, writes the
batch's results together with the positions after it. A crash therefore loses nothing that
was not committed and repeats nothing that was: on restart the sources resume exactly at the
committed positions.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import log
from .detect.engine import Engine, save_history
from .events import Event, FilePosition, Finding, JournalPosition, Kind, Line, Retired
from .parse import Parser
from .parse.prefix import load_zone
from .respond.bans import BanManager, BanRecord
from .store import INSERT_EVENT, INSERT_FINDING, Store, event_row, finding_row

if TYPE_CHECKING:
    from .sessions import SessionTracker

QUEUE_BATCHES = 64  # bounded: a stuck consumer pushes back on the sources, never grows memory
MAX_BATCH_LINES = 5000


class Pipeline:
    """Consumes source batches; commits results and positions atomically."""

    name = "pipeline"

    def __init__(
        self,
        store: Store,
        parser: Parser | None = None,
        engine: Engine | None = None,
        bans: BanManager | None = None,
        on_events: Callable[[list[Event]], None] | None = None,
        on_findings: Callable[[list[Finding]], Any] | None = None,
        trace: bool = False,
        maxsize: int = QUEUE_BATCHES,
        sessions: SessionTracker | None = None,
    ) -> None:
        self.store = store
        # The audit trail: joins events into sessions inside the batch's transaction.
        self.sessions = sessions
        self.parser = parser or Parser()
        self.engine = engine
        self.bans = bans
        self.on_events = on_events
        self.on_findings = on_findings
        self.findings = 0
        self.engine_errors = 0
        self.trace = trace
        self.queue: asyncio.Queue[list[Line | Retired]] = asyncio.Queue(maxsize)
        self._task: asyncio.Task[None] | None = None
        self.lines = 0
        self.events = 0
        self.batches = 0
        self.commit_failures = 0
        self.last_progress = time.monotonic()
        self.log = log.get("pipeline")

    async def emit(self, batch: list[Line | Retired]) -> None:
        """Called by sources; waits while the queue is full (back-pressure)."""
        if batch:
            await self.queue.put(batch)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pipeline")

    async def _run(self) -> None:
        while True:
            first = await self.queue.get()
            items = list(first)
            taken = 1
            while len(items) < MAX_BATCH_LINES and not self.queue.empty():
                items.extend(self.queue.get_nowait())
                taken += 1
            await self._handle(items)
            for _ in range(taken):
                self.queue.task_done()
            self.last_progress = time.monotonic()

    async def _handle(self, items: list[Line | Retired]) -> None:
        files: dict[tuple[str, int, int], FilePosition] = {}
        retired: list[tuple[str, int, int]] = []
        cursors: dict[str, str] = {}
        trace_rows: list[tuple[str, str]] = []
        events: list[Event] = []
        # What the session tracker sees: the events plus the few ignored lines it joins on.
        tracked: list[Event] = []
        sessions = self.sessions
        parse = self.parser.parse_line
        # Classic syslog stamps carry no year: judge them against the wall clock now.
        self.parser.time.set_reference(datetime.now(UTC))
        n = 0
        for item in items:
            if isinstance(item, Retired):
                key = (item.path, item.dev, item.inode)
                files.pop(key, None)
                retired.append(key)
                continue
            n += 1
            pos = item.position
            if isinstance(pos, FilePosition):
                files[(pos.path, pos.dev, pos.inode)] = pos
            elif isinstance(pos, JournalPosition):
                cursors[item.source] = pos.cursor
            if self.trace:
                trace_rows.append((item.source, item.text))
            ev = parse(item)  # never raises: the parser counts its own failures
            if ev is not None and ev.kind is not Kind.IGNORED:
                events.append(ev)
                if sessions is not None:
                    tracked.append(ev)
            elif ev is not None and sessions is not None and sessions.wants(ev):
                tracked.append(ev)
        rows = [event_row(ev) for ev in events]
        findings = self._detect(events)
        now = time.time()
        planned: list[BanRecord] = []

        def commit(conn: Any) -> None:
            planned.clear()
            with self.store.transaction():
                if rows:
                    conn.executemany(INSERT_EVENT, rows)
                    save_history(conn, events, self.engine)
                if findings:
                    conn.executemany(INSERT_FINDING, [finding_row(f, now) for f in findings])
                    if self.bans is not None:
                        planned.extend(self.bans.plan(conn, findings, now))
                if trace_rows:
                    conn.executemany(
                        "INSERT INTO line_trace(source, text) VALUES (?, ?)", trace_rows
                    )
                if sessions is not None and tracked:
                    sessions.apply(conn, tracked)
                self.store.save_positions(files.values(), retired, cursors)

        delay = 0.5
        while True:
            try:
                await self.store.run(commit)
                break
            except Exception as exc:
                # Disk full, I/O error: keep the batch and retry; sources wait behind us and
                # the watchdog notices if this never clears.
                self.commit_failures += 1
                if sessions is not None:
                    sessions.invalidate()  # rolled back: rebuild its index from the store
                self.log.error("cannot commit batch; retrying", error=str(exc), in_seconds=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)
        self.lines += n
        self.batches += 1
        self.events += len(events)
        if self.on_events is not None and events:
            self.on_events(events)
        if planned and self.bans is not None:
            await self.bans.enforce(planned)
        if findings:
            self.findings += len(findings)
            if self.on_findings is not None:
                await self.on_findings(findings)

    def _detect(self, events: list[Event]) -> list[Finding]:
        if self.engine is None:
            return []
        out: list[Finding] = []
        for ev in events:
            try:
                out.extend(self.engine.feed(ev))
            except Exception:
                # A rule bug must not stop the stream: count it, log the event, go on.
                self.engine_errors += 1
                self.log.exception("detection failed on an event", raw=ev.raw[:300])
        return out

    async def drain(self, timeout: float) -> bool:
        """Wait until every queued batch is handled; False on timeout."""
        try:
            await asyncio.wait_for(self.queue.join(), timeout)
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        if not await self.drain(5):
            self.log.warning(
                "stopping with unhandled lines queued; they will be re-read",
                batches=self.queue.qsize(),
            )
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def apply_config(self, cfg: Any) -> None:
        self.parser.time.set_zone(load_zone(cfg.sources.timezone))
        if self.engine is not None:
            self.engine.configure(cfg.detection)

    def describe(self) -> dict[str, Any]:
        ps = self.parser.stats
        return {
            "name": "pipeline",
            "summary": f"{self.lines} lines, {self.events} events",
            "stats": {
                "lines": self.lines,
                "events": self.events,
                "batches": self.batches,
                "queued_batches": self.queue.qsize(),
                "findings": self.findings,
                "engine_errors": self.engine_errors,
                "commit_failures": self.commit_failures,
                "other_programs": ps.other_programs,
                "malformed": ps.malformed,
                "unrecognized": ps.kinds.get(Kind.UNRECOGNIZED, 0),
                "parser_errors": ps.errors,
            },
            "unrecognized_samples": ps.unrecognized_samples[-5:],
        }

    def healthy(self) -> bool:
        if self._task is not None and self._task.done():
            return False
        # Work is waiting but nothing moved for a long time: stuck.
        return self.queue.empty() or time.monotonic() - self.last_progress < 60
