"""Ship this host's store to the fleet's PostgreSQL: the local store is the outbox.

Every record the fleet keeps (store/outbox.py) has an outbox entry with a sequence number the
store never reuses. The replicator reads entries after the fleet's confirmed position, reads
their rows as they are now, and writes them — tagged ``(host, seq_base + seq)`` — together with
the new confirmed position in **one** PostgreSQL transaction, ``ON CONFLICT DO NOTHING``: a
commit lost with the connection is shipped again and stored once, so the fleet gets each
record exactly once whatever fails when. The confirmed position lives in the fleet's
``hosts`` row; the local outbox is pruned up to it now and then.

While the database is unreachable the host detects, bans and alerts as before; entries pile
up in the outbox (on disk, bounded only by the disk and the store's retention) and are sent
when the database is back. A host whose local store is new (reinstalled, the file lost)
gets a new ``seq_base``: the fleet's numbers for it keep growing.

Bans the host decided (or an operator placed or lifted on it) are also written to the
fleet's ban log in the same transaction, which notifies the other hosts (store/fleet/bansync.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import math
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...aio import wait_event
from .. import outbox
from . import schema as fs
from .worker import RETRY_MAX, Worker

POLL = 0.2  # seconds between looks at the outbox while idle: a ban ships within this
BATCH = 2000  # outbox entries per transaction
PRUNE_EVERY = 30.0
STATUS_EVERY = 10.0  # seconds between "still here" updates of an idle host's row
PEER_WINDOW = 300  # a host heard from within this many seconds counts as a peer
FLEET_RULE = "fleet"  # the rule of a ban that came from the fleet: never published back


class NotRegistered(Exception):
    """This host may not write into the fleet database (one line, for operators)."""


def clean_text(value: Any) -> Any:
    """A string PostgreSQL's text takes: NUL (which text and jsonb refuse) and anything
    that cannot be UTF-8 become U+FFFD. Attacker-controlled text must never stop the
    replicator: a record it could not store would hold up every record behind it."""
    if not isinstance(value, str):
        return value
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def _clean_json(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # NaN and infinities: JSON has none, jsonb refuses them
    if isinstance(value, list):
        return [_clean_json(v) for v in value]
    if isinstance(value, dict):
        return {clean_text(str(k)): _clean_json(v) for k, v in value.items()}
    return value


def clean_json(text: Any) -> str | None:
    """A JSON text jsonb takes (``\\u0000`` is refused by jsonb)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return json.dumps(clean_text(str(text)))  # not JSON: keep it, as a string
    return json.dumps(_clean_json(value), ensure_ascii=False, allow_nan=False)


def clean_inet(text: Any) -> str | None:
    if text is None:
        return None
    try:
        return (
            str(ipaddress.ip_network(str(text), strict=False))
            if "/" in str(text)
            else str(ipaddress.ip_address(str(text)))
        )
    except ValueError:
        return None


def _converter(tp: str) -> Callable[[Any], Any]:
    if tp.startswith("jsonb"):
        return clean_json
    if tp.startswith(("inet", "cidr")):
        return clean_inet
    if tp.startswith("text"):
        return clean_text
    return lambda v: v


def _placeholder(tp: str) -> str:
    for name in ("jsonb", "inet", "cidr"):
        if tp.startswith(name):
            return f"%s::{name}"
    return "%s"


@dataclass(frozen=True)
class _TableSql:
    insert: str
    local: list[str]
    convert: list[Callable[[Any], Any]]


def _table_sql(table: str) -> _TableSql:
    cols = fs.COLUMNS[table]
    names = ", ".join(["host", "seq", *[f for _l, f, _t in cols]])
    marks = ", ".join(["%s", "%s", *[_placeholder(t) for _l, _f, t in cols]])
    return _TableSql(
        f"INSERT INTO {fs.SCHEMA}.{table} ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING",
        [local for local, _f, _t in cols],
        [_converter(t) for _l, _f, t in cols],
    )


# By the local table an outbox entry names.
TABLE_SQL = {fs.LOCAL_TABLE.get(t, t): _table_sql(t) for t in fs.SHIPPED_TABLES}

