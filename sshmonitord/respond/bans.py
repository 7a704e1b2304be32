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

Escalation follows fail2ban's ``bantime.increment``: the n-th ban of a network lasts
``bantime × factor^(n-1)``, capped at ``bantime_max``. The count of past bans per network is
loaded from the store at start and kept in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from .. import log
from ..addresses import (
    IPNetwork,
    OperatorError,
    needs_force,
    never_bannable,
    normalize_network,
    parse_network,
)
from ..config import ResponseConfig
from ..events import Action, Finding
from .backend import Backend, BackendError, NotSetUp

ALWAYS_ALLOWED = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
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


def ban_seconds(cfg: ResponseConfig, offence: int) -> int:
    """How long the offence-th ban (1-based) of a network lasts."""
    seconds = float(cfg.bantime) * (cfg.bantime_factor ** max(0, offence - 1))
    return int(min(seconds, float(cfg.bantime_max)))


def allowlisted(net: IPNetwork, allow: Iterable[IPNetwork]) -> IPNetwork | None:
    """The allowlist entry covering (or overlapping) ``net``, if any. ``net`` is normalised
    first (``::ffff:127.0.0.1`` is loopback); the entries are, by config and by
    :class:`BanManager`."""
    net = normalize_network(net)
    n = int(net.network_address)
    for a in (*ALWAYS_ALLOWED, *allow):
        # CIDR blocks overlap only when one holds the other: equal in the shorter prefix.
        if a.version == net.version:
            shift = net.max_prefixlen - min(a.prefixlen, net.prefixlen)
            if (int(a.network_address) ^ n) >> shift == 0:
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
_LIFT = "UPDATE bans SET active = 0, lifted = ?, lifted_by = ? "


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
        self.allow = tuple(normalize_network(a) for a in allowlist)
        self.dry_run = dry_run or cfg.dry_run
        self.active: dict[str, BanRecord] = {}
        self.last_error: str | None = None
        self.last_store_error: str | None = None
        self.errors = 0
        self.store_errors = 0
        self.banned_total = 0
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
        rows = [
            _row(r)
            for r in conn.execute(
                f"SELECT {_COLS} FROM bans WHERE active = 1 AND expires > ? ORDER BY created",
                (now,),
            )
        ]
        offences = {
            str(net): int(n)
            for net, n in conn.execute(
                "SELECT net, COUNT(*) FROM bans WHERE dry_run = ? GROUP BY net",
                (int(self.dry_run),),
            )
        }
        active: dict[str, BanRecord] = {}
        lifted: list[tuple[str, str]] = []
        renamed: list[tuple[str, str]] = []
        updates: list[tuple[str, tuple[Any, ...]]] = []
        for r in rows:
            try:
                net = normalize_network(ipaddress.ip_network(r.net, strict=False))
            except ValueError:
                lifted.append((r.net, "not an address"))
                updates.append((_LIFT + "WHERE id = ?", (now, "invalid", r.id)))
                continue
            refused = self._refusal(net, force=True)
            if refused is not None:
                lifted.append((r.net, refused[1]))
                updates.append((_LIFT + "WHERE id = ?", (now, "allowlisted", r.id)))
                self._firewall_leftovers.append(net)
                continue
            key = str(net)
            if key != r.net:
                renamed.append((r.net, key))
                updates.append(("UPDATE bans SET net = ? WHERE id = ?", (key, r.id)))
                offences[key] = offences.get(key, 0) + offences.pop(r.net, 0)
                r = replace(r, net=key)
            old = active.get(key)
            if old is not None:  # two spellings of one network: keep the longer ban
                loser, r = (old, r) if old.expires <= r.expires else (r, old)
                updates.append((_LIFT + "WHERE id = ?", (now, "replaced", loser.id)))
            active[key] = r
        error = None
        try:
            with self.store.transaction():
                conn.execute(
                    _LIFT + "WHERE active = 1 AND expires <= ?", (now, "expired", now)
                )  # lifted = now is close enough for rows found expired at start
                for sql, params in updates:
                    conn.execute(sql, params)
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

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(MAINTENANCE_EVERY)
            try:
                await self.expire()
                await self.persist()
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
        if self._firewall_leftovers:
            leftovers, self._firewall_leftovers = self._firewall_leftovers, []
            with contextlib.suppress(BackendError):
                await self.backend.unban(leftovers)
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

    # ------------------------------------------------------------------ deciding (no store)

    def _refusal(self, net: IPNetwork, force: bool) -> tuple[str, str] | None:
        """Why ``net`` must not be banned, as (kind, message), kind one of never, allowlisted,
        force; None: it may be. ``net`` is normalised."""
        why = never_bannable(net)
        if why is not None:
            return "never", why
        hit = allowlisted(net, self.allow)
        if hit is not None:
            what = "loopback, always allowed" if hit in ALWAYS_ALLOWED else "in the allowlist"
            if net.prefixlen >= hit.prefixlen:  # inside it
                return "allowlisted", f"{net} is allowlisted ({hit}, {what})"
            return "allowlisted", f"{net} covers the allowlisted {hit} ({what})"
        if not force:
            m = self.cfg.max_ban_prefix
            why = needs_force(net, m.ipv4, m.ipv6)
            if why is not None:
                return "force", why
        return None

    def _new(self, net: str, rule: str, reason: str, now: float, seconds: int | None) -> BanRecord:
        offence = self._offences.get(net, 0) + 1
        self._offences[net] = offence
        secs = seconds if seconds is not None else ban_seconds(self.cfg, offence)
        rec = BanRecord(0, net, rule, reason, offence, now, now + secs, self.dry_run)
        self._unsaved[rec.key] = rec
        return rec

    def decide(self, findings: Iterable[Finding], now: float) -> list[BanRecord]:
        """The bans the findings ask for, ready for :meth:`enforce` at once. No store access:
        a full disk must not stop a ban. Their rows are written by :meth:`record`."""
        out: list[BanRecord] = []
        if not self.cfg.enabled:
            return out
        batch: set[str] = set()
        for f in findings:
            if f.ban_net is None or f.action not in (Action.BAN, Action.BOTH):
                continue
            try:
                net = normalize_network(ipaddress.ip_network(f.ban_net, strict=False))
            except ValueError:
                self.log.error("finding with an invalid ban_net", net=f.ban_net, rule=f.rule)
                continue
            key = str(net)
            if key in self.active or key in batch:
                continue  # already banned: in-flight failures of a banned address
            refused = self._refusal(net, force=False)
            if refused is not None:
                if refused[0] == "allowlisted":
                    self.skipped_allowlisted += 1
                else:
                    self.skipped_refused += 1
                self.log.info("not banning", net=key, rule=f.rule, why=refused[1])
                continue
            batch.add(key)
            out.append(self._new(key, f.rule, f.summary, now, None))
        return out

    # ------------------------------------------------------------------ storing (store thread)

    def record(self, conn: sqlite3.Connection, records: Iterable[BanRecord]) -> None:
        """Write the rows of decided bans, inside the caller's transaction on the store
        thread. Safe to call again after a rollback, or after :meth:`persist` stored them
        already (a row is written once). A ban that ended meanwhile is written ended."""
        for r in records:
            self._write(conn, r)

    def _write(self, conn: sqlite3.Connection, r: BanRecord) -> None:
        row = conn.execute(
            "SELECT id, active FROM bans WHERE net = ? AND created = ? AND dry_run = ?",
            (r.net, r.created, int(r.dry_run)),
        ).fetchone()
        ended = self._ended.get(r.key)
        if ended is None and r.expires <= time.time() and self.active.get(r.net) is not r:
            ended = (r.expires, "expired")
        if row is not None:
            if ended is not None and row[1]:
                conn.execute(_LIFT + "WHERE id = ?", (*ended, row[0]))
            return
        lifted, by = ended if ended is not None else (None, None)
        conn.execute(
            "INSERT INTO bans(net, rule, reason, offence, created, expires, active, lifted, "
            "lifted_by, dry_run) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                r.net,
                r.rule,
                r.reason,
                r.offence,
                r.created,
                r.expires,
                0 if ended is not None else 1,
                lifted,
                by,
                int(r.dry_run),
            ),
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
                    conn.execute(
                        _LIFT + "WHERE net = ? AND created = ? AND active = 1",
                        (when, by, net, created),
                    )
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
            conn.execute(
                _LIFT + "WHERE net = ? AND active = 1 AND created != ?",
                (now, "replaced", key, now),
            )

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
            return int(
                conn.execute(_LIFT + "WHERE net = ? AND active = 1", (now, by, key)).rowcount
            )

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

    def apply_config(self, cfg: Any) -> None:
        self.cfg = cfg.response
        self.allow = tuple(normalize_network(a) for a in cfg.allowlist)

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
            }
            for r in sorted(self.active.values(), key=lambda r: r.created)
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
