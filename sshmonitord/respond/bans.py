"""Bans: which addresses to block, for how long, and keeping the firewall in step with it.

Banning is the protection, so it fails closed: the firewall never waits for the store. A ban
is decided in memory (:meth:`BanManager.decide`, no store access), pushed to the firewall
(:meth:`BanManager.enforce`), and its row is written when the store can take it
(:meth:`BanManager.record`, inside the pipeline's transaction; the maintenance loop writes
whatever is still unsaved, so a ban decided while the disk was full is stored once it is
not). Operator bans and unbans work the same way: firewall first, then the store; a store
failure is reported but the firewall action stands.

Rows are found by ``(net, created)``, never by a row id handed out inside a transaction that
may still roll back. A ban that ends (expires, is lifted, is replaced) before its row exists
is remembered in memory, and the row is written already ended.

At start every active ban is re-applied with its remaining time, after normalising its
address again (a row written by an older version may hold ``::ffff:a.b.c.d``) and checking it
against the allowlist again. The maintenance loop expires bans, re-runs the backend's
idempotent setup (``systemctl reload nftables`` flushes our table) and re-adds whatever the
firewall lost.

Whether a finding bans, and for how long, is not decided here but by the pure
:func:`~sshmonitord.respond.policy.decide` that replay calls too (allowlist, never-bannable
and too-wide networks, "already banned" at wall time ``now``, escalation: the n-th ban of a
network lasts ``bantime × factor^(n-1)``, capped at ``bantime_max``). This module feeds it the
count of past bans per network (loaded from the store at start, kept in memory) and the bans
running, and carries out what it returns. Every SQL statement is in store/bans.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from .. import log
from ..addresses import IPNetwork, OperatorError, normalize_network, parse_network
from ..config import ResponseConfig
from ..events import Finding
from ..measure import Sample, sample
from ..store import bans as bans_store
from .backend import Backend, BackendError, NotSetUp
from .policy import (
    ALWAYS_ALLOWED,
    Ban,
    MemoryHistory,
    Policy,
    Skip,
    allowlisted,
    ban_seconds,
    decide,
    refusal,
)

__all__ = [
    "ALWAYS_ALLOWED",
    "BanManager",
    "BanRecord",
    "BanRefused",
    "NotCompleted",
    "allowlisted",
    "ban_seconds",
]

MAINTENANCE_EVERY = 30.0


class BanRefused(OperatorError, ValueError):
    """An operator's ban or unban that is not carried out: a bad address, an allowlisted one,
    a network too wide without ``--force``."""

    usage = True


class NotCompleted(OperatorError):
    """An operator's ban or unban done in part: the firewall or the store failed. The message
    says which part stands."""

    usage = False


@dataclass(frozen=True)
class BanRecord:
    id: int  # 0: not (known to be) in the store; rows are found by (net, created)
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

    @property
    def key(self) -> tuple[str, float]:
        return (self.net, self.created)


def _widths(present: Iterable[IPNetwork]) -> list[tuple[int, int]]:
    """The (version, prefix length) pairs among ``present``, narrowest first: the element
    that is the ban itself is found before a wider one that covers it."""
    return sorted({(p.version, p.prefixlen) for p in present}, reverse=True)


def _needs_push(
    net: IPNetwork,
    left: int,
    present: dict[IPNetwork, float | None],
    widths: Iterable[tuple[int, int]] | None = None,
) -> bool:
    """Is ``net`` absent from the firewall (no element covers it), or about to run out there
    while our ban goes on (a backend that caps timeouts, like ipset's 24.8 days)?

    ``widths``: the (version, prefix length) pairs present has (compute once per pass).
    Looking up ``net``'s supernet of each of those widths keeps a pass over N bans linear:
    scanning every element for each ban took 16 s of a blocked event loop at 4,500 bans."""
    for version, width in _widths(present) if widths is None else widths:
        if version != net.version or width > net.prefixlen:
            continue
        cover = net if width == net.prefixlen else net.supernet(new_prefix=width)
        if cover in present:
            remaining = present[cover]
            return remaining is not None and remaining < 2 * MAINTENANCE_EVERY < left
    return True


def _spelled(net_text: str) -> str:
    """A network as this module keys it ("192.0.2.1/32"), whoever wrote it."""
    try:
        return str(parse_network(net_text)[0])
    except ValueError:
        return net_text


def _record(r: bans_store.BanRow) -> BanRecord:
    return BanRecord(r.id, r.net, r.rule, r.reason, r.offence, r.created, r.expires, r.dry_run)


class _ManagerHistory:
    """The policy's view of the manager: offence counts, running bans, and the bans decided
    earlier in the same batch (not active yet: enforce() comes after decide())."""

    def __init__(self, m: BanManager, batch: dict[str, float]) -> None:
        self.m = m
        self.batch = batch

    def offences(self, net: str) -> int:
        return self.m._offences.get(net, 0)

    def banned_until(self, net: str) -> float | None:
        if net in self.batch:
            return self.batch[net]
        r = self.m.active.get(net)
        return None if r is None else r.expires


@dataclass
class _Loaded:
    """What start() reads from the store (on the store thread)."""

    active: list[BanRecord]
    offences: dict[str, int]
    lifted: list[tuple[str, str]]  # (stored net, why): refused on a second look
    renamed: list[tuple[str, str]]  # (stored net, normalised net)
    write_error: str | None = None


class BanManager:
    """Decides bans, enforces them in the firewall, stores, expires and restores them."""

    name = "bans"
    role = "respond"  # what the daemon wires it as (docs/architecture.md)

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
        self.policy = Policy(cfg, tuple(allowlist))
        self.dry_run = dry_run or cfg.dry_run
        self.active: dict[str, BanRecord] = {}
        self.last_error: str | None = None
        self.last_store_error: str | None = None
        self.errors = 0
        self.store_errors = 0
        self.banned_total = 0
        # Bans placed, by rule (a detection rule, "operator", "fleet"; "restored": put back
        # from the store at start). Rule names come from the code, never from a log line.
        self.bans_by_reason: Counter[str] = Counter()
        self.skipped_allowlisted = 0
        self.skipped_refused = 0
        # Past bans per network (this dry-run mode), for escalation: bumped on every decision.
        self._offences: dict[str, int] = {}
        # Bans whose row may not be committed yet (the store was full, or the pipeline's
        # transaction has not run): written by record() or persist(), whichever comes first.
        self._unsaved: dict[tuple[str, float], BanRecord] = {}
        # Bans that ended (when, by) and whose row may still say active: applied by persist().
        self._ended: dict[tuple[str, float], tuple[float, str]] = {}
        self._firewall_leftovers: list[IPNetwork] = []  # lifted at start: take out of the set
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.log = log.get("bans")

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        loaded = await self.store.run(self._load)
        self._offences = loaded.offences
        self.active = {r.net: r for r in loaded.active}
        self.bans_by_reason["restored"] += len(self.active)
        for old, new in loaded.renamed:
            self.log.info("stored ban normalised", stored=old, net=new)
        for net, why in loaded.lifted:
            self.log.warning("lifting a stored ban", net=net, why=why)
        if loaded.write_error is not None:
            # Reads work on a full disk, writes may not: bans are restored all the same.
            self._store_error(loaded.write_error, "cannot update stored bans at start")
        await self._setup_and_restore(initial=True)
        self._task = asyncio.create_task(self._maintain(), name="bans")

    def _load(self, conn: sqlite3.Connection) -> _Loaded:
        now = time.time()
        rows = [_record(r) for r in bans_store.active(conn, now)]
        offences = bans_store.offence_counts(conn, self.dry_run)
        active: dict[str, BanRecord] = {}
        lifted: list[tuple[str, str]] = []
        renamed: list[tuple[str, str]] = []
        updates: list[Callable[[sqlite3.Connection], Any]] = []
        for r in rows:
            try:
                net = normalize_network(ipaddress.ip_network(r.net, strict=False))
            except ValueError:
                lifted.append((r.net, "not an address"))
                updates.append(partial(bans_store.lift_id, ban_id=r.id, when=now, by="invalid"))
                continue
            refused = refusal(net, self.policy, force=True)
            if refused is not None:
                lifted.append((r.net, refused.reason))
                updates.append(partial(bans_store.lift_id, ban_id=r.id, when=now, by="allowlisted"))
                self._firewall_leftovers.append(net)
                continue
            key = str(net)
            if key != r.net:
                renamed.append((r.net, key))
                updates.append(partial(bans_store.rename, ban_id=r.id, net=key))
                offences[key] = offences.get(key, 0) + offences.pop(r.net, 0)
                r = replace(r, net=key)
            old = active.get(key)
            if old is not None:  # two spellings of one network: keep the longer ban
                loser, r = (old, r) if old.expires <= r.expires else (r, old)
                updates.append(
                    partial(bans_store.lift_id, ban_id=loser.id, when=now, by="replaced")
                )
            active[key] = r
        error = None
        try:
            with self.store.transaction():
                bans_store.lift_expired(conn, now)
                for update in updates:
                    update(conn)
        except sqlite3.Error as exc:
            error = str(exc)
        return _Loaded(list(active.values()), offences, lifted, renamed, error)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # Last chance to store what the store refused earlier (a no-op when all is saved).
        with contextlib.suppress(Exception):
            await self.persist()
        # A backend with a long-lived helper process (nft's session) ends it; the bans stay.
        close = getattr(self.backend, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(MAINTENANCE_EVERY)
            try:
                await self.expire()
                await self.persist()
                await self._setup_and_restore(initial=False)
            except Exception:
                self.log.exception("ban maintenance failed")

    async def _setup_and_restore(
        self, initial: bool
    ) -> tuple[dict[IPNetwork, float | None], list[BanRecord]] | None:
        """Set the firewall up and put back the running bans it lacks. Returns what it held
        before (and what was put back), or None when there is no firewall to look at."""
        if self.dry_run or not self.cfg.enabled:
            return None
        try:
            await self.backend.setup()
            present = await self.backend.list()
        except BackendError as exc:
            self._error(exc, "firewall setup failed; will retry")
            return None
        if self._firewall_leftovers:
            leftovers, self._firewall_leftovers = self._firewall_leftovers, []
            with contextlib.suppress(BackendError):
                await self.backend.unban(leftovers)
        widths = _widths(present)
        missing = [
            r
            for r in self.active.values()
            if not r.dry_run
            and r.seconds_left > 0
            and _needs_push(ipaddress.ip_network(r.net), r.seconds_left, present, widths)
        ]
        if missing:
            if not initial:
                self.log.warning(
                    "bans missing from the firewall (flushed?); re-adding", count=len(missing)
                )
            await self._push(missing)
        self.last_error = None if not missing or self.last_error is None else self.last_error
        return present, missing

    # ------------------------------------------------------------------ deciding (no store)

    @property
    def allow(self) -> tuple[IPNetwork, ...]:
        """The allowlist, normalised."""
        return self.policy.allowlist

    def _refusal(self, net: IPNetwork, force: bool) -> tuple[str, str] | None:
        """Why ``net`` must not be banned, as (kind, message), kind one of never, allowlisted,
        force; None: it may be. ``net`` is normalised."""
        refused = refusal(net, self.policy, force)
        return None if refused is None else (refused.kind, refused.reason)

    def _new(
        self,
        net: str,
        rule: str,
        reason: str,
        now: float,
        seconds: int | None,
        offence: int | None = None,
    ) -> BanRecord:
        offence = offence if offence is not None else self._offences.get(net, 0) + 1
        self._offences[net] = offence
        secs = seconds if seconds is not None else ban_seconds(self.cfg, offence)
        rec = BanRecord(0, net, rule, reason, offence, now, now + secs, self.dry_run)
        self._unsaved[rec.key] = rec
        return rec

    def decide(self, findings: Iterable[Finding], now: float) -> list[BanRecord]:
        """The bans the findings ask for, ready for :meth:`enforce` at once. No store access:
        a full disk must not stop a ban. Their rows are written by :meth:`record`. Each
        finding goes through :func:`~sshmonitord.respond.policy.decide` at wall time ``now``,
        as replay's do at event time."""
        out: list[BanRecord] = []
        batch: dict[str, float] = {}
        history = _ManagerHistory(self, batch)
        for f in findings:
            d = decide(f, history, self.policy, now)
            if isinstance(d, Ban):
                rec = self._new(d.net, d.rule, d.reason, now, d.seconds, d.offence)
                batch[d.net] = rec.expires
                out.append(rec)
            else:
                self._skipped(f, d)
        return out

    def _skipped(self, f: Finding, d: Skip) -> None:
        if d.kind == "invalid":
            self.log.error("finding with an invalid ban_net", net=f.ban_net, rule=f.rule)
        elif d.kind in ("never", "allowlisted", "force"):
            if d.kind == "allowlisted":
                self.skipped_allowlisted += 1
            else:
                self.skipped_refused += 1
            self.log.info("not banning", net=d.net, rule=f.rule, why=d.reason)

    # ------------------------------------------------------------------ storing (store thread)

    def record(self, conn: sqlite3.Connection, records: Iterable[BanRecord]) -> None:
        """Write the rows of decided bans, inside the caller's transaction on the store
        thread. Safe to call again after a rollback, or after :meth:`persist` stored them
        already (a row is written once). A ban that ended meanwhile is written ended."""
        for r in records:
            self._write(conn, r)

    def _write(self, conn: sqlite3.Connection, r: BanRecord) -> None:
        row = bans_store.find(conn, r.net, r.created, r.dry_run)
        ended = self._ended.get(r.key)
        if ended is None and r.expires <= time.time() and self.active.get(r.net) is not r:
            ended = (r.expires, "expired")
        if row is not None:
            if ended is not None and row[1]:
                bans_store.lift_id(conn, row[0], *ended)
            return
        bans_store.insert(
            conn, r.net, r.rule, r.reason, r.offence, r.created, r.expires, r.dry_run, ended
        )

    def committed(self, records: Iterable[BanRecord]) -> None:
        """Optional: the caller's transaction that ran :meth:`record` committed, so these no
        longer need :meth:`persist` (which would otherwise find them stored, 30 s later)."""
        for r in records:
            if self._unsaved.get(r.key) is r:
                del self._unsaved[r.key]

    async def persist(self, extra: Callable[[sqlite3.Connection], Any] | None = None) -> Any:
        """Store what is unsaved: rows of decided bans, ends of ended ones (and ``extra``, run
        first in the same transaction). Raises the store's error; the state stays in memory
        for the next try."""
        if not self._unsaved and not self._ended and extra is None:
            return None
        unsaved = list(self._unsaved.items())
        ended = list(self._ended.items())

        def go(conn: sqlite3.Connection) -> Any:
            with self.store.transaction():
                out = extra(conn) if extra is not None else None
                for _key, r in unsaved:
                    self._write(conn, r)
                for (net, created), (when, by) in ended:
                    bans_store.lift_ban(conn, net, created, when, by)
                return out

        out = await self.store.run(go)
        for key, r in unsaved:
            if self._unsaved.get(key) is r:
                del self._unsaved[key]
        for key, value in ended:
            if self._ended.get(key) == value and key not in self._unsaved:
                del self._ended[key]
        if self.last_store_error is not None:
            self.log.info("bans stored again")
            self.last_store_error = None
        return out

    async def _persist_quietly(self, what: str) -> None:
        try:
            await self.persist()
        except Exception as exc:
            self._store_error(str(exc), what)

    def _store_error(self, error: str, what: str) -> None:
        self.store_errors += 1
        if error != self.last_store_error:  # once per distinct error, not every 30 s
            self.log.error(
                what + "; the firewall action stands, will retry",
                error=error,
                unsaved=len(self._unsaved),
            )
        self.last_store_error = error

    # ------------------------------------------------------------------ enforcing (loop)

    async def enforce(self, records: list[BanRecord]) -> str | None:
        """Mark bans active and push them to the firewall in one batch. Errors are logged
        (and retried by the maintenance loop), never raised; the error text is returned."""
        if not records:
            return None
        now = time.time()
        for r in records:
            old = self.active.get(r.net)
            if old is not None and old is not r:
                self._ended[old.key] = (now, "replaced")
            self.active[r.net] = r
        self.banned_total += len(records)
        self.bans_by_reason.update(r.rule for r in records)
        for r in records:
            self.log.warning(
                "banning" if not r.dry_run else "DRY RUN: would ban",
                net=r.net,
                rule=r.rule,
                seconds=int(r.expires - r.created),
                offence=r.offence,
                reason=r.reason,
            )
        return await self._push([r for r in records if not r.dry_run])

    async def _push(self, records: list[BanRecord]) -> str | None:
        if not records:
            return None
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
                    return str(exc)
            except BackendError as exc:
                self._error(exc, "ban failed; will retry")
                return str(exc)
        return None

    def _error(self, exc: Exception, what: str) -> None:
        self.errors += 1
        self.last_error = str(exc)
        self.log.error(what, backend=getattr(self.backend, "name", "?"), error=str(exc))

    # ------------------------------------------------------------------ operator / expiry

    def _operator_net(self, net_text: str) -> IPNetwork:
        try:
            net, notes = parse_network(net_text)
        except ValueError as exc:
            raise BanRefused(str(exc)) from None
        for note in notes:
            self.log.info("address normalised", given=net_text[:100], note=note)
        return net

    async def ban(
        self,
        net_text: str,
        seconds: int | None,
        reason: str,
        by: str = "operator",
        force: bool = False,
    ) -> BanRecord:
        """An operator's ban (``sshmonitor ban``): the allowlist still applies, and a network
        wider than ``response.max_ban_prefix`` needs ``force``. Firewall first, then the
        store; raises :class:`BanRefused` or :class:`NotCompleted` (one line each)."""
        net = self._operator_net(net_text)
        key = str(net)
        refused = self._refusal(net, force)
        if refused is not None:
            self.log.info("ban refused", net=key, by=by, why=refused[1])
            raise BanRefused(refused[1])
        if seconds is not None and seconds < 1:
            raise BanRefused(f"a ban lasts at least 1s, not {seconds}s")
        now = time.time()
        rec = self._new(key, by, reason, now, seconds)
        fw_error = await self.enforce([rec])

        def lift_older(conn: sqlite3.Connection) -> None:
            bans_store.lift_others(conn, key, now, now)

        try:
            await self.persist(lift_older)
        except Exception as exc:
            self._store_error(str(exc), "cannot store an operator ban")
            raise NotCompleted(
                f"banned {key} in the firewall, but the store cannot record it ({exc}); "
                "it is stored when the store can write (a restart before that loses it)"
            ) from None
        if fw_error is not None:
            raise NotCompleted(
                f"recorded the ban on {key}, but the firewall refused it ({fw_error}); "
                f"retrying every {MAINTENANCE_EVERY:g}s"
            )
        return rec

    def covered_by(self, net_text: str) -> str | None:
        """The active ban that contains ``net_text`` without being it (``unban`` of one
        address of a banned /64), if any."""
        try:
            net, _ = parse_network(net_text)
        except ValueError:
            return None
        for key in self.active:
            b = ipaddress.ip_network(key)
            if b.version == net.version and b != net and net.subnet_of(b):  # type: ignore[arg-type]
                return key
        return None

    async def unban(self, net_text: str, by: str = "operator") -> bool:
        """Lift a ban now: firewall first, then the store. True if one was active; an
        address that was not banned is not an error (logged at INFO)."""
        net = self._operator_net(net_text)
        key = str(net)
        now = time.time()
        rec = self.active.pop(key, None)
        if rec is not None:
            self._ended[rec.key] = (now, by)
        fw_error: str | None = None
        if not self.dry_run and self.cfg.enabled:
            in_firewall = rec is not None and not rec.dry_run
            if not in_firewall:  # our records say nothing: a leftover in the set goes too
                with contextlib.suppress(BackendError):
                    in_firewall = net in await self.backend.list()
            if in_firewall:
                try:
                    async with self._lock:
                        await self.backend.unban([net])
                except BackendError as exc:
                    self._error(exc, "unban failed")
                    fw_error = str(exc)

        def lift_all(conn: sqlite3.Connection) -> int:
            return bans_store.lift_net(conn, key, now, by)

        try:
            stored = await self.persist(lift_all) or 0
        except Exception as exc:
            self._store_error(str(exc), "cannot store an unban")
            if rec is None:
                raise NotCompleted(f"cannot check the store for a ban on {key}: {exc}") from None
            raise NotCompleted(
                f"unbanned {key} in the firewall, but the store cannot record it ({exc}); "
                "a restart before it can may bring the ban back"
            ) from None
        if fw_error is not None:
            raise NotCompleted(f"the firewall refused to unban {key}: {fw_error}")
        if rec is None and not stored:
            self.log.info("not banned; nothing to lift", net=key, by=by)
            return False
        self.log.warning("unbanned", net=key, by=by)
        return True

    async def expire(self) -> list[str]:
        """Mark ended bans inactive (and unban them where the firewall does not expire).
        A store failure is logged, not raised: the ends are stored later."""
        now = time.time()
        ended = [r for r in self.active.values() if r.expires <= now]
        if not ended:
            return []
        for r in ended:
            self.active.pop(r.net, None)
            self._ended[r.key] = (r.expires, "expired")
        if not getattr(self.backend, "expires", True):
            with contextlib.suppress(BackendError):
                await self.backend.unban(
                    [ipaddress.ip_network(r.net) for r in ended if not r.dry_run]
                )
        await self._persist_quietly("cannot store expired bans")
        return [r.net for r in ended]

    # ------------------------------------------------------------------ fleet (docs/fleet.md)

    async def fleet_ban(
        self,
        net_text: str,
        expires: float,
        reason: str,
        origin: str,
        created: float | None = None,
    ) -> bool:
        """Apply a ban another host of the fleet decided, if this host's own rules let it:
        its allowlist, its never-bannable networks and its ``max_ban_prefix`` (no ``--force``
        from afar: a compromised peer must not get a /8 banned fleet-wide), for at most
        this host's ``bantime_max`` from when the fleet's ban began (``created``; None: now).
        Recorded with rule ``fleet``, so it is never published back. True if applied or
        lengthened."""
        try:
            net, _ = parse_network(net_text)
        except ValueError:
            self.log.error("fleet ban of something that is not an address", net=net_text[:100])
            return False
        refused = refusal(net, self.policy, force=False)
        if refused is not None:
            self.log.info(
                "not applying a fleet ban here", net=str(net), origin=origin, why=refused.reason
            )
            return False
        key, now = str(net), time.time()
        if not math.isfinite(expires):
            return False
        # bantime_max counts from when the fleet's ban began: counted from *now*, a running
        # fleet ban would be found "shorter" than the fleet's at every reconcile and slide on
        # forever.
        began = now if created is None or not math.isfinite(created) else min(created, now)
        expires = min(expires, began + float(self.cfg.bantime_max))
        if expires - now < 1:
            return False
        current = self.active.get(key)
        if current is not None and current.expires >= expires - 1:
            return False
        offence = max(1, self._offences.get(key, 0))
        rec = self._new(key, "fleet", f"{origin}: {reason}"[:200], now, int(expires - now), offence)
        await self.enforce([rec])
        await self._persist_quietly("cannot store a fleet ban")
        return True

    async def fleet_unban(self, net_text: str, origin: str) -> bool:
        """An operator lifted this network's ban on another host: lift it here too."""
        try:
            return await self.unban(net_text, by="fleet")
        except OperatorError as exc:
            self.log.error(
                "cannot apply a fleet unban", net=net_text[:100], origin=origin, error=str(exc)
            )
            return False

    async def fleet_reconcile(
        self,
        active: dict[str, tuple[float, str, str, float]],
        unbanned: dict[str, float],
    ) -> dict[str, list[str]]:
        """Bring this host in step with the fleet, both ways: the fleet's running bans
        (net → (expires, reason, origin host, created)) applied here; fleet bans here the fleet no
        longer has, and bans an operator lifted elsewhere after they began (net → when),
        lifted; the firewall set holding exactly the running bans. Returns what it changed."""
        out: dict[str, list[str]] = {
            "added": [],
            "lifted": [],
            "firewall_readded": [],
            "firewall_removed": [],
        }
        active = {_spelled(net): v for net, v in active.items()}
        unbanned = {_spelled(net): v for net, v in unbanned.items()}
        for net, (expires, reason, origin, created) in active.items():
            try:
                if await self.fleet_ban(net, expires, reason, origin, created):
                    out["added"].append(net)
            except Exception as exc:  # one odd entry must not stop the repair of the rest
                self.log.error(
                    "cannot apply a fleet ban", net=net[:100], origin=origin, error=str(exc)[:200]
                )
        for net, rec in list(self.active.items()):
            lifted_at = unbanned.get(net)
            gone = rec.rule == "fleet" and net not in active
            lift = gone or (lifted_at is not None and rec.created < lifted_at)
            if lift and await self.fleet_unban(net, "fleet"):
                out["lifted"].append(net)
        restored = await self._setup_and_restore(initial=False)
        if restored is None:
            return out
        present, missing = restored
        out["firewall_readded"] = [r.net for r in missing]
        wanted = {ipaddress.ip_network(r.net) for r in self.active.values() if not r.dry_run}
        extra = [n for n in present if n not in wanted]
        if extra:
            try:
                async with self._lock:
                    await self.backend.unban(extra)
                out["firewall_removed"] = [str(n) for n in extra]
            except BackendError as exc:
                self._error(exc, "cannot remove stale firewall entries")
        return out

    def apply_config(self, cfg: Any) -> None:
        self.cfg = cfg.response
        self.policy = Policy.from_config(cfg)

    # ------------------------------------------------------------------ control commands

    def commands(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]:
        """The control-socket commands this stage answers (``sshmonitor bans/ban/unban``)."""
        return {"bans": self._cmd_bans, "ban": self._cmd_ban, "unban": self._cmd_unban}

    async def _cmd_bans(self, _req: dict[str, Any]) -> dict[str, Any]:
        await self.expire()
        return {
            "bans": self.list_active(),
            "dry_run": self.dry_run,
            "backend": self.describe()["backend"],
        }

    async def _cmd_ban(self, req: dict[str, Any]) -> dict[str, Any]:
        net = req.get("net")
        if not isinstance(net, str):
            raise BanRefused("ban: 'net' (an address or network) is missing")
        try:
            seconds = int(req["seconds"]) if req.get("seconds") else None
        except (TypeError, ValueError):
            raise BanRefused(f"ban: bad 'seconds' {req.get('seconds')!r}") from None
        rec = await self.ban(
            net,
            seconds,
            str(req.get("reason") or "operator ban")[:200],
            force=bool(req.get("force", False)),
        )
        return {
            "net": rec.net,
            "until": rec.expires,
            "seconds": int(rec.expires - rec.created),
            "offence": rec.offence,
            "dry_run": rec.dry_run,
        }

    async def _cmd_unban(self, req: dict[str, Any]) -> dict[str, Any]:
        net = req.get("net")
        if not isinstance(net, str):
            raise BanRefused("unban: 'net' (an address or network) is missing")
        unbanned = await self.unban(net)  # raises BanRefused on a bad address
        return {
            "unbanned": unbanned,
            "net": str(parse_network(net)[0]),
            "covered_by": None if unbanned else self.covered_by(net),
        }

    def alert_info(self, findings: Iterable[Finding]) -> dict[str, dict[str, Any]]:
        """What an alert says about the ban its finding caused: {net: {net, until, offence,
        dry_run}} for the findings whose network is banned now, and {net: {net, allowlisted}}
        (why, one line) for those that asked for a ban the allowlist kept from being placed."""
        out: dict[str, dict[str, Any]] = {}
        for f in findings:
            r = self.active.get(f.ban_net or "")
            if r is not None:
                out[r.net] = {
                    "net": r.net,
                    "until": r.expires,
                    "offence": r.offence,
                    "dry_run": r.dry_run,
                }
                continue
            # The policy again, pure and with no history: a finding is only "allowlisted"
            # when the allowlist alone stood between it and a ban.
            d = decide(f, MemoryHistory(), self.policy, time.time())
            if isinstance(d, Skip) and d.kind == "allowlisted" and f.ban_net:
                out[f.ban_net] = {"net": d.net or f.ban_net, "allowlisted": d.reason}
        return out

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
                "stored": r.key not in self._unsaved,
                # Bans of this network so far (in this mode, dry run or not), this one included.
                "times_banned": max(r.offence, self._offences.get(r.net, 0)),
            }
            for r in sorted(self.active.values(), key=lambda r: r.created)
        ]

    def metrics(self) -> list[Sample]:
        backend = str(getattr(self.backend, "name", "?"))
        return [
            sample("sshmonitor_bans_active", len(self.active), backend=backend),
            *(sample("sshmonitor_bans_total", n, reason=r)
              for r, n in sorted(self.bans_by_reason.items())),
            sample("sshmonitor_backend_errors_total", self.errors, backend=backend),
        ]

    def describe(self) -> dict[str, Any]:
        n = len(self.active)
        unsaved = len(self._unsaved)
        warnings = []
        if self.last_store_error is not None:
            warnings.append(
                f"{unsaved} ban(s) not yet stored (in the firewall all the same): "
                f"{self.last_store_error}"
            )
        return {
            "name": "bans",
            "summary": f"{n} ban{'s' if n != 1 else ''} active"
            + (" (dry run)" if self.dry_run else "")
            + (f"; backend error: {self.last_error}" if self.last_error else ""),
            "stats": {
                "active": n,
                "banned_total": self.banned_total,
                "skipped_allowlisted": self.skipped_allowlisted,
                "skipped_refused": self.skipped_refused,
                "backend_errors": self.errors,
                "store_errors": self.store_errors,
                "unsaved": unsaved,
            },
            "backend": getattr(self.backend, "name", "?"),
            "last_error": self.last_error,
            "warnings": warnings,
        }

    def healthy(self) -> bool:
        return self._task is None or not self._task.done()
