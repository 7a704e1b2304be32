"""The handling stage between sources and the store.

Sources put batches of :class:`Line` (and :class:`Retired` markers) on one queue, bounded in
batches and in lines; a single consumer handles them in order: parse, detect, **act**
(firewall bans, alerts), then, in **one SQLite transaction per batch**, store the batch's
results together with the positions after it. A crash therefore loses nothing that was not
stored and repeats nothing that was: on restart the sources resume exactly at the stored
positions. While a backlog is queued (start-up, a burst) consecutive batches share one
transaction, up to ``GROUP_COMMIT_LINES``: the same rows and positions, written in order, with
far fewer pages rewritten per line; once the queue is empty every batch is stored as soon as
it is handled. In a backlog the next batches are handled while the store thread writes the
last group: one transaction in flight at most, collected before the next begins
(``_store_pending``).

Acting comes before storing so that protection fails closed: when the store cannot write
(disk full, another process holding the lock, I/O errors) bans are still placed and alerts
still queued. The batches not yet stored are kept in memory, in order, and stored as soon as
the store takes them, without going through detection again. They are bounded: at
``MAX_UNSTORED_LINES`` the consumer stops taking batches until the store recovers, the
queue fills and the sources wait (back-pressure, never a drop), and since positions only
advance with stored batches, a restart in between re-reads exactly what was not stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import log
from .detect.engine import Engine, logins
from .events import Event, FilePosition, Finding, JournalPosition, Kind, Line, Retired
from .measure import Histogram, Sample, sample
from .parse import Parser
from .parse.prefix import load_zone
from .respond.bans import BanManager, BanRecord
from .store import CACHE_HOLD, Store, event_row, is_transient
from .store import history as history_store

if TYPE_CHECKING:
    from .audit import SessionTracker

QUEUE_BATCHES = 64  # bounded: a stuck consumer pushes back on the sources, never grows memory
MAX_BATCH_LINES = 5000
# Lines queued at most (a source waits in emit() above it): batches alone do not bound the
# memory, since a backlog's hand-overs carry 5,000-7,000 lines each and 64 of them held
# ~440k Lines (bench/tail.py on 1M lines; ~100 MB). Room for two or three hand-overs is all
# the consumer needs to find the next batch waiting when it takes one.
QUEUE_LINES = 4 * MAX_BATCH_LINES
STORE_RETRY_MIN, STORE_RETRY_MAX = 0.5, 30.0  # seconds between attempts while it fails
# While more batches wait in the queue (a backlog: start-up, a burst), handled batches are
# stored together, up to this many lines in one transaction: each commit rewrites every page
# the events indexes' random inserts touched (events(ip, ts) above all), so fewer, bigger
# commits write far less per line. Acting never waits for it; with the queue empty every
# batch is stored at once, as before.
GROUP_COMMIT_LINES = 15_000
# Lines handled (acted on) but not yet stored, at most; then the sources wait for the store.
# Room for one group in flight and the next one formed behind it: with 20,000, a 1M-line
# backlog's loop could run only 5,000 lines ahead of a 15,000-line commit and waited 7.4 s
# for the store (bench/tail.py throughput, 1M lines: (f) 43.3k -> 47.1k lines/s, (g) 32.8k
# -> 37.5k). Each held line costs ~0.7 KB while it waits.
MAX_UNSTORED_LINES = 2 * GROUP_COMMIT_LINES + MAX_BATCH_LINES  # 35,000
# While a transaction is in flight and the loop's thread handles the next batches, each GIL
# hand-back the store thread waits for (after every SQLite statement) lasts up to the
# interpreter's switch interval: 5 ms by default, 0.5 ms meanwhile. Restored when the
# transaction is collected; a live stream (nothing in flight) never changes it.
OVERLAP_SWITCH_INTERVAL = 0.0005


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


@dataclass
class Handled:
    """One batch, parsed, detected and acted on: what its transaction will store."""

    lines: int
    rows: list[tuple[Any, ...]]
    events: list[Event]
    findings: list[Finding]
    bans: list[BanRecord]
    tracked: list[Event]
    trace: list[tuple[str, str]]
    files: dict[tuple[str, int, int], FilePosition] = field(default_factory=dict)
    retired: list[tuple[str, int, int]] = field(default_factory=list)
    cursors: dict[str, str] = field(default_factory=dict)
    now: float = 0.0
    # Some value in it cannot be written: store row by row, skipping the rows that fail.
    salvage: bool = False
    # A transaction of several batches failed on data: store this one in its own.
    alone: bool = False


class Pipeline:
    """Consumes source batches; acts on them at once; stores results and positions atomically."""

    name = "pipeline"
    role = "pipeline"  # what the daemon wires it as (docs/architecture.md)

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
        max_queued_lines: int = QUEUE_LINES,
        sessions: SessionTracker | None = None,
        max_unstored_lines: int = MAX_UNSTORED_LINES,
        on_found: Callable[[list[Finding]], None] | None = None,
    ) -> None:
        self.store = store
        # The audit trail: joins events into sessions inside the batch's transaction.
        self.sessions = sessions
        self.parser = parser or Parser()
        self.engine = engine
        self.bans = bans
        self.on_events = on_events
        self.on_findings = on_findings
        # Told of a batch's findings as soon as detection made them, before any ban is
        # decided: the journal then reads cause (the finding) before effect (the ban). It
        # must be quick and must not wait (it runs before the firewall is touched).
        self.on_found = on_found
        self.findings = 0
        self.engine_errors = 0
        self.trace = trace
        self.queue: asyncio.Queue[list[Line | Retired]] = asyncio.Queue(maxsize)
        self.queued_lines = 0  # items in the queue's batches
        self.max_queued_lines = max_queued_lines
        self._room = asyncio.Event()  # set while queued_lines is under the bound
        self._room.set()
        self._task: asyncio.Task[None] | None = None
        self.lines = 0
        self.events = 0
        self.batches = 0
        self.commit_failures = 0
        self.unstorable_batches = 0  # data no retry could store (see _give_up_rows)
        self.unstorable_rows = 0
        self.audit_only = 0  # lines trusted for their user's sessions only
        self.last_progress = time.monotonic()
        # Handled but not yet stored, oldest first (the store refused the write).
        self.unstored: deque[Handled] = deque()
        self.unstored_lines = 0
        self.max_unstored_lines = max_unstored_lines
        self.store_error: str | None = None
        self.paused_for_store = False
        self._retry_at = 0.0
        self._retry_delay = STORE_RETRY_MIN
        # The transaction being written while the next batches are handled (a backlog):
        # its future (the seconds it took) and its batches (still at the head of ``unstored``).
        self._inflight: tuple[asyncio.Future[float], list[Handled]] | None = None
        self._switch: float | None = None  # the interpreter's switch interval to restore
        # When each queued batch was handed over (monotonic), in queue order: how long its
        # lines waited for their events.
        self._emitted: deque[float] = deque()
        self.line_to_event = Histogram()
        self.store_write = Histogram()
        self.log = log.get("pipeline")

    async def emit(self, batch: list[Line | Retired]) -> None:
        """Called by sources; waits while the queue is full (back-pressure): QUEUE_BATCHES
        batches, or QUEUE_LINES lines (a batch is let in below it, whatever its size)."""
        if batch:
            while self.queued_lines >= self.max_queued_lines:
                self._room.clear()
                await self._room.wait()
            await self.queue.put(batch)
            self.queued_lines += len(batch)
            self._emitted.append(time.monotonic())

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pipeline")

    async def _run(self) -> None:
        while True:
            wait = self._idle_wait()
            if wait is not None:
                try:
                    first = await asyncio.wait_for(self.queue.get(), wait)
                except TimeoutError:
                    await self._on_idle()
                    continue
            else:
                first = await self.queue.get()
            items = list(first)
            sizes = [len(first)]
            while len(items) < MAX_BATCH_LINES and not self.queue.empty():
                nxt = self.queue.get_nowait()
                items.extend(nxt)
                sizes.append(len(nxt))
            taken = len(sizes)
            self.queued_lines -= len(items)
            if self.queued_lines < self.max_queued_lines:
                self._room.set()
            emitted = [self._emitted.popleft() for _ in range(min(taken, len(self._emitted)))]
            await self._handle(items, emitted, sizes)
            for _ in range(taken):
                self.queue.task_done()
            self.last_progress = time.monotonic()

    def _idle_wait(self) -> float | None:
        """How long to wait for input before :meth:`_on_idle` has something to do; None:
        nothing to do without input."""
        if self.unstored and (self.store_error is not None or self.queue.empty()):
            # Something waits to be stored: come back to it even if no line arrives.
            return max(0.0, self._retry_at - time.monotonic())
        held = self.store.backlog_at
        if held is not None and not self.unstored and self.queue.empty():
            return max(0.0, held + CACHE_HOLD - time.monotonic())
        return None

    async def _on_idle(self) -> None:
        if self.unstored:
            await self._store_pending()
            return
        try:
            await self.store.run(self.store.release_cache)
        except Exception as exc:  # memory stays held; storing goes on as before
            self.store.backlog_at = None
            self.log.warning("cannot release the store's page cache", error=str(exc))

    async def _handle(
        self,
        items: list[Line | Retired],
        emitted: list[float] | None = None,
        sizes: list[int] | None = None,
    ) -> None:
        batch = self._process(items)
        if emitted and sizes:
            done = time.monotonic()
            for at, n in zip(emitted, sizes, strict=False):
                self.line_to_event.observe(done - at, n)
        # Act first: the firewall and the operator never wait for the store (fail closed).
        if batch.bans and self.bans is not None:
            await self.bans.enforce(batch.bans)
        self.lines += batch.lines
        self.batches += 1
        self.events += len(batch.events)
        if self.on_events is not None and batch.events:
            self.on_events(batch.events)
        if batch.findings:
            self.findings += len(batch.findings)
            if self.on_findings is not None:
                await self.on_findings(batch.findings)
        self.unstored.append(batch)
        self.unstored_lines += batch.lines
        if self._defer_store():
            # Stored with the batches already queued behind it, in one transaction. Nothing
            # here waited: let the loop serve everything else before the next batch is handled
            # (a non-empty queue's get() does not yield either).
            await asyncio.sleep(0)
            return
        await self._store_pending(overlap=not self.queue.empty())

    def _defer_store(self) -> bool:
        """More input is queued and the store is healthy: hold this batch for the next
        transaction, within GROUP_COMMIT_LINES and with room for one more batch below
        ``max_unstored_lines`` (the bound that pauses the sources only while the store fails)."""
        return (
            self.store_error is None
            and not self.queue.empty()
            and self.unstored_lines - self._inflight_lines < GROUP_COMMIT_LINES
            and self.unstored_lines + MAX_BATCH_LINES <= self.max_unstored_lines
        )

    def _process(self, items: list[Line | Retired]) -> Handled:
        """Parse and detect (no I/O but logging); decide the bans the findings call for."""
        files: dict[tuple[str, int, int], FilePosition] = {}
        retired: list[tuple[str, int, int]] = []
        cursors: dict[str, str] = {}
        trace_rows: list[tuple[str, str]] = []
        events: list[Event] = []
        # What the session tracker sees: the events plus the few ignored lines it joins on.
        tracked: list[Event] = []
        sessions = self.sessions
        parse = self.parser.parse_line
        # Classic syslog stamps carry no year: judge them against the wall clock now. No
        # genuine line was written later than now: detection's clean-ups stop there.
        wall = datetime.now(UTC)
        self.parser.time.set_reference(wall)
        if self.engine is not None:
            self.engine.set_clock(wall.timestamp())
        n = 0
        for item in items:
            if isinstance(item, Retired):
                key = (item.path, item.dev, item.inode)
                files.pop(key, None)
                retired.append(key)
                continue
            n += 1
            pos = item.position  # None on most lines of a file read (FileFollower._split)
            if pos is None:
                pass
            elif isinstance(pos, FilePosition):
                key = (pos.path, pos.dev, pos.inode)
                files[key] = pos
                if key in retired:
                    retired.remove(key)  # a new file on that inode, after the old one ended
            elif isinstance(pos, JournalPosition):
                cursors[item.source] = pos.cursor
            if self.trace:
                trace_rows.append((item.source, item.text))
            ev = parse(item)  # never raises: the parser counts its own failures
            if ev is None:
                continue
            if item.audit_user is not None:
                # Proven only to come from that user's own session process: it may join
                # that user's sessions, never count as an event or toward a finding.
                self.audit_only += 1
                if (
                    sessions is not None
                    and ev.user in (None, item.audit_user)
                    and (ev.kind is not Kind.IGNORED or sessions.wants(ev))
                ):
                    tracked.append(ev)
                continue
            if ev.kind is not Kind.IGNORED:
                events.append(ev)
                if sessions is not None:
                    tracked.append(ev)
            elif sessions is not None and sessions.wants(ev):
                tracked.append(ev)
        findings = self._detect(events)
        if findings and self.on_found is not None:
            try:
                self.on_found(findings)
            except Exception:  # a reporting bug must never cost a ban
                self.log.exception("reporting findings failed")
        now = time.time()
        bans = self.bans.decide(findings, now) if self.bans is not None and findings else []
        attempts = self.engine.attempts if self.engine is not None else None
        if attempts is None:
            rows = [event_row(ev) for ev in events]
        else:  # fleet mode: each row says how many attempts detection counted for it
            rows = [(*event_row(ev), attempts.get(id(ev))) for ev in events]
            attempts.clear()
        return Handled(
            n,
            rows,
            events,
            findings,
            bans,
            tracked,
            trace_rows,
            files,
            retired,
            cursors,
            now,
        )

    def _timed_commit(self, conn: Any, group: list[Handled]) -> float:
        """:meth:`_commit_group`, and the seconds it took (the wait to collect it is not the
        store's: the loop was handling the next batches)."""
        began = time.monotonic()
        self._commit_group(conn, group)
        return time.monotonic() - began

    def _commit_group(self, conn: Any, group: list[Handled]) -> None:
        """One transaction for consecutive batches (store thread), written in order as their
        own transactions would have been: the same rows, the positions after the last."""
        self.store.cache_for(sum(b.lines for b in group))
        with self.store.transaction():
            for b in group:
                self._write(conn, b)

    def _write(self, conn: Any, b: Handled) -> None:
        """A batch's results and the positions after it, inside the caller's transaction."""
        store, skip_bad = self.store, b.salvage
        if b.rows:
            self._skipped(store.add_events(b.rows, skip_bad))
            history_store.save(conn, logins(b.events, self.engine))
        if b.findings:
            self._skipped(store.add_findings(b.findings, b.now, skip_bad))
        if b.bans and self.bans is not None:
            self.bans.record(conn, b.bans)
        if b.trace:
            self._skipped(store.add_line_trace(b.trace, skip_bad))
        if self.sessions is not None and b.tracked:
            self.sessions.apply(conn, b.tracked)
        store.save_positions(b.files.values(), b.retired, b.cursors)

    def _skipped(self, errors: list[str]) -> None:
        """Rows of a salvaged batch that no retry could store (Store.add_events)."""
        for error in errors:
            self.unstorable_rows += 1
            self.log.error("a row cannot be stored; skipping it", error=error)

    async def _store_pending(self, overlap: bool = False) -> None:
        """Store the handled batches in order. While the store refuses, keep them (bounded)
        and return so the next batch is acted on; at the bound, wait here for the store.

        ``overlap`` (a backlog is queued): start the next transaction and return at once, so
        the next batches are parsed and detected while the store thread writes this one; it
        is collected (awaited, and its batches popped) before any other transaction starts,
        so transactions stay one at a time and in order."""
        while self.unstored:
            if self._inflight is not None:
                await self._collect()
                continue
            full = self.unstored_lines >= self.max_unstored_lines
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                if not full:
                    return
                if not self.paused_for_store:
                    self.paused_for_store = True
                    self.log.error(
                        "store still failing and unstored lines at their bound: "
                        "pausing the sources until it recovers",
                        unstored_lines=self.unstored_lines,
                        error=self.store_error,
                    )
                await asyncio.sleep(wait)
                self.last_progress = time.monotonic()
            group = self._next_group()
            commit = asyncio.ensure_future(
                self.store.run(functools.partial(self._timed_commit, group=group))
            )
            # Its outcome is read by _collect; if stop() cancels the wait, read it here so a
            # failure after shutdown is not reported as an exception nobody retrieved.
            commit.add_done_callback(_retrieve)
            self._inflight = (commit, group)
            if overlap and self.store_error is None:
                if self._switch is None:
                    self._switch = sys.getswitchinterval()
                    sys.setswitchinterval(OVERLAP_SWITCH_INTERVAL)
                await asyncio.sleep(0)  # let it reach the store thread before the loop gets busy
                return

    async def _collect(self) -> None:
        """Wait for the transaction in flight; pop its batches, or keep them after a failure
        (see _store_pending)."""
        assert self._inflight is not None
        commit, group = self._inflight
        failure: Exception | None = None
        try:
            took = await asyncio.shield(commit)
        except Exception as exc:
            failure = exc
        self._inflight = None
        self._restore_switch()
        if failure is not None:
            self._failed(group, failure)
            return
        self.store_write.observe(took)
        for b in group:
            self.unstored.popleft()
            self.unstored_lines -= b.lines
            if b.bans and self.bans is not None:
                self.bans.committed(b.bans)
        if self.store_error is not None and not self.unstored:
            self.log.warning(
                "store writable again; every held line is stored",
                failed_attempts=self.commit_failures,
            )
            self.store_error = None
            self.paused_for_store = False
            self._retry_delay = STORE_RETRY_MIN
            self._retry_at = 0.0

    @property
    def _inflight_lines(self) -> int:
        return 0 if self._inflight is None else sum(b.lines for b in self._inflight[1])

    def _restore_switch(self) -> None:
        if self._switch is not None:
            sys.setswitchinterval(self._switch)
            self._switch = None

    def _failed(self, group: list[Handled], exc: Exception) -> None:
        """A transaction failed: find the bad batch, give up what no retry can store, or
        keep everything and retry later (disk full, locked, I/O error)."""
        if not is_transient(exc) and len(group) > 1:
            # Which batch holds the bad data? Store each on its own to find out.
            if self.sessions is not None:
                self.sessions.invalidate()
            for g in group:
                g.alone = True
            return
        if not is_transient(exc):
            # This batch's data can never be written (a value no column takes):
            # retrying would stall every batch behind it. Keep what matters most.
            self._give_up_rows(group[0], exc)
            return
        self.commit_failures += 1
        if self.sessions is not None:
            self.sessions.invalidate()  # rolled back: rebuild its index from the store
        if self.store_error is None:
            self.log.error(
                "cannot store handled lines; acting on them anyway and retrying",
                error=str(exc),
                unstored_lines=self.unstored_lines,
            )
        self.store_error = str(exc)
        self._retry_at = time.monotonic() + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, STORE_RETRY_MAX)

    def _next_group(self) -> list[Handled]:
        """The oldest unstored batches that go in the next transaction: up to
        GROUP_COMMIT_LINES lines; a batch being salvaged or isolated goes alone."""
        first = self.unstored[0]
        group = [first]
        if first.salvage or first.alone:
            return group
        lines = first.lines
        for b in itertools.islice(self.unstored, 1, None):
            if b.salvage or b.alone or lines + b.lines > GROUP_COMMIT_LINES:
                break
            group.append(b)
            lines += b.lines
        return group

    def _give_up_rows(self, b: Handled, exc: BaseException) -> None:
        """A batch failed in a way no retry fixes. Next try: row by row, skipping the rows
        that fail; then positions and bans only (its events were acted on already); then
        drop it (its lines are re-read at the next start)."""
        if self.sessions is not None:
            self.sessions.invalidate()
        if not b.salvage:
            b.salvage = True
            return
        self.unstorable_batches += 1
        if not (b.rows or b.findings or b.tracked or b.trace):
            self.unstored.popleft()
            self.unstored_lines -= b.lines
            self.log.error("cannot store a batch's positions; dropping it", error=str(exc))
            return
        self.log.error(
            "a batch's events cannot be stored; storing its positions and bans only",
            error=str(exc),
            lines=b.lines,
            events=len(b.rows),
        )
        b.rows, b.events, b.findings, b.tracked, b.trace = [], [], [], [], []

    def _detect(self, events: list[Event]) -> list[Finding]:
        if self.engine is None:
            return []
        out: list[Finding] = []
        feed = self.engine.feed
        for ev in events:
            try:
                found = feed(ev)
                if found:
                    out.extend(found)
            except Exception:
                # A rule bug must not stop the stream: count it, log the event, go on.
                self.engine_errors += 1
                self.log.exception("detection failed on an event", raw=ev.raw[:300])
        return out

    async def drain(self, timeout: float) -> bool:
        """Wait until every queued batch is handled and stored; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self.queue.join()
                while self.unstored:
                    await asyncio.sleep(0.05)
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        if not await self.drain(5):
            self.log.warning(
                "stopping with lines not stored; they will be re-read at the next start",
                batches=self.queue.qsize() + len(self.unstored),
                unstored_lines=self.unstored_lines,
            )
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._restore_switch()  # cancelled while a transaction was in flight

    def apply_config(self, cfg: Any) -> None:
        self.parser.time.set_zone(load_zone(cfg.sources.timezone))
        if self.engine is not None:
            self.engine.configure(cfg.detection)

    def metrics(self) -> list[Sample]:
        ps = self.parser.stats
        return [
            *(
                sample("sshmonitor_events_total", n, kind=str(k))
                for k, n in sorted(ps.kinds.items())
            ),
            *(
                sample("sshmonitor_unrecognized_lines_total", n, program=prog)
                for prog, n in sorted(ps.unrecognized_programs.items())
            ),
            sample("sshmonitor_malformed_lines_total", ps.malformed),
            sample("sshmonitor_store_write_seconds", self.store_write),
            sample("sshmonitor_line_to_event_seconds", self.line_to_event),
        ]

    def describe(self) -> dict[str, Any]:
        ps = self.parser.stats
        out: dict[str, Any] = {
            "name": "pipeline",
            "summary": f"{self.lines} lines, {self.events} events",
            "stats": {
                "lines": self.lines,
                "events": self.events,
                "batches": self.batches,
                "queued_batches": self.queue.qsize(),
                "queued_lines": self.queued_lines,
                "findings": self.findings,
                "engine_errors": self.engine_errors,
                "commit_failures": self.commit_failures,
                "unstorable_batches": self.unstorable_batches,
                "unstorable_rows": self.unstorable_rows,
                "unstored_lines": self.unstored_lines,
                "audit_only_lines": self.audit_only,
                "other_programs": ps.other_programs,
                "malformed": ps.malformed,
                "unrecognized": ps.kinds.get(Kind.UNRECOGNIZED, 0),
                "parser_errors": ps.errors,
            },
            "unrecognized_samples": ps.unrecognized_samples[-5:],
        }
        if self.store_error is not None:
            state = (
                "sources paused until it recovers"
                if self.paused_for_store
                else "acting on them, storing when it can"
            )
            out["warnings"] = [
                f"cannot write the store ({self.store_error}): {self.unstored_lines} lines "
                f"held in memory, {state}"
            ]
        return out

    def healthy(self) -> bool:
        if self._task is not None and self._task.done():
            return False
        if self.store.corruption_seen:
            return False  # a restart moves the damaged database aside
        # Waiting on a full or locked store is not stuck (a restart would not help); work
        # waiting while nothing moved for a long time is.
        return (
            self.queue.empty() or bool(self.unstored) or time.monotonic() - self.last_progress < 60
        )
