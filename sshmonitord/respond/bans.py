"""Bans: which addresses to block, for how long, and keeping the firewall in step with it.

The store is the truth. A ban is written in the same transaction as the events that caused it
(:meth:`BanManager.plan` runs inside the pipeline's commit), then pushed to the firewall
backend (:meth:`BanManager.enforce`). A crash between the two loses nothing: at start every
active ban is re-applied with its remaining time. The maintenance loop expires bans, re-runs
the backend's idempotent setup (``systemctl reload nftables`` flushes our table) and re-adds
whatever the firewall lost.

Escalation follows fail2ban's ``bantime.increment``: the n-th ban of a network lasts
``bantime × factor^(n-1)``, capped at ``bantime_max``, counted from the ban history.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .. import log
from ..config import ResponseConfig
from ..events import Action, Finding
from .backend import Backend, BackendError, NotSetUp

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ALWAYS_ALLOWED = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
MAINTENANCE_EVERY = 30.0


@dataclass(frozen=True)
class BanRecord:
    id: int
    net: str
    rule: str
    reason: str
    offence: int
    created: float
    expires: float
    dry_run: bool

    @property
    def seconds_left(self) -> int:
        return max(0, int(self.expires - time.time()))


def ban_seconds(cfg: ResponseConfig, offence: int) -> int:
    """How long the offence-th ban (1-based) of a network lasts."""
    seconds = float(cfg.bantime) * (cfg.bantime_factor ** max(0, offence - 1))
    return int(min(seconds, float(cfg.bantime_max)))


def allowlisted(net: IPNetwork, allow: Iterable[IPNetwork]) -> IPNetwork | None:
    """The allowlist entry covering (or overlapping) ``net``, if any."""
    for a in (*ALWAYS_ALLOWED, *allow):
        if a.version == net.version and (net.subnet_of(a) or a.subnet_of(net)):  # type: ignore[arg-type]
            return a
    return None


def _needs_push(net: IPNetwork, left: int, present: dict[IPNetwork, float | None]) -> bool:
    """Is ``net`` absent from the firewall (no element covers it), or about to run out there
    while our ban goes on (a backend that caps timeouts, like ipset's 24.8 days)?"""
    for p, remaining in present.items():
        if p.version == net.version and net.subnet_of(p):  # type: ignore[arg-type]
            return remaining is not None and remaining < 2 * MAINTENANCE_EVERY < left
    return True


def _row(r: sqlite3.Row | tuple[Any, ...]) -> BanRecord:
    return BanRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]))


_COLS = "id, net, rule, reason, offence, created, expires, dry_run"


