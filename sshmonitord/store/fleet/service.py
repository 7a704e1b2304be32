"""The fleet, as one stage of the daemon: the replicator, the ban log follower and the
leader lease for the fleet's rules, started when ``fleet.database`` is set.

Nothing here waits for PostgreSQL at start: the outbox triggers are switched on in the local
store at once (so nothing written from now on is missed), and the connection, the schema
check (or creation, when this host's role may) and the workers run in the background,
retrying while the database is away. The host detects, bans and alerts locally all along.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ... import log
from ...config import Config, FleetConfig
from ...events import FleetFinding, Tally
from ...measure import Histogram, Sample, sample
from .. import outbox
from . import FleetUnavailable, conninfo, host_name, redact
from . import schema as fs
from .bansync import BanSync, FleetBan, FleetState
from .replicator import Replicator

SCHEMA_RETRY = 30.0


class FleetBans(Protocol):
    """What the fleet needs from the ban manager (respond/bans.py)."""

    async def fleet_ban(
        self, net_text: str, expires: float, reason: str, origin: str, created: float | None
    ) -> bool: ...
    async def fleet_unban(self, net_text: str, origin: str) -> bool: ...
    async def fleet_reconcile(
        self, active: dict[str, tuple[float, str, str, float]], unbanned: dict[str, float]
    ) -> dict[str, list[str]]: ...


def _migrate_or_check(info: str) -> int:
    import psycopg

    with psycopg.connect(info, autocommit=True) as conn:
        try:
            _before, after = fs.migrate(conn)
            return after
        except psycopg.errors.InsufficientPrivilege:
            with conn.cursor() as cur:
                version = fs.current_version(cur)
            fs.check_version(version)
            return version or 0


class FleetService:
    """Stage ``fleet`` (docs/fleet.md)."""

    name = "fleet"
    role = "store"

    def __init__(
        self,
        store: Any,
        cfg: Config,
        bans: FleetBans | None,
        version: str,
        on_fleet_findings: Callable[[list[FleetFinding]], Awaitable[Any]] | None = None,
        evaluate: Callable[[str, list[Tally], FleetConfig, set[str]], list[FleetFinding]]
        | None = None,
    ) -> None:
        self.evaluate = evaluate
        self.store = store
        self.cfg = cfg.fleet
        self.full_cfg = cfg
        self.bans = bans
        self.version = version
        self.on_fleet_findings = on_fleet_findings
        self.host = host_name(cfg.fleet)
        self.replicator: Replicator | None = None
        self.bansync: BanSync | None = None
        self.leader: Any = None
        self.schema_error: str | None = None
        self._backlog = 0
        self._task: asyncio.Task[None] | None = None
        self.log = log.get("fleet")

    async def start(self) -> None:
        await self.store.run(functools.partial(outbox.enable, on=True))
        try:
            info = conninfo(self.cfg)
        except FleetUnavailable as exc:
            self.schema_error = str(exc)
            self.log.error("fleet mode unavailable", error=str(exc))
            return
        self.log.info("fleet mode", host=self.host, database=redact(self.cfg.database))
        self._task = asyncio.create_task(self._begin(info), name="fleet")

    async def _begin(self, info: str) -> None:
        while True:
            try:
                await asyncio.to_thread(_migrate_or_check, info)
                self.schema_error = None
                break
            except fs.FleetSchemaError as exc:
                error = str(exc)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
            if error != self.schema_error:
                self.log.error(
                    "cannot use the fleet database yet; working locally, retrying",
                    host=self.host,
                    error=error,
                )
            self.schema_error = error
            await asyncio.sleep(SCHEMA_RETRY)
        self.replicator = Replicator(
            self.store.path,
            info,
            self.host,
            self.version,
            prune=lambda upto: self.store.run(functools.partial(outbox.prune, upto=upto)),
        )
        await self.replicator.start()
        if self.cfg.share_bans and self.bans is not None:
            self.bansync = BanSync(
                info, self.host, self._entries, self._reconcile, period=float(self.cfg.reconcile)
            )
            await self.bansync.start()
        if (
            self.on_fleet_findings is not None
            and self.evaluate is not None
            and (self.cfg.correlate.enabled or self.cfg.spray.enabled)
        ):
            from .leader import Leader

            self.leader = Leader(
                info, self.host, self.full_cfg, self.on_fleet_findings, self.evaluate
            )
            await self.leader.start()

    async def _entries(self, entries: list[FleetBan]) -> None:
        assert self.bans is not None
        for b in entries:
            # One entry this host cannot apply must not stop the ones after it (the ban log
            # is written by every host, a compromised one included).
            try:
                if b.action == "ban" and b.expires is not None:
                    await self.bans.fleet_ban(
                        b.net, b.expires, f"{b.rule}: {b.reason}", b.host, b.created
                    )
                elif b.action == "unban":
                    await self.bans.fleet_unban(b.net, b.host)
            except Exception as exc:
                self.log.error(
                    "cannot apply a fleet ban log entry; skipping it",
                    id=b.id,
                    origin=b.host,
                    error=f"{type(exc).__name__}: {exc}"[:200],
                )

    async def _reconcile(self, state: FleetState) -> dict[str, list[str]]:
        assert self.bans is not None
        # Our own bans too: a host whose store was lost gets them back from the fleet.
        active = {
            net: (b.expires or 0.0, f"{b.rule}: {b.reason}", b.host, b.created)
            for net, b in state.active.items()
        }
        unbanned = {net: b.created for net, b in state.unbanned.items()}
        return await self.bans.fleet_reconcile(active, unbanned)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for worker in (self.leader, self.bansync):
            if worker is not None:
                with contextlib.suppress(Exception):
                    await worker.stop()
        if self.replicator is not None:
            await self.replicator.stop()

    def apply_config(self, cfg: Config) -> None:
        if cfg.fleet != self.cfg:
            self.log.warning(
                "the fleet section changed; it takes effect at the next restart "
                "(systemctl restart sshmonitor)"
            )
        self.full_cfg = cfg

    async def metrics(self) -> list[Sample]:
        rep, sync = self.replicator, self.bansync
        # Counted in the outbox itself: while the database is away it keeps growing.
        after = rep.confirmed if rep is not None else 0
        self._backlog, _top = await self.store.run_bounded(
            functools.partial(outbox.backlog, after=after), (self._backlog, 0)
        )
        backlog = self._backlog
        return [
            sample("sshmonitor_fleet_backlog_records", backlog),
            sample("sshmonitor_fleet_peers", rep.peers if rep else 0),
            sample(
                "sshmonitor_fleet_ban_propagation_seconds",
                sync.propagation if sync else Histogram(),
            ),
        ]

    def describe(self) -> dict[str, Any]:
        rep = self.replicator.describe() if self.replicator is not None else {}
        sync = self.bansync.describe() if self.bansync is not None else {}
        lead = self.leader.describe() if self.leader is not None else {}
        connected = bool(rep.get("connected"))
        if self.schema_error:
            summary = f"fleet {self.host}: not connected ({self.schema_error})"
        elif connected:
            summary = f"fleet {self.host}: connected, backlog {rep.get('backlog', 0)}"
        else:
            summary = f"fleet {self.host}: connecting ({rep.get('last_error') or 'starting'})"
        return {
            "name": "fleet",
            "summary": summary,
            "stats": {
                "shipped": rep.get("shipped", 0),
                "backlog": rep.get("backlog", 0),
                "bans_published": rep.get("bans_published", 0),
                "bans_applied": sync.get("applied", 0),
                "reconciles": sync.get("reconciles", 0),
                "repaired": sync.get("repaired", 0),
                "leader": bool(lead.get("leader")),
                "fleet_findings": lead.get("findings", 0),
            },
            "host": self.host,
            "replicator": rep,
            "bans": sync,
            "leader": lead,
            "last_error": self.schema_error or rep.get("last_error") or sync.get("last_error"),
        }

    def healthy(self) -> bool:
        return self._task is None or not self._task.done() or self._task.exception() is None