INSERT_BAN_LOG = (
    f"INSERT INTO {fs.SCHEMA}.ban_log (host, action, net, rule, reason, created, expires, origin) "
    "VALUES (%s, %s, %s::cidr, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)


def ban_log_entries(host: str, row: dict[str, Any], now: float) -> list[tuple[Any, ...]]:
    """What a version of a local ban record says to the fleet: a ban this host decided (not
    one it got from the fleet, not a dry run, still running), or an operator's unban.
    ``origin`` (the local ban id) makes a second version of the same ban say nothing new."""
    if row.get("dry_run"):
        return []
    net = clean_inet(row.get("net"))
    if net is None:
        return []
    out: list[tuple[Any, ...]] = []
    rule = str(row.get("rule") or "")
    if rule != FLEET_RULE and (row.get("expires") or 0) > now:
        out.append(
            (
                host,
                "ban",
                net,
                clean_text(rule),
                clean_text(str(row.get("reason") or ""))[:500],
                row.get("created"),
                row.get("expires"),
                row["id"],
            )
        )
    if row.get("lifted_by") == "operator" and not row.get("active"):
        out.append(
            (
                host,
                "unban",
                net,
                "operator",
                "lifted by an operator",
                row.get("lifted"),
                None,
                row["id"],
            )
        )
    return out


def _payload(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@dataclass
class ReplicatorStats:
    shipped: int = 0
    transactions: int = 0
    skipped_rows: int = 0  # rows PostgreSQL refused even alone (logged)
    missing_rows: int = 0  # entries whose row was deleted before it shipped (retention)
    last_shipped: float = 0.0  # wall clock
    backlog: int = 0
    bans_published: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Replicator(Worker):
    """Ships the outbox of the store at ``db`` to the fleet database, as host ``host``."""

    name = "fleet-replicator"
    down_message = "fleet database unavailable; keeping records in the local outbox"
    up_message = "fleet database connected"

    def __init__(
        self,
        db: str | Path,
        conninfo: str,
        host: str,
        version: str,
        prune: Callable[[int], Any] | None = None,
        batch: int = BATCH,
        poll: float = POLL,
    ) -> None:
        super().__init__(conninfo, host)
        self.db = Path(db)
        self.version = version
        self.prune_cb = prune  # async callable(upto_local_seq): prune via the writer thread
        self.batch = batch
        self.poll = poll
        self.stats = ReplicatorStats()
        self.peers = 0  # other hosts heard from in the last PEER_WINDOW seconds
        self._peers_at = 0.0
        self.base = 0  # fleet seq = base + local seq
        self.confirmed = 0  # local seq the fleet has
        self._pruned = 0
        self._status_at = 0.0
        self._caught_up = time.time()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleet-outbox")
        self._read: sqlite3.Connection | None = None
        self._wake = asyncio.Event()

    # ------------------------------------------------------------------ local side

    def _local(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        if self._read is None:
            self._read = sqlite3.connect(
                f"file:{self.db}?mode=ro", uri=True, timeout=5, check_same_thread=False
            )
        return fn(self._read)

    async def local(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._local, fn)

    def _gather(
        self, after: int
    ) -> tuple[list[tuple[int, str, int, str | None]], dict[str, dict[int, Any]]]:
        entries: list[tuple[int, str, int, str | None]] = self._local(
            functools.partial(outbox.pending, after=after, limit=self.batch)
        )
        by_table: dict[str, set[int]] = {}
        for _seq, tbl, rid, payload in entries:
            if payload is None:
                by_table.setdefault(tbl, set()).add(rid)
        rows = {
            tbl: self._local(functools.partial(outbox.rows, table=tbl, ids=ids))
            for tbl, ids in by_table.items()
        }
        return entries, rows

    # ------------------------------------------------------------------ lifecycle

    def wake(self) -> None:
        self._wake.set()

    async def stop(self, drain: float = 2.0) -> None:
        """Ship what can be shipped within ``drain`` seconds, then stop."""
        await super().stop()
        if drain > 0:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ship_all(), drain)
        if self._read is not None:
            read, self._read = self._read, None
            await asyncio.get_running_loop().run_in_executor(self._pool, read.close)
        self._pool.shutdown(wait=False)

    async def ship_all(self) -> int:
        """Connect and ship until the outbox is empty (tests, ``stop``); returns records."""
        import psycopg

        total = 0
        async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
            await self._register(conn)
            while True:
                n = await self._ship_once(conn)
                total += n
                if n == 0:
                    return total

    async def serve(self, *conns: Any) -> None:
        (conn,) = conns
        await self._register(conn)
        self.up(confirmed=self.confirmed)
        last_prune = 0.0
        while True:
            n = await self._ship_once(conn)
            if time.monotonic() - last_prune > PRUNE_EVERY:
                last_prune = time.monotonic()
                await self._prune()
            if time.monotonic() - self._peers_at > STATUS_EVERY:
                await self._count_peers(conn)
            if n >= self.batch:
                continue
            self._wake.clear()
            await wait_event(self._wake, self.poll)

    def retry_after(self, exc: Exception, delay: float) -> float:
        # Not registered (or another host's role), a schema of another version: the
        # operator's to fix, no hurry.
        return RETRY_MAX if isinstance(exc, (NotRegistered, fs.FleetSchemaError)) else delay

    # ------------------------------------------------------------------ the fleet side

    async def _register(self, conn: Any) -> None:
        """Find this host's row (or create it, when this role may): where shipping resumes."""
        store_id = await self.local(outbox.read_store_id)
        if store_id is None:
            raise NotRegistered("the local store has no outbox yet (fleet not enabled in it)")
        async with conn.cursor() as cur:
            # On every (re)connect, not only at start: `fleet init` may have migrated the
            # schema past this version while we were away.
            await cur.execute(fs.VERSION_SQL)
            fs.check_version(fs.parse_version(await cur.fetchone()))
            await cur.execute(
                f"SELECT store_id, seq_base, shipped_seq, role = current_user "
                f"FROM {fs.SCHEMA}.hosts WHERE name = %s",
                (self.host,),
            )
            row = await cur.fetchone()
            if row is None:
                try:
                    await cur.execute(
                        f"INSERT INTO {fs.SCHEMA}.hosts (name, role, store_id, first_contact) "
                        "VALUES (%s, current_user, %s, now())",
                        (self.host, store_id),
                    )
                except Exception as exc:
                    raise NotRegistered(
                        f"host {self.host!r} is not registered in the fleet database and this "
                        "role may not register it: run the SQL printed by "
                        f"`sshmonitor fleet init --host {self.host}` ({type(exc).__name__})"
                    ) from None
                row = (store_id, 0, 0, True)
            old_store, base, shipped, mine = row
            if not mine:
                raise NotRegistered(
                    f"host {self.host!r} belongs to another database role in the fleet; "
                    "this role may not write as it (check fleet.host and the role)"
                )
            base, shipped = int(base), int(shipped)
            confirmed = max(0, shipped - base)
            if old_store != store_id:
                if old_store is not None:
                    self.log.warning(
                        "this host's local store is new to the fleet; numbering its records "
                        "after the old store's",
                        host=self.host,
                        seq_base=shipped,
                    )
                base, confirmed = shipped, 0
            # The same store shipped under another name (fleet.host changed): what it
            # shipped there is not shipped again under this one.
            await cur.execute(
                f"SELECT name, shipped_seq - seq_base FROM {fs.SCHEMA}.hosts "
                "WHERE store_id = %s AND name <> %s ORDER BY 2 DESC LIMIT 1",
                (store_id, self.host),
            )
            other = await cur.fetchone()
            if other is not None and int(other[1]) > confirmed:
                self.log.warning(
                    "this store shipped as another host before; going on from there",
                    host=self.host,
                    was=str(other[0]),
                )
                confirmed = int(other[1])
            # A store restored from a backup or snapshot numbers its outbox from where the
            # snapshot was: new records would get numbers the fleet already confirmed, and
            # never ship. Ship all that is still in the outbox under fresh numbers instead
            # (a few records twice rather than any lost).
            _pending, top = await self.local(lambda c: outbox.backlog(c, 0))
            if top < confirmed:
                self.log.warning(
                    "this host's store is older than what the fleet has from it (restored "
                    "from a backup?); shipping its outbox again under new numbers",
                    host=self.host,
                    store_top=top,
                    fleet_has=confirmed,
                )
                base, confirmed = base + confirmed, 0
            if (old_store, int(row[1]), int(row[2])) != (store_id, base, base + confirmed):
                await cur.execute(
                    f"UPDATE {fs.SCHEMA}.hosts SET store_id = %s, seq_base = %s, "
                    "shipped_seq = greatest(shipped_seq, %s), "
                    "first_contact = coalesce(first_contact, now()) WHERE name = %s",
                    (store_id, base, base + confirmed, self.host),
                )
        self.base = base
        self.confirmed = confirmed

    async def _ship_once(self, conn: Any) -> int:
        """One transaction: up to ``batch`` entries, their bans, the new position."""
        loop = asyncio.get_running_loop()
        entries, rows = await loop.run_in_executor(self._pool, self._gather, self.confirmed)
        if not entries:
            self.stats.backlog = 0
            if time.monotonic() - self._status_at > STATUS_EVERY:
                await self._status(conn, 0)
            return 0
        now = time.time()
        per_table: dict[str, list[tuple[Any, ...]]] = {}
        bans: list[tuple[Any, ...]] = []
        missing = 0
        for seq, tbl, rid, payload in entries:
            row = rows.get(tbl, {}).get(rid) if payload is None else _payload(payload)
            if row is None:
                missing += 1
                continue
            t = TABLE_SQL[tbl]
            values = [conv(row.get(name)) for name, conv in zip(t.local, t.convert, strict=True)]
            per_table.setdefault(tbl, []).append((self.host, self.base + seq, *values))
            if tbl == "bans":
                bans.extend(ban_log_entries(self.host, row, now))
        last = entries[-1][0]
        async with conn.transaction(), conn.cursor() as cur:
            for tbl, values in per_table.items():
                await self._insert(conn, cur, TABLE_SQL[tbl].insert, values)
            if bans:
                await self._insert(conn, cur, INSERT_BAN_LOG, bans)
            pending, _top = await self.local(lambda c: outbox.backlog(c, last))
            await cur.execute(
                f"UPDATE {fs.SCHEMA}.hosts SET shipped_seq = greatest(shipped_seq, %s), "
                "last_contact = now(), version = %s, backlog = %s, lag = %s WHERE name = %s",
                (self.base + last, self.version, pending, self._lag(pending), self.host),
            )
            if cur.rowcount != 1:
                raise NotRegistered(f"cannot update host {self.host!r}'s row in the fleet")
        self.confirmed = last
        self.stats.shipped += len(entries) - missing
        self.stats.missing_rows += missing
        self.stats.transactions += 1
        self.stats.bans_published += len(bans)
        self.stats.last_shipped = time.time()
        self.stats.backlog = pending
        self._status_at = time.monotonic()
        return len(entries)

    async def _insert(self, conn: Any, cur: Any, sql: str, values: list[tuple[Any, ...]]) -> None:
        import psycopg

        try:
            async with conn.transaction():
                await cur.executemany(sql, values)
            return
        except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError) as exc:
            if isinstance(exc, psycopg.errors.InsufficientPrivilege):
                raise
            first_error = exc
        # A row PostgreSQL refuses whatever we do: find it, log it, ship the rest.
        for value in values:
            try:
                async with conn.transaction():
                    await cur.execute(sql, value)
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                self.stats.skipped_rows += 1
                self.log.error(
                    "the fleet database refuses a record; skipping it",
                    host=self.host,
                    seq=value[1],
                    error=str(exc).splitlines()[0],
                )
        del first_error

    def _lag(self, pending: int) -> float:
        """Seconds the oldest record still to ship has waited, roughly: since the last
        transaction that left nothing behind."""
        if not pending:
            self._caught_up = time.time()
            return 0.0
        return max(0.0, time.time() - self._caught_up)

    async def _count_peers(self, conn: Any) -> None:
        self._peers_at = time.monotonic()
        async with conn.cursor() as cur:
            await cur.execute(
                f"SELECT count(*) FROM {fs.SCHEMA}.hosts WHERE name <> %s "
                "AND last_contact > now() - make_interval(secs => %s)",
                (self.host, PEER_WINDOW),
            )
            row = await cur.fetchone()
        self.peers = int(row[0]) if row else 0

    async def _status(self, conn: Any, pending: int) -> None:
        self._status_at = time.monotonic()
        async with conn.cursor() as cur:
            await cur.execute(
                f"UPDATE {fs.SCHEMA}.hosts SET last_contact = now(), version = %s, backlog = %s "
                "WHERE name = %s",
                (self.version, pending, self.host),
            )

    async def _prune(self) -> None:
        if self.prune_cb is None or self.confirmed <= self._pruned:
            return
        upto = self.confirmed
        try:
            await self.prune_cb(upto)
            self._pruned = upto
        except Exception as exc:  # the store is busy or full: the next round prunes
            self.log.debug("cannot prune the outbox yet", error=str(exc))

    def describe(self) -> dict[str, Any]:
        s = self.stats
        return {
            "connected": self.connected,
            "host": self.host,
            "shipped": s.shipped,
            "backlog": s.backlog,
            "bans_published": s.bans_published,
            "skipped_rows": s.skipped_rows,
            "missing_rows": s.missing_rows,
            "errors": self.errors,
            "last_error": self.last_error,
            "last_shipped": s.last_shipped or None,
        }