class BanManager:
    """Plans bans in the store, enforces them in the firewall, expires and restores them."""

    name = "bans"

    def __init__(
        self,
        store: Any,
        backend: Backend,
        cfg: ResponseConfig,
        allowlist: Iterable[IPNetwork] = (),
        dry_run: bool = False,
    ) -> None:
        self.store = store
        self.backend = backend
        self.cfg = cfg
        self.allow = tuple(allowlist)
        self.dry_run = dry_run or cfg.dry_run
        self.active: dict[str, BanRecord] = {}
        self.last_error: str | None = None
        self.errors = 0
        self.banned_total = 0
        self.skipped_allowlisted = 0
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.log = log.get("bans")

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        rows = await self.store.run(self._load_active)
        self.active = {r.net: r for r in rows}
        await self._setup_and_restore(initial=True)
        self._task = asyncio.create_task(self._maintain(), name="bans")

    def _load_active(self, conn: sqlite3.Connection) -> list[BanRecord]:
        now = time.time()
        with self.store.transaction():
            conn.execute(
                "UPDATE bans SET active = 0, lifted = expires, lifted_by = 'expired' "
                "WHERE active = 1 AND expires <= ?",
                (now,),
            )
        return [
            _row(r)
            for r in conn.execute(f"SELECT {_COLS} FROM bans WHERE active = 1 ORDER BY created")
        ]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(MAINTENANCE_EVERY)
            try:
                await self.expire()
                await self._setup_and_restore(initial=False)
            except Exception:
                self.log.exception("ban maintenance failed")

    async def _setup_and_restore(self, initial: bool) -> None:
        if self.dry_run or not self.cfg.enabled:
            return
        try:
            await self.backend.setup()
            present = await self.backend.list()
        except BackendError as exc:
            self._error(exc, "firewall setup failed; will retry")
            return
        missing = [
            r
            for r in self.active.values()
            if not r.dry_run
            and r.seconds_left > 0
            and _needs_push(ipaddress.ip_network(r.net), r.seconds_left, present)
        ]
        if missing:
            if not initial:
                self.log.warning(
                    "bans missing from the firewall (flushed?); re-adding", count=len(missing)
                )
            await self._push(missing)
        self.last_error = None if not missing or self.last_error is None else self.last_error

    # ------------------------------------------------------------------ planning (store thread)

    def plan(
        self, conn: sqlite3.Connection, findings: Iterable[Finding], now: float
    ) -> list[BanRecord]:
        """Insert ban rows for the findings that ask for one. Runs inside the pipeline's
        transaction on the store thread, so events and the bans they cause commit together."""
        out: list[BanRecord] = []
        if not self.cfg.enabled:
            return out
        for f in findings:
            if f.ban_net is None or f.action not in (Action.BAN, Action.BOTH):
                continue
            if f.ban_net in self.active or any(r.net == f.ban_net for r in out):
                continue  # already banned: in-flight failures of a banned address
            net = ipaddress.ip_network(f.ban_net)
            hit = allowlisted(net, self.allow)
            if hit is not None:
                self.skipped_allowlisted += 1
                self.log.info(
                    "not banning an allowlisted address",
                    net=f.ban_net,
                    allowlist=str(hit),
                    rule=f.rule,
                )
                continue
            rec = self._insert(conn, f.ban_net, f.rule, f.summary, now, None)
            out.append(rec)
        return out

    def _insert(
        self,
        conn: sqlite3.Connection,
        net: str,
        rule: str,
        reason: str,
        now: float,
        seconds: int | None,
    ) -> BanRecord:
        offence = (
            conn.execute(
                "SELECT COUNT(*) FROM bans WHERE net = ? AND dry_run = ?", (net, int(self.dry_run))
            ).fetchone()[0]
            + 1
        )
        secs = seconds if seconds is not None else ban_seconds(self.cfg, offence)
        cur = conn.execute(
            "INSERT INTO bans(net, rule, reason, offence, created, expires, active, dry_run) "
            "VALUES (?, ?, ?, ?, ?, ?, 1, ?)",
            (net, rule, reason, offence, now, now + secs, int(self.dry_run)),
        )
        return BanRecord(
            int(cur.lastrowid or 0), net, rule, reason, offence, now, now + secs, self.dry_run
        )

    # ------------------------------------------------------------------ enforcing (loop)

    async def enforce(self, records: list[BanRecord]) -> None:
        """Record committed bans as active and push them to the firewall in one batch.
        Errors are logged (and retried by the maintenance loop), never raised."""
        if not records:
            return
        for r in records:
            self.active[r.net] = r
        self.banned_total += len(records)
        for r in records:
            self.log.warning(
                "banning" if not r.dry_run else "DRY RUN: would ban",
                net=r.net,
                rule=r.rule,
                seconds=int(r.expires - r.created),
                offence=r.offence,
                reason=r.reason,
            )
        await self._push([r for r in records if not r.dry_run])

    async def _push(self, records: list[BanRecord]) -> None:
        if not records:
            return
        items = [(ipaddress.ip_network(r.net), max(1, r.seconds_left)) for r in records]
        max_s = getattr(self.backend, "max_seconds", None)
        cap = int(max_s) if max_s else 2**31
        items = [(n, min(s, cap)) for n, s in items]
        async with self._lock:
            try:
                await self.backend.ban(items)
            except NotSetUp:
                # Someone flushed our table (systemctl reload nftables): rebuild it and put
                # every active ban back now rather than at the next maintenance round.
                try:
                    await self.backend.setup()
                    everything = [
                        (ipaddress.ip_network(r.net), min(max(1, r.seconds_left), cap))
                        for r in self.active.values()
                        if not r.dry_run
                    ]
                    await self.backend.ban(everything)
                except BackendError as exc:
                    self._error(exc, "ban failed after re-creating the firewall set; will retry")
            except BackendError as exc:
                self._error(exc, "ban failed; will retry")

    def _error(self, exc: Exception, what: str) -> None:
        self.errors += 1
        self.last_error = str(exc)
        self.log.error(what, backend=getattr(self.backend, "name", "?"), error=str(exc))

    # ------------------------------------------------------------------ operator / expiry

    async def ban(
        self, net_text: str, seconds: int | None, reason: str, by: str = "operator"
    ) -> BanRecord:
        """An operator's ban (``sshmonitor ban``): allowlist still applies."""
        net = ipaddress.ip_network(net_text, strict=False)
        hit = allowlisted(net, self.allow)
        if hit is not None:
            raise ValueError(f"{net} is allowlisted ({hit}); remove it from the allowlist first")
        key = str(net)

        def go(conn: sqlite3.Connection) -> BanRecord:
            with self.store.transaction():
                old = self.active.pop(key, None)
                if old is not None:
                    conn.execute(
                        "UPDATE bans SET active = 0, lifted = ?, lifted_by = ? WHERE id = ?",
                        (time.time(), "replaced", old.id),
                    )
                return self._insert(conn, key, by, reason, time.time(), seconds)

        rec = await self.store.run(go)
        await self.enforce([rec])
        return rec

    async def unban(self, net_text: str, by: str = "operator") -> bool:
        """Lift a ban now. True if one was active."""
        key = str(ipaddress.ip_network(net_text, strict=False))
        rec = self.active.pop(key, None)

        def go(conn: sqlite3.Connection) -> int:
            with self.store.transaction():
                return conn.execute(
                    "UPDATE bans SET active = 0, lifted = ?, lifted_by = ? "
                    "WHERE net = ? AND active = 1",
                    (time.time(), by, key),
                ).rowcount

        n = await self.store.run(go)
        if (rec is not None and not rec.dry_run) or n:
            async with self._lock:
                try:
                    await self.backend.unban([ipaddress.ip_network(key)])
                except BackendError as exc:
                    self._error(exc, "unban failed")
                    raise
        self.log.warning("unbanned", net=key, by=by)
        return rec is not None or n > 0

    async def expire(self) -> list[str]:
        """Mark ended bans inactive (and unban them where the firewall does not expire)."""
        now = time.time()
        ended = [r for r in self.active.values() if r.expires <= now]
        if not ended:
            return []
        for r in ended:
            self.active.pop(r.net, None)

        def go(conn: sqlite3.Connection) -> None:
            with self.store.transaction():
                conn.executemany(
                    "UPDATE bans SET active = 0, lifted = expires, "
                    "lifted_by = 'expired' WHERE id = ?",
                    [(r.id,) for r in ended],
                )

        await self.store.run(go)
        if not getattr(self.backend, "expires", True):
            with contextlib.suppress(BackendError):
                await self.backend.unban(
                    [ipaddress.ip_network(r.net) for r in ended if not r.dry_run]
                )
        return [r.net for r in ended]

    def apply_config(self, cfg: Any) -> None:
        self.cfg = cfg.response
        self.allow = tuple(cfg.allowlist)

    def list_active(self) -> list[dict[str, Any]]:
        return [
            {
                "net": r.net,
                "rule": r.rule,
                "reason": r.reason,
                "offence": r.offence,
                "since": r.created,
                "until": r.expires,
                "seconds_left": r.seconds_left,
                "dry_run": r.dry_run,
            }
            for r in sorted(self.active.values(), key=lambda r: r.created)
        ]

    def describe(self) -> dict[str, Any]:
        n = len(self.active)
        return {
            "name": "bans",
            "summary": f"{n} ban{'s' if n != 1 else ''} active"
            + (" (dry run)" if self.dry_run else "")
            + (f"; backend error: {self.last_error}" if self.last_error else ""),
            "stats": {
                "active": n,
                "banned_total": self.banned_total,
                "skipped_allowlisted": self.skipped_allowlisted,
                "backend_errors": self.errors,
            },
            "backend": getattr(self.backend, "name", "?"),
            "last_error": self.last_error,
        }

    def healthy(self) -> bool:
        return self._task is None or not self._task.done()
