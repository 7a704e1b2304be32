"""The daemon's side of the audit trail: settings from the config, the stage that sweeps lost
sessions and prunes history past retention on the store thread."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import log
from ..store.sessions import PRUNE_BATCH, PRUNE_TABLES, prune_batch
from ..timefmt import parse_duration
from .tracker import SessionTracker

# ---------------------------------------------------------------------------- retention


def iter_prune(
    retention_days: dict[str, float], now: float | None = None
) -> Iterator[tuple[str, float]]:
    """``(table, cutoff)`` for each table with a retention: rows older than cutoff go."""
    now = time.time() if now is None else now
    for table in PRUNE_TABLES:
        days = retention_days.get(table)
        if days is not None and days > 0:
            yield table, now - days * 86400


# ---------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class SessionSettings:
    """What the daemon reads from the config (with defaults while the keys do not exist)."""

    enabled: bool = True
    lost_after: float = 7 * 86400
    check_pids: bool | None = None  # None: auto
    retention: dict[str, float] = field(default_factory=dict)
    sweep_interval: float = 60.0
    prune_interval: float = 3600.0


def settings_from(cfg: Any) -> SessionSettings:
    """``sessions.{enabled,lost_after,check_pids}``, ``store.retention_days`` and the
    optional per-table ``store.retention: {events: 90, sessions: 365, ...}``."""
    sec = getattr(cfg, "sessions", None)
    store = getattr(cfg, "store", None)
    days = float(getattr(store, "retention_days", 90) or 90)
    retention = dict.fromkeys(PRUNE_TABLES, days)
    per = getattr(store, "retention", None) or {}
    if not isinstance(per, dict):  # the config's RetentionConfig dataclass
        per = {k: getattr(per, k, None) for k in PRUNE_TABLES}
    if isinstance(per, dict):
        for k, v in per.items():
            if k in retention and v is not None:
                retention[k] = float(v)
    lost_after = getattr(sec, "lost_after", 7 * 86400)
    try:
        lost = parse_duration(lost_after)
    except ValueError:
        lost = 7 * 86400.0
    check = getattr(sec, "check_pids", "auto")
    if isinstance(check, str):
        check = check.strip().lower()
    check_pids: bool | None
    if check in (None, "auto"):
        check_pids = None
    else:
        check_pids = check not in (False, 0, "false", "no", "off", "0")
    return SessionSettings(
        enabled=bool(getattr(sec, "enabled", True)),
        lost_after=lost if lost > 0 else 7 * 86400.0,
        check_pids=check_pids,
        retention=retention,
    )


# ---------------------------------------------------------------------------- the stage


class SessionStage:
    """The daemon's side of the tracker: periodic lost-session sweeps and retention pruning
    on the store thread, in small steps between the pipeline's commits."""

    name = "sessions"
    role = "audit"  # what the daemon wires it as (docs/architecture.md)

    def __init__(
        self,
        store: Any,
        tracker: SessionTracker,
        settings: SessionSettings,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self.tracker = tracker
        self.settings = settings
        self.busy = busy  # True while the pipeline is working through a backlog
        self.pruned: Counter[str] = Counter()
        self.last_prune: float | None = None
        self.last_sweep: float | None = None
        self.errors = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.log = log.get("sessions")

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._sweep_loop(), name="sessions-sweep"),
            asyncio.create_task(self._prune_loop(), name="sessions-prune"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []

    def apply_config(self, cfg: Any) -> None:
        self.settings = settings_from(cfg)
        self.tracker.lost_after = self.settings.lost_after
        self.tracker.check_pids = self.settings.check_pids

    async def sweep(self) -> int:
        n = await self.store.run(lambda c: self.tracker.sweep(c))
        self.last_sweep = time.time()
        if n:
            self.log.info("sessions closed as lost", count=n)
        return n

    async def prune(self, now: float | None = None) -> dict[str, int]:
        """Delete rows past retention, one small batch per store job."""
        done: dict[str, int] = {}
        for table, cutoff in iter_prune(self.settings.retention, now):
            while True:
                n = await self.store.run(lambda c, t=table, cut=cutoff: prune_batch(c, t, cut))
                done[table] = done.get(table, 0) + n
                if n < PRUNE_BATCH:
                    break
                await asyncio.sleep(0.01)  # let queued pipeline commits in
        for t, n in done.items():
            self.pruned[t] += n
        self.last_prune = time.time()
        if any(done.values()):
            self.log.info("pruned history past retention", **{k: v for k, v in done.items() if v})
        return done

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval)
            if self.busy():
                continue  # a backlog's close lines may still be on their way
            try:
                await self.sweep()
            except Exception:
                self.errors += 1
                self.log.exception("session sweep failed")

    async def _prune_loop(self) -> None:
        await asyncio.sleep(min(300.0, self.settings.prune_interval))
        while True:
            try:
                await self.prune()
            except Exception:
                self.errors += 1
                self.log.exception("retention pruning failed")
            await asyncio.sleep(self.settings.prune_interval)

    def describe(self) -> dict[str, Any]:
        st = self.tracker.stats
        n = self.tracker.open_count()
        return {
            "name": "sessions",
            "summary": f"{n} open session{'s' if n != 1 else ''}",
            "stats": {
                "open": n,
                "started": st["started"],
                "closed": st["closed"],
                "lost": st["lost"],
                "lost_corrected": st["lost_corrected"],
                "commands": st["commands"],
                "transfers": st["transfers"],
                "unattributed_commands": st["unattributed_commands"],
                "unattributed_transfers": st["unattributed_transfers"],
                "errors": st["errors"] + self.errors,
                "pid_checks": self.tracker.pid_checks_enabled(),
                "lost_after_seconds": self.tracker.lost_after,
                "retention_days": self.settings.retention,
                "pruned": dict(self.pruned),
                "last_prune": self.last_prune,
                "last_sweep": self.last_sweep,
            },
        }

    def healthy(self) -> bool:
        return not any(t.done() and not t.cancelled() for t in self._tasks)
