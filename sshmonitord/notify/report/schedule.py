"""The daily report's schedule: :class:`ReportScheduler` builds the report at
``notify.report.time`` and hands it to the alert spool, which delivers it with the alerts'
retries, backoff, ``max_age`` and durability (notify/queue.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from ... import log
from ...store import spool
from ..alert import Message, severity_rank
from ..queue import message_doc
from .times import local_time, long_time, span_text


def parse_clock(text: str | int) -> tuple[int, int]:
    """``"07:00"`` → (7, 0). Raises ValueError for anything but a valid ``H:MM``/``HH:MM``.

    An int is minutes after midnight: YAML 1.1 (PyYAML) reads an unquoted ``23:30`` or
    ``7:30`` as the sexagesimal number 1410 or 450 (but ``07:00`` as a string)."""
    if isinstance(text, int) and not isinstance(text, bool):
        if not 0 <= text < 24 * 60:
            raise ValueError(f"{text!r} is not a time of day (HH:MM, 00:00-23:59)")
        return divmod(text, 60)
    m = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", str(text))
    if m is None or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError(f"{text!r} is not a time of day (HH:MM, 00:00-23:59)")
    return int(m.group(1)), int(m.group(2))

@dataclass(frozen=True)
class ReportSettings:
    """``notify.report``, read defensively (a config without the section means defaults)."""

    enabled: bool = False
    time: str = "07:00"
    period: float = 86400.0
    top: int = 10
    channels: tuple[str, ...] = ()


def _clock_text(value: Any) -> str:
    """``notify.report.time`` as ``HH:MM`` (YAML's sexagesimal ints too); else as given, for
    :meth:`ReportScheduler.next_slot` to report as invalid."""
    try:
        return "{:02d}:{:02d}".format(*parse_clock(value))
    except (ValueError, TypeError):
        return str(value)


def report_settings(cfg: Any) -> ReportSettings:
    """From a whole Config, a NotifyConfig, or a ``notify.report`` object or mapping."""
    if isinstance(cfg, ReportSettings):
        return cfg
    if isinstance(cfg, dict) or (hasattr(cfg, "enabled") and hasattr(cfg, "time")):
        rc = cfg
    else:
        rc = getattr(getattr(cfg, "notify", cfg), "report", None)
    if rc is None:
        return ReportSettings()

    def get(key: str, default: Any) -> Any:
        if isinstance(rc, dict):
            return rc.get(key, default)
        return getattr(rc, key, default)

    d = ReportSettings()
    return ReportSettings(
        enabled=bool(get("enabled", d.enabled)),
        time=_clock_text(get("time", d.time)),
        period=float(get("period", d.period)),
        top=int(get("top", d.top)),
        channels=tuple(str(c) for c in (get("channels", d.channels) or ())),
    )


class MessageSpool(Protocol):
    """What the scheduler hands a report to: the alert queue (notify/queue.py)."""

    async def spool_message(self, message: Message, channels: Iterable[str]) -> list[str]: ...


# Seconds between attempts to write the report into the spool (the store locked by another
# process, a full disk); delivery retries are the spool's (notify.retry_initial … retry_max).
SPOOL_RETRY = (1.0, 5.0, 30.0, 120.0)
TICK = 60.0  # the scheduler looks at the clock (and config changes) at least this often
CATCH_UP = 6 * 3600.0  # a report missed while the daemon was down is sent late, within this
SETTLE = 5.0  # wait this long after the slot so the pipeline has stored the slot's last events
META_KEY = "report.last_slot"


class ReportScheduler:
    """Sends the report at ``notify.report.time`` (local) every day, over the ``period`` that
    ends at that time, to the ``notify.report.channels`` (empty: every channel given).

    * Reads through its own read-only SQLite connection (WAL: never blocks the writer).
    * Delivery is the alert spool's (``queue``, notify/queue.py): the report is written to the
      store as one prepared message per channel and sent with the alerts' retries, backoff,
      ``max_age`` and durability across restarts. Its id is fixed by host and period, so a
      report re-sent after a crash or a catch-up carries the id of the first attempt.
      Without a ``queue`` the rows are written to the store's spool all the same, for the
      daemon's alert queue to deliver at its next round.
    * The last slot sent is kept in the store's meta table: a report missed while the daemon
      was down is sent at start when the slot is less than :data:`CATCH_UP` ago.
    * With no channel (or ``dry_run``), the report goes to the journal only.
    * ``clock``/``sleep`` are injectable: tests run a day in milliseconds.

    Channels are shared with the alert queue and never closed here.
    """

    name = "report"
    role = "notify"  # what the daemon wires it as (docs/architecture.md)

    def __init__(
        self,
        store: Any,
        cfg: Any,
        channels: Sequence[Any],
        host: str,
        *,
        queue: MessageSpool | None = None,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        settle: float = SETTLE,
    ) -> None:
        self.store = store
        self.db_path = os.fspath(getattr(store, "path", store))
        self.settings = report_settings(cfg)
        self.channels = list(channels)
        self.host = host
        self.dry_run = dry_run
        self.clock = clock
        self._sleep = sleep
        self.queue = queue
        self.settle = float(settle)
        self.due: float | None = None
        self.last_slot: float | None = None
        self.last_error: dict[str, str] = {}
        self.config_error: str | None = None
        self.stats = {"reports": 0, "spooled": 0, "failed": 0}
        self._changed_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self.log = log.get("report")

    # ------------------------------------------------------------------ schedule

    def next_slot(self, after: float) -> float | None:
        """The first report time strictly after ``after`` (None when disabled or invalid)."""
        s = self.settings
        if not s.enabled:
            return None
        try:
            hh, mm = parse_clock(s.time)
        except ValueError as exc:
            self.config_error = str(exc)
            return None
        self.config_error = None
        day = local_time(after).replace(hour=0, minute=0, second=0, microsecond=0)
        for i in range(3):
            cand = (day + timedelta(days=i)).replace(hour=hh, minute=mm).timestamp()
            if cand > after:
                return cand
        return None  # pragma: no cover - a day always has the time

    def prev_slot(self, at: float) -> float | None:
        """The last report time at or before ``at``."""
        nxt = self.next_slot(at)
        if nxt is None:
            return None
        back = local_time(nxt) - timedelta(days=1)
        return back.timestamp()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.last_slot = await self._load_last()
        now = self.clock()
        self.due = self.next_slot(now)
        prev = self.prev_slot(now)
        if (
            prev is not None
            and self.last_slot is not None
            and self.last_slot < prev
            and now - prev <= CATCH_UP
        ):
            self.due = prev  # missed while down: send it now
        self._task = asyncio.create_task(self._run(), name="report")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def apply_config(self, cfg: Any, channels: Sequence[Any] | None = None) -> None:
        """A reload: new settings (and, when given, the new channel objects)."""
        new = report_settings(cfg)
        if channels is not None:
            self.channels = list(channels)
        if new != self.settings:
            self.settings = new
            # Slots are counted from the moment of the change, not from when the loop
            # next looks (up to TICK later): enabling at 06:59:30 still sends at 07:00.
            self._changed_at = self.clock()

    def describe(self) -> dict[str, Any]:
        s = self.settings
        if not s.enabled:
            summary = "daily report off"
        elif self.config_error:
            summary = f"daily report: {self.config_error}"
        else:
            names = ", ".join(c.name for c in self.targets()) or "journal only"
            summary = f"daily report at {s.time} over {span_text(s.period)} to {names}"
        return {
            "name": self.name,
            "summary": summary,
            "next": None if self.due is None else long_time(self.due),
            "last": None if self.last_slot is None else long_time(self.last_slot),
            "stats": dict(self.stats),
            "last_error": dict(self.last_error),
        }

    def healthy(self) -> bool:
        return self._task is not None and not self._task.done()

    def targets(self) -> list[Any]:
        """The channels the report goes to: those named in ``notify.report.channels`` (by
        name or type), or all of them."""
        names = self.settings.channels
        if not names:
            return list(self.channels)
        return [c for c in self.channels if c.name in names or getattr(c, "type", None) in names]

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        while True:
            if self._changed_at is not None:
                self.due = self.next_slot(self._changed_at)
                self._changed_at = None
            now = self.clock()
            if self.due is None:
                await self._sleep(TICK)
                continue
            if now < self.due + self.settle:
                await self._sleep(min(TICK, self.due + self.settle - now))
                continue
            slot = self.due
            try:
                await self.run_once(slot)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("daily report failed", slot=long_time(slot))
            # Next slot after this one, or after now when the clock jumped past several.
            self.due = self.next_slot(max(slot, self.clock() - self.settle))

    async def run_once(self, slot: float | None = None) -> dict[str, str]:
        """Build the report for the period ending at ``slot`` (default: now) and hand it to
        the spool. Returns {channel name: "spooled as <message id>"}."""
        until = self.clock() if slot is None else slot
        since = until - self.settings.period
        top = self.settings.top
        report = await asyncio.to_thread(self._build, since, until, top)
        from .render import report_message  # loaded with the first report, not the daemon

        msg = report_message(report, self.host)
        self.stats["reports"] += 1
        targets = [] if self.dry_run else self.targets()
        f, b, lg, al = report["failures"], report["bans"], report["logins"], report["alerts"]
        fields: dict[str, Any] = {
            "since": long_time(since),
            "until": long_time(until),
            "failures": f["total"],
            "addresses": f["addresses"],
            "invalid_names": report["invalid_users"]["names"],
            "logins": lg["total"],
            "bans_placed": b["placed"],
            "alerts": al["total"],
            "channels": [c.name for c in targets],
            "build_seconds": report["build_seconds"],
        }
        if not targets:
            fields["report"] = msg.text
            if self.settings.channels and not self.dry_run:
                self.log.warning(
                    "notify.report.channels names no configured channel; journal only",
                    wanted=list(self.settings.channels),
                    configured=[c.name for c in self.channels],
                )
        self.log.info("daily report" + (" (DRY RUN: not sent)" if self.dry_run else ""), **fields)
        results: dict[str, str] = {}
        if targets:
            names = await self._spool(msg, [c.name for c in targets])
            results = {n: f"spooled as {msg.id}" for n in names}
        if slot is not None:
            self.last_slot = slot
            await self._save_last(slot)
        return results

    def _build(self, since: float, until: float, top: int) -> dict[str, Any]:
        from ...store import connect
        from .query import build_report  # loaded with the first report, not the daemon

        conn = connect(self.db_path, readonly=True)
        try:
            return build_report(conn, since, until, top)
        finally:
            conn.close()

    async def _spool(self, msg: Message, names: list[str]) -> list[str]:
        """Write ``msg`` into the spool for ``names``, retrying while the store refuses the
        write; once written it is the spool's to deliver. Raises when every attempt failed
        (the slot is then not recorded as sent)."""
        attempt = 0
        while True:
            try:
                if self.queue is not None:
                    spooled = await self.queue.spool_message(msg, names)
                else:
                    await self.store.run(lambda c: self._spool_direct(c, msg, names))
                    spooled = names
            except Exception as exc:
                self.last_error["spool"] = str(exc)
                if attempt >= len(SPOOL_RETRY):
                    self.stats["failed"] += 1
                    self.log.error("daily report not spooled", error=str(exc))
                    raise
                delay = SPOOL_RETRY[attempt]
                attempt += 1
                self.log.warning(
                    "cannot spool the daily report; retrying", in_seconds=delay, error=str(exc)
                )
                await self._sleep(delay)
                continue
            self.last_error.pop("spool", None)
            self.stats["spooled"] += len(spooled)
            self.log.info("daily report spooled", channels=spooled, id=msg.id)
            return spooled

    def _spool_direct(self, conn: Any, msg: Message, names: list[str]) -> None:
        with self.store.transaction():
            spool.add_message(
                conn, names, message_doc(msg), msg.id, time.time(), severity_rank("critical")
            )

    async def _load_last(self) -> float | None:
        get = getattr(self.store, "get_meta", None)
        run = getattr(self.store, "run", None)
        if get is None or run is None:
            return None
        try:
            value = await run(lambda _c: get(META_KEY))
            return None if value is None else float(value)
        except Exception:
            return None

    async def _save_last(self, slot: float) -> None:
        put = getattr(self.store, "set_meta", None)
        run = getattr(self.store, "run", None)
        if put is None or run is None:
            return
        try:
            await run(lambda _c: put(META_KEY, repr(float(slot))))
        except Exception as exc:
            self.log.warning("cannot record the report time", error=str(exc))
