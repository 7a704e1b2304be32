"""The alert queue: findings in, messages out — once, soon, and never lost.

* **Throttle**: the same (rule, subject) within ``notify.throttle`` is folded into the next
  alert as "N more since …" instead of being sent again. An alert more severe than the last
  one sent for its key always goes out (a critical is never held back by a warning's throttle).
* **Spool**: an alert is written to the store (one row per channel that accepts it) before
  any delivery is tried, and deleted only when that channel accepted it. A crash or restart
  delivers what is pending.
* **Digest**: rows wait up to ``notify.digest_window`` so alerts raised together go out as
  one message per channel, worst first. Critical alerts do not wait.
* **Retry**: a transient failure (server down, 429, 5xx, timeout) reschedules the message's
  rows with exponential backoff and jitter (``retry_initial`` … ``retry_max``, at least the
  server's Retry-After); a permanent one (bad credentials, 4xx) drops them with an error; rows
  older than ``max_age`` are dropped with an error. Both are counted.
* **Prepared messages**: :meth:`AlertQueue.spool_message` spools a message rendered elsewhere
  (the daily report) for the named channels. It is sent as it is, never digested, capped or
  throttled, with the same retries, backoff, ``max_age`` and restart durability as an alert.
* **Cap**: at most ``hourly_cap`` messages per channel per hour; the excess is summarised as
  "N more suppressed" in the next message (critical alerts are never suppressed).
* **Bounded, never dropped**: findings enter through a bounded in-memory queue. Spooling is
  retried until the store takes it (the throttle moves only with that write); while it
  cannot, a full queue makes ``submit`` wait, which holds the pipeline and so the sources
  (back-pressure). A dead mail server never slows parsing, detection or bans: the spool is
  on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import sqlite3
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .. import log
from ..aio import bounded, wait_event
from ..config import NotifyConfig
from ..events import Finding
from ..measure import Sample, sample
from ..store import spool
from ..store.spool import SpoolRow, ThrottleRow
from .alert import Alert, DeliveryError, Message, severity_rank
from .logchannel import LogChannel, log_alert
from .render import render

INBOX = 10_000  # findings waiting to be spooled, at most (then submit() waits)
SPOOL_RETRY_MIN, SPOOL_RETRY_MAX = 0.2, 5.0  # seconds between attempts to spool a batch
SEND_TIMEOUT = 120.0  # a channel call that hangs longer than this is a transient failure
BATCH_ROWS = 200  # alerts per message at most (more wait for the next one)
IDLE_POLL = 60.0  # seconds at most between looks at the spool
OUTCOMES = ("sent", "failed", "dropped", "dropped_by_cap")  # per channel; "folded": channel all


def message_doc(message: Message) -> str:
    """A prepared message as a spool row holds it (JSON)."""
    return json.dumps(
        {
            "id": message.id,
            "subject": message.subject,
            "text": message.text,
            "html": message.html,
            "host": message.host,
        },
        ensure_ascii=False,
    )


def message_from_doc(doc: str, host: str, batch: str | None = None) -> Message:
    """The message a spool row of kind ``message`` holds, with the id it was spooled with."""
    d = json.loads(doc)
    return Message(
        subject=str(d.get("subject") or ""),
        text=str(d.get("text") or ""),
        html=str(d.get("html") or ""),
        alerts=[],
        suppressed=0,
        host=str(d.get("host") or host),
        id=str(d.get("id") or batch or ""),
    )


@dataclass
class Throttle:
    last_sent: float
    severity: int
    folded: int = 0
    folded_since: float | None = None


class AlertQueue:
    """Owns the spool; one flusher task delivers to every channel."""

    name = "alerts"
    role = "notify"  # what the daemon wires it as (docs/architecture.md)

    def __init__(
        self,
        store: Any,
        cfg: NotifyConfig,
        channels: list[Any],
        host: str,
        dry_run: bool = False,
        journal: LogChannel | None = None,
    ) -> None:
        self.store = store
        # The journal is always a channel: every alert is logged as it comes in, whatever
        # throttling, the cap or the other channels do; these are its filters.
        self.journal = journal if journal is not None else LogChannel(name="journal")
        self.cfg = cfg
        self.channels = {c.name: c for c in channels}
        self.host = host
        self.dry_run = dry_run
        self.inbox: asyncio.Queue[Alert] = asyncio.Queue(INBOX)
        self.throttle: dict[str, Throttle] = {}
        self.sent_times: dict[str, deque[float]] = {}
        self.suppressed: dict[str, int] = {}
        self.stats = {
            "alerts": 0,
            "folded": 0,
            "spooled": 0,
            "messages_sent": 0,
            "delivery_failures": 0,
            "dropped_permanent": 0,
            "dropped_too_old": 0,
            "spool_failures": 0,
            "suppressed_by_cap": 0,
            "messages_spooled": 0,
        }
        # Alerts by (channel, outcome): sent, failed (a delivery attempt), dropped (given up:
        # refused for good or too old), dropped_by_cap; folded alerts are counted once, under
        # channel "all" (folding happens before any channel is chosen).
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self._depth: tuple[int, float | None] = (0, None)
        self.last_error: dict[str, str] = {}
        self._in_hand: list[Alert] = []  # the batch being spooled (retried until it is)
        self._spool_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.log = log.get("alerts")

    # ------------------------------------------------------------------ intake

    async def submit(
        self, findings: list[Finding], bans: dict[str, dict[str, Any]] | None = None
    ) -> None:
        """Queue findings as alerts. Waits while the inbox is full, which happens only while
        the store refuses writes: the pipeline then slows its sources (back-pressure) rather
        than anything being dropped. A slow channel never fills it (the spool is on disk)."""
        for f in findings:
            ban = (bans or {}).get(f.ban_net or "")
            alert = Alert.from_finding(f, self.host, ban)
            if self.journal.accepts(alert):
                log_alert(alert, self.log)
            await self.inbox.put(alert)

    async def start(self) -> None:
        await self.store.run(self._load)
        self._tasks = [
            asyncio.create_task(self._intake(), name="alerts-intake"),
            asyncio.create_task(self._flusher(), name="alerts-flush"),
        ]

    def _load(self, conn: sqlite3.Connection) -> None:
        for key, last, sev, folded, since in spool.load_throttle(conn):
            self.throttle[key] = Throttle(last, sev, folded, since)
        pending = spool.count(conn)
        if pending:
            # A restart is a fresh chance (the channel may have been fixed with it): retry
            # what is pending now rather than after its backoff.
            try:
                with self.store.transaction():
                    spool.retry_now(conn, time.time())
            except sqlite3.Error as exc:
                # A full disk: the rows are retried at their own time instead.
                self.log.warning("cannot reschedule pending alerts", error=str(exc))
            self.log.info("pending alerts from before the restart", count=pending)

    async def stop(self) -> None:
        # Spool what is in the inbox (it is only in memory); delivery resumes after restart.
        async with self._spool_lock:
            for t in self._tasks:
                t.cancel()
            with contextlib.suppress(Exception):
                batch = list(self._in_hand)
                while not self.inbox.empty():
                    batch.append(self.inbox.get_nowait())
                if batch:
                    await self._spool(batch)
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for c in self.channels.values():
            with contextlib.suppress(Exception):
                await c.close()

    async def _intake(self) -> None:
        while True:
            batch = [await self.inbox.get()]
            while not self.inbox.empty() and len(batch) < 1000:
                batch.append(self.inbox.get_nowait())
            self._in_hand = batch
            delay = SPOOL_RETRY_MIN
            while True:
                try:
                    # stop() takes the lock too: a write in flight on the store thread
                    # finishes before stop() looks at what is left, so nothing is spooled
                    # twice.
                    async with self._spool_lock:
                        await self._spool(batch)
                        self._in_hand = []
                    break
                except Exception as exc:
                    # Locked by another process, disk full, I/O error: an alert is never
                    # given up; nothing (throttle included) moved, so the retry is exact.
                    self.stats["spool_failures"] += 1
                    self.last_error["spool"] = str(exc)
                    self.log.error(
                        "cannot spool alerts; retrying",
                        count=len(batch),
                        error=str(exc),
                        in_seconds=delay,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, SPOOL_RETRY_MAX)
            self.last_error.pop("spool", None)
            self._wake.set()

    async def _spool(self, alerts: list[Alert]) -> None:
        """Fold or spool ``alerts`` in one transaction. The in-memory throttle changes only
        after that transaction commits: a failed write leaves no trace to be retried over."""
        now = time.time()
        rows: list[tuple[str, str, float, float, int]] = []
        changed: dict[str, Throttle] = {}
        folded = 0
        for a in alerts:
            key = f"{a.rule}\x00{a.subject}"
            prev = changed.get(key) or self.throttle.get(key)
            if (
                prev is not None
                and now - prev.last_sent < self.cfg.throttle
                and a.rank <= prev.severity
            ):
                changed[key] = Throttle(
                    prev.last_sent,
                    prev.severity,
                    prev.folded + a.count,
                    prev.folded_since if prev.folded_since is not None else a.first_seen,
                )
                folded += 1
                continue
            if prev is not None and prev.folded:
                a = dataclasses.replace(
                    a, count=a.count + prev.folded, folded_since=prev.folded_since
                )
            changed[key] = Throttle(now, a.rank)
            if self.dry_run:
                continue
            due = now if a.rank >= severity_rank("critical") else now + self.cfg.digest_window
            doc = json.dumps(a.to_dict(), ensure_ascii=False)
            for name, ch in self.channels.items():
                if ch.accepts(a):
                    rows.append((name, doc, now, due, a.rank))

        def go(conn: sqlite3.Connection) -> None:
            with self.store.transaction():
                spool.add_alerts(conn, rows)
                spool.save_throttle(
                    conn,
                    [
                        ThrottleRow(k, t.last_sent, t.severity, t.folded, t.folded_since)
                        for k, t in changed.items()
                    ],
                )

        await self.store.run(go)
        self.throttle.update(changed)
        if len(self.throttle) > 100_000:
            cutoff = now - self.cfg.throttle
            self.throttle = {k: v for k, v in self.throttle.items() if v.last_sent >= cutoff}
        self.stats["alerts"] += len(alerts)
        self.stats["folded"] += folded
        if folded:
            self.outcomes["all", "folded"] += folded
        self.stats["spooled"] += len(rows)
        if self.dry_run:
            for a in alerts:
                self.log.warning("DRY RUN: alert not sent", rule=a.rule, subject=a.subject)

    async def spool_message(self, message: Message, channels: Iterable[str]) -> list[str]:
        """Spool a prepared ``message`` (the daily report) for each of ``channels`` that is
        configured; return their names. Written to the store before this returns: from then
        on it is retried and survives a restart like an alert. Spooling the same message
        (same id) twice for a channel sends it once."""
        names = [n for n in dict.fromkeys(channels) if n in self.channels]
        if not names:
            return []
        doc = message_doc(message)
        now = time.time()
        crit = severity_rank("critical")

        def go(conn: sqlite3.Connection) -> None:
            with self.store.transaction():
                spool.add_message(conn, names, doc, message.id, now, crit)

        await self.store.run(go)
        self.stats["messages_spooled"] += len(names)
        self._wake.set()
        return names

    # ------------------------------------------------------------------ delivery

    async def _flusher(self) -> None:
        while True:
            # Cleared before the round, not after: an alert spooled during the round sets it
            # again, and is delivered now rather than after the idle wait.
            self._wake.clear()
            try:
                wait = await self.flush_once()
            except Exception:
                self.log.exception("alert delivery round failed")
                wait = 5.0
            await wait_event(self._wake, max(0.05, wait))

    async def flush_once(self) -> float:
        """Deliver what is due on every channel; return seconds until the next due row."""
        now = time.time()
        channels = list(self.channels.items())

        def look(conn: sqlite3.Connection) -> tuple[list[list[SpoolRow]], float | None]:
            # One trip to the store thread for the whole look (a round with nothing due,
            # the usual one, costs one wake-up of each thread, not 2 + channels).
            self._expire(conn, now)
            return [self._due(conn, name, now) for name, _ch in channels], spool.next_due(conn)

        due, nxt = await self.store.run(look)
        if any(due):
            for (_name, ch), rows in zip(channels, due, strict=True):
                if rows:
                    await self._deliver(ch, rows)
            nxt = await self.store.run(spool.next_due)
        # Rows can also come from a writer that does not wake this queue (the report
        # scheduler spooling straight into the store): an empty spool is looked at again
        # within IDLE_POLL, one indexed MIN() query.
        return IDLE_POLL if nxt is None else min(IDLE_POLL, max(0.0, nxt - time.time()))

    def _expire(self, conn: sqlite3.Connection, now: float) -> None:
        old = spool.older_than(conn, now - self.cfg.max_age)
        gone = [r[0] for r in old]
        # Rows for a channel that is no longer configured can never be delivered.
        orphans = [i for i, channel in spool.channels_of_rows(conn) if channel not in self.channels]
        if not gone and not orphans:
            return
        with self.store.transaction():
            spool.delete(conn, gone + orphans)
        for _id, channel, doc, kind in old:
            self.stats["dropped_too_old"] += 1
            if kind == spool.ALERT:
                self.outcomes[channel, "dropped"] += 1
            a = json.loads(doc)
            self.log.error(
                f"{kind} dropped: undelivered for longer than notify.max_age",
                channel=channel,
                **({"rule": a.get("rule")} if kind == spool.ALERT else {"id": a.get("id")}),
                subject=a.get("subject"),
                error=self.last_error.get(channel),
            )
        if orphans:
            self.log.warning(
                "spooled alerts and messages dropped for channels no longer configured",
                count=len(orphans),
            )

    def _due(self, conn: sqlite3.Connection, channel: str, now: float) -> list[SpoolRow]:
        due, batch = spool.first_due_batch(conn, channel, now)
        if not due:
            return []
        if batch is not None:
            # Tried before (maybe delivered before a crash), or a prepared message: send
            # exactly that message again, so the receiver sees the same message id.
            return spool.batch_rows(conn, channel, batch)
        # Anything due, plus fresh rows that would otherwise wait for their own window:
        # they ride along in the same message.
        return spool.fresh_alerts(conn, channel, now, BATCH_ROWS)

    def _pin(self, conn: sqlite3.Connection, ids: list[int], batch: str) -> None:
        with self.store.transaction():
            spool.pin(conn, ids, batch)

    async def _deliver(self, ch: Any, rows: list[SpoolRow]) -> None:
        if rows[0].kind == spool.MESSAGE:
            await self._deliver_message(ch, rows)
            return
        alerts = [Alert.from_dict(json.loads(r.doc)) for r in rows]
        ids = [r[0] for r in rows]
        now = time.time()
        sent = self.sent_times.setdefault(ch.name, deque())
        while sent and sent[0] < now - 3600:
            sent.popleft()
        if len(sent) >= self.cfg.hourly_cap:
            # Over the cap: everything below critical that is due is summarised, not sent.
            crit = severity_rank("critical")
            held = await self.store.run(lambda c: self._suppress(c, ch.name, now, crit))
            if held:
                self.suppressed[ch.name] = self.suppressed.get(ch.name, 0) + held
                self.stats["suppressed_by_cap"] += held
                self.outcomes[ch.name, "dropped_by_cap"] += held
            keep = [(i, a) for i, a in zip(ids, alerts, strict=True) if a.rank >= crit]
            ids = [i for i, _a in keep]
            alerts = [a for _i, a in keep]
            if not alerts:
                return
        suppressed = self.suppressed.get(ch.name, 0)
        msg: Message = render(alerts, self.host, suppressed=suppressed, now=now)
        if any(r.batch != msg.id for r in rows if r.id in set(ids)):
            # Recorded before sending: a crash mid-send re-sends this very message.
            await self.store.run(lambda c: self._pin(c, ids, msg.id))
        answer = await self._send(ch, msg, ids, rows)
        if answer is None:
            return
        await self.store.run(lambda c: self._delete(c, ids))
        sent.append(now)
        self.suppressed[ch.name] = 0
        self.stats["messages_sent"] += 1
        self.outcomes[ch.name, "sent"] += len(alerts)
        self.last_error.pop(ch.name, None)
        self.log.info(
            "alert message delivered",
            channel=ch.name,
            alerts=len(alerts),
            subject=msg.subject,
            answer=str(answer)[:200],
        )

    async def _send(
        self, ch: Any, msg: Message, ids: list[int], rows: list[SpoolRow]
    ) -> str | None:
        """Send ``msg``; on failure reschedule or drop ``ids`` and return None."""
        try:
            return str(await bounded(ch.send(msg), SEND_TIMEOUT, name=f"send-{ch.name}"))
        except (DeliveryError, TimeoutError, OSError) as exc:
            err = (
                exc
                if isinstance(exc, DeliveryError)
                else DeliveryError(f"{type(exc).__name__}: {exc}", permanent=False)
            )
            await self._failed(ch.name, ids, rows, err)
            return None
        except Exception as exc:  # a channel bug: keep the rows, retry later
            self.log.exception("channel raised unexpectedly", channel=ch.name)
            await self._failed(ch.name, ids, rows, DeliveryError(repr(exc)))
            return None

    async def _deliver_message(self, ch: Any, rows: list[SpoolRow]) -> None:
        """A prepared message: sent as it is (every row is the same message, by its id), not
        counted against nor held by the hourly cap — it is not an alert."""
        msg = message_from_doc(rows[0].doc, self.host, rows[0].batch)
        ids = [r.id for r in rows]
        answer = await self._send(ch, msg, ids, rows)
        if answer is None:
            return
        await self.store.run(lambda c: self._delete(c, ids))
        self.stats["messages_sent"] += 1
        self.last_error.pop(ch.name, None)
        self.log.info(
            "message delivered", channel=ch.name, subject=msg.subject, answer=answer[:200]
        )

    def _suppress(self, conn: sqlite3.Connection, channel: str, now: float, crit: int) -> int:
        with self.store.transaction():
            return spool.suppress(conn, channel, now, crit)

    def _delete(self, conn: sqlite3.Connection, ids: list[int]) -> None:
        with self.store.transaction():
            spool.delete(conn, ids)

    async def _failed(
        self,
        channel: str,
        ids: list[int],
        rows: list[SpoolRow],
        err: DeliveryError,
    ) -> None:
        self.stats["delivery_failures"] += 1
        self.last_error[channel] = str(err)
        what = "message" if rows and rows[0].kind == spool.MESSAGE else "alert"
        if what == "alert":
            self.outcomes[channel, "failed"] += len(ids)
            if err.permanent:
                self.outcomes[channel, "dropped"] += len(ids)
        # A prepared message (the report) is one message, named by its id; alerts are counted.
        size = {"message_id": rows[0].batch} if what == "message" else {"alerts": len(ids)}
        if err.permanent:
            self.stats["dropped_permanent"] += len(ids)
            self.log.error(
                f"{what} delivery failed permanently; dropping",
                channel=channel,
                **size,
                error=str(err),
            )
            await self.store.run(lambda c: self._delete(c, ids))
            return
        attempts = max((r.attempts for r in rows if r.id in set(ids)), default=0) + 1
        delay = self.backoff(attempts, err.retry_after)
        self.log.warning(
            f"{what} delivery failed; will retry",
            channel=channel,
            **size,
            attempt=attempts,
            in_seconds=round(delay, 1),
            error=str(err),
        )
        due = time.time() + delay

        def go(conn: sqlite3.Connection) -> None:
            with self.store.transaction():
                spool.reschedule(conn, ids, attempts, due, str(err))

        await self.store.run(go)

    def backoff(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds before retry number ``attempts``: exponential with ±20 % jitter, at least
        the server's Retry-After, within notify.retry_initial … notify.retry_max."""
        base = float(self.cfg.retry_initial) * (2 ** (attempts - 1))
        delay = min(base, float(self.cfg.retry_max)) * random.uniform(0.8, 1.2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, float(self.cfg.retry_max)))
        return delay

    # ------------------------------------------------------------------ daemon plumbing

    def apply_config(
        self, cfg: Any, channels: list[Any] | None = None, journal: LogChannel | None = None
    ) -> None:
        self.cfg = cfg.notify
        if journal is not None:
            self.journal = journal
        if channels is not None:
            old = self.channels
            self.channels = {c.name: c for c in channels}
            for name, c in old.items():
                if self.channels.get(name) is not c:
                    asyncio.get_running_loop().create_task(c.close())
        self._wake.set()

    async def metrics(self) -> list[Sample]:
        self._depth = await self.store.run_bounded(spool.depth, self._depth)
        n, oldest = self._depth
        # Every configured channel's series exists from the start (at 0), so a rate over
        # them means something before the first alert.
        counts = Counter({(ch, o): 0 for ch in self.channels for o in OUTCOMES})
        counts["all", "folded"] = 0
        counts.update(self.outcomes)
        return [
            *(
                sample("sshmonitor_alerts_total", v, channel=ch, outcome=out)
                for (ch, out), v in sorted(counts.items())
            ),
            sample("sshmonitor_alert_spool_depth", n),
            sample(
                "sshmonitor_alert_spool_oldest_seconds",
                0.0 if oldest is None else max(0.0, time.time() - oldest),
            ),
        ]

    def describe(self) -> dict[str, Any]:
        names = ", ".join(self.channels) or "journal only"
        return {
            "name": "alerts",
            "summary": f"channels: {names}",
            "stats": dict(self.stats),
            "last_error": dict(self.last_error),
        }

    def healthy(self) -> bool:
        return all(not t.done() for t in self._tasks)
