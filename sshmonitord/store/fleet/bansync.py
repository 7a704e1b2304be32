"""Shared bans: follow the fleet's ban log and keep this host's bans in step with it.

A ban decided on any host reaches the ban log through that host's replicator; the log's
trigger notifies ``sshmonitor_bans``. This module LISTENs on its own connection, reads the
new log entries on a second one and hands each ban or unban decided elsewhere to the
callbacks the daemon gives it (the ban manager, which applies this host's own allowlist).

Notifications can be missed (a dropped connection, a restart). So on every (re)connect and
every ``reconcile`` seconds the whole set of the fleet's active bans is read and handed to
the reconcile callback, which repairs this host's bans and firewall set in both directions
and reports what it repaired: a missed notification never leaves a hole for longer than the
reconcile period.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ...measure import Histogram
from . import schema as fs
from .worker import Worker


@dataclass(frozen=True)
class FleetBan:
    """One entry of the fleet's ban log."""

    id: int
    host: str
    action: str  # "ban" or "unban"
    net: str
    rule: str
    reason: str
    created: float
    expires: float | None


@dataclass(frozen=True)
class FleetState:
    """The fleet's bans at one moment: running bans per network, and the networks an
    operator unbanned after their newest ban (when, and where)."""

    active: dict[str, FleetBan]
    unbanned: dict[str, FleetBan]
    last_id: int


# Bounded as the schema (version 2) bounds new entries; older rows may hold anything.
_COLS = (
    "id, left(host, 200), action, net::text, left(rule, 64), left(reason, 500), created, expires"
)

# With when the database took each entry: how long it took to reach this host.
SELECT_AFTER = (
    f"SELECT {_COLS}, extract(epoch FROM at)::float8 FROM {fs.SCHEMA}.ban_log "
    "WHERE id > %s ORDER BY id LIMIT 10000"
)
# Each network's longest-running ban not followed by an unban; and each network whose newest
# entry is an unban.
SELECT_ACTIVE = f"""
SELECT DISTINCT ON (b.net) b.id, left(b.host, 200), b.action, b.net::text, left(b.rule, 64),
       left(b.reason, 500), b.created, b.expires
FROM {fs.SCHEMA}.ban_log b
WHERE b.action = 'ban' AND b.expires > %s AND b.expires < 1e11
  AND NOT EXISTS (SELECT 1 FROM {fs.SCHEMA}.ban_log u
                  WHERE u.net = b.net AND u.action = 'unban' AND u.id > b.id)
ORDER BY b.net, b.expires DESC
"""
SELECT_UNBANNED = f"""
SELECT DISTINCT ON (net) {_COLS} FROM {fs.SCHEMA}.ban_log
WHERE at > now() - interval '7 days'
ORDER BY net, id DESC
"""
SELECT_MAX = f"SELECT coalesce(max(id), 0) FROM {fs.SCHEMA}.ban_log"


def _ban(row: tuple[Any, ...]) -> FleetBan:
    i, host, action, net, rule, reason, created, expires = row
    net = str(net)  # a cidr: "192.0.2.1/32", as the ban manager spells networks
    return FleetBan(
        int(i),
        str(host),
        str(action),
        net,
        str(rule),
        str(reason),
        float(created),
        None if expires is None else float(expires),
    )


async def read_state(conn: Any, now: float | None = None) -> FleetState:
    now = time.time() if now is None else now
    async with conn.cursor() as cur:
        await cur.execute(SELECT_MAX)
        last = int((await cur.fetchone())[0])
        await cur.execute(SELECT_ACTIVE, (now,))
        active = {b.net: b for b in (_ban(r) for r in await cur.fetchall())}
        await cur.execute(SELECT_UNBANNED)
        unbanned = {
            b.net: b for b in (_ban(r) for r in await cur.fetchall()) if b.action == "unban"
        }
    return FleetState(active, unbanned, last)


class BanSync(Worker):
    """Listens to the fleet's ban log for host ``host``; see the module's docstring."""

    name = "fleet-bans"
    connections = 2  # one LISTENs (psycopg's notifies() holds it), one reads the log
    down_message = "fleet ban log unavailable; local bans go on, repairing when back"
    up_message = "fleet ban log connected"

    def __init__(
        self,
        conninfo: str,
        host: str,
        on_entries: Callable[[list[FleetBan]], Awaitable[None]],
        on_reconcile: Callable[[FleetState], Awaitable[dict[str, list[str]]]],
        period: float = 60.0,
    ) -> None:
        super().__init__(conninfo, host)
        self.on_entries = on_entries
        self.on_reconcile = on_reconcile
        self.period = period
        self.last_id = 0
        self.applied = 0
        self.reconciles = 0
        self.repaired = 0
        self.last_reconcile: float | None = None
        # From the database taking a ban log entry to this host having applied it (the
        # database's clock against ours: keep them in step with NTP).
        self.propagation = Histogram()
        self._poke = asyncio.Event()

    def reconcile_now(self) -> None:
        self._poke.set()

    async def serve(self, *conns: Any) -> None:
        lis, conn = conns
        await lis.execute(f"LISTEN {fs.BAN_CHANNEL}")
        self.up()
        await self._serve(lis, conn)

    async def _serve(self, lis: Any, conn: Any) -> None:
        notified: asyncio.Queue[str] = asyncio.Queue()

        async def pump() -> None:
            async for n in lis.notifies():
                notified.put_nowait(n.payload)

        pump_task = asyncio.create_task(pump(), name="fleet-bans-listen")
        try:
            await self._reconcile(conn)  # what happened while we were not listening
            next_full = time.monotonic() + self.period
            while True:
                if pump_task.done():
                    pump_task.result()  # the listening connection died: reconnect
                    raise ConnectionError("the ban log listener stopped")
                wait = max(0.05, next_full - time.monotonic())
                getter = asyncio.ensure_future(notified.get())
                poke = asyncio.ensure_future(self._poke.wait())
                done, _ = await asyncio.wait(
                    {getter, poke, pump_task}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                for f in (getter, poke):
                    if f not in done:
                        f.cancel()
                if poke in done:
                    self._poke.clear()
                    next_full = 0.0
                if getter in done:
                    while not notified.empty():
                        notified.get_nowait()
                    await self._follow(conn)
                if time.monotonic() >= next_full:
                    await self._reconcile(conn)
                    next_full = time.monotonic() + self.period
        finally:
            pump_task.cancel()
            with contextlib.suppress(BaseException):
                await pump_task

    async def _follow(self, conn: Any) -> None:
        """The entries after the last one seen; those decided elsewhere are applied."""
        while True:
            async with conn.cursor() as cur:
                await cur.execute(SELECT_AFTER, (self.last_id,))
                fetched = await cur.fetchall()
            rows = [_ban(r[:8]) for r in fetched]
            at = {int(r[0]): r[8] for r in fetched}
            if not rows:
                return
            self.last_id = rows[-1].id
            # Ours were applied when we decided them; the fleet rules' bans (even when this
            # host is the leader that wrote them) are applied by every host from here.
            theirs = [b for b in rows if b.host != self.host or b.rule.startswith("fleet_")]
            if theirs:
                self.applied += len(theirs)
                await self.on_entries(theirs)
                now = time.time()
                for b in theirs:
                    if at.get(b.id) is not None:
                        self.propagation.observe(now - float(at[b.id]))
            if len(rows) < 10000:
                return

    async def _reconcile(self, conn: Any) -> None:
        state = await read_state(conn)
        self.last_id = max(self.last_id, state.last_id)
        repaired = await self.on_reconcile(state)
        self.reconciles += 1
        self.last_reconcile = time.time()
        n = sum(len(v) for v in repaired.values())
        if n:
            self.repaired += n
            self.log.warning(
                "fleet reconcile repaired this host's bans",
                host=self.host,
                **{k: v[:20] for k, v in repaired.items() if v},
            )

    def describe(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "applied": self.applied,
            "reconciles": self.reconciles,
            "repaired": self.repaired,
            "last_reconcile": self.last_reconcile,
            "last_error": self.last_error,
        }
