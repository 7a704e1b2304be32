"""The fleet's rules run on one host at a time: the holder of the leader lease.

The lease is a PostgreSQL session advisory lock taken on a connection of its own: it is held
exactly as long as that connection lives. When the leader dies (kill -9, power, network:
TCP keepalives notice within ~25 s, a closed socket at once) the server drops the lock and
the next host that tries — every ``TRY_EVERY`` seconds — takes over.

Each round the leader reads the attempt tallies of the window (store/fleet SQL), runs the
pure rules of detect/fleet.py, and for each new finding writes, in one transaction: the
fleet finding, the fleet ban (ban log: every host applies it through its ban follower) and
the claim on its alert. Subjects already found within the window are read from the fleet's
findings first, so a new leader never repeats one. The alert is then handed to this host's
alert queue (its durable spool) and the claim marked delivered; a claim whose lease ran out
undelivered (the leader died in between) is taken over by the next leader, which sends it:
at least once, with a stable alert id that makes a rare duplicate recognisable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ...config import Config, FleetConfig
from ...events import FleetFinding, Tally
from . import schema as fs
from .worker import Worker

TRY_EVERY = 5.0  # seconds between a follower's tries at the lease, and between the rounds
ALERT_LEASE = 300  # seconds a host has to hand a claimed alert to its spool
LOCK_KEY = fs.LEADER_LOCK

# Only subjects that could reach the rule (enough attempts on enough hosts) come back, with
# one row per host: the pure rule (detect/fleet.py) decides on exactly those.
TALLIES = f"""
WITH t AS (
    SELECT subject, host, sum(greatest(attempts, 0))::bigint AS n, min(first) AS a,
           max(last) AS b
    FROM {fs.SCHEMA}.attempt_tallies
    WHERE kind = %s AND minute >= %s AND last >= %s AND minute <= %s
    GROUP BY subject, host
), c AS (
    SELECT subject FROM t GROUP BY subject HAVING count(*) >= %s AND sum(n) >= %s
)
SELECT t.subject, t.host, t.n, t.a, t.b FROM t JOIN c USING (subject)
"""
EXPIRE = (
    f"DELETE FROM {fs.SCHEMA}.attempt_tallies WHERE minute < extract(epoch FROM now()) - 8 * 86400"
)
# A finding dated ahead of now (written before schema version 2 refused them) silences
# nothing.
SEEN = (
    f"SELECT subject FROM {fs.SCHEMA}.fleet_findings WHERE rule = %s AND ts >= %s AND ts <= %s"
)
# Claims another host left undelivered past their lease; only well-formed alert ids (a
# claim is refused otherwise since schema version 2; older rows may be anything).
TAKE_OVER = f"""
UPDATE {fs.SCHEMA}.alert_claims SET host = %s, claimed_at = now(),
       lease_until = now() + make_interval(secs => %s)
WHERE delivered IS NULL AND lease_until < now()
  AND alert_id ~ '^fleet-[a-z_]{{1,64}}-[0-9]{{1,18}}$'
RETURNING alert_id
"""


def alert_id(rule: str, finding_id: int) -> str:
    return f"fleet-{rule}-{finding_id}"


class Leader(Worker):
    """Tries for the lease; while holding it, runs the fleet's rules every round."""

    name = "fleet-leader"
    down_message = "fleet rules paused"

    def __init__(
        self,
        conninfo: str,
        host: str,
        cfg: Config,
        on_findings: Callable[[list[FleetFinding]], Awaitable[Any]],
        evaluate: Callable[[str, list[Tally], FleetConfig, set[str]], list[FleetFinding]],
        every: float = TRY_EVERY,
    ) -> None:
        super().__init__(conninfo, host)
        self.evaluate = evaluate  # detect/fleet.py's rules, given by the daemon (pure)
        self.cfg = cfg
        self.on_findings = on_findings
        self.every = every
        self.leader = False
        self.findings = 0
        self.rounds = 0
        self.takeovers = 0

    def retry_after(self, exc: Exception, delay: float) -> float:
        return self.every

    def lost(self) -> None:
        if self.leader:
            self.log.warning("no longer the fleet's leader (connection lost)", host=self.host)
        self.leader = False

    async def stop(self) -> None:
        await super().stop()
        self.leader = False

    async def serve(self, *conns: Any) -> None:
        (conn,) = conns
        self.up()
        while True:
            if not self.leader and await self.lead(conn):
                self.log.info("this host now runs the fleet's rules", host=self.host)
            if self.leader:
                await self.round(conn)
            await asyncio.sleep(self.every)

    async def lead(self, conn: Any) -> bool:
        """Try for the lease on ``conn``; the database lets only its holder write findings."""
        async with conn.cursor() as cur:
            await cur.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (LOCK_KEY,))
            row = await cur.fetchone()
        self.leader = row is not None and bool(row[0])
        return self.leader

    async def round(self, conn: Any, now: float | None = None) -> list[FleetFinding]:
        """One pass of the fleet's rules (public for tests and the bench)."""
        now = time.time() if now is None else now
        fc = self.cfg.fleet
        found: list[FleetFinding] = []
        async with conn.cursor() as cur:
            for rule, c, kind in (
                ("fleet_correlate", fc.correlate, "address"),
                ("fleet_spray", fc.spray, "user"),
            ):
                if not c.enabled:
                    continue
                since = now - float(c.window)
                await cur.execute(
                    TALLIES, (kind, since - 60, since, now, c.min_hosts, c.threshold)
                )
                tallies = [
                    Tally(str(s), str(h), int(n), float(a), float(b))
                    for s, h, n, a, b in await cur.fetchall()
                ]
                await cur.execute(SEEN, (rule, since, now + 60))
                seen = {str(r[0]) for r in await cur.fetchall()}
                found.extend(self.evaluate(rule, tallies, fc, seen))
            if self.rounds % 720 == 0:  # hourly at the default pace
                await cur.execute(EXPIRE)
        self.rounds += 1
        sent: list[tuple[str, FleetFinding]] = []
        for f in found:
            try:
                aid = await self._record(conn, f, now)
            except Exception as exc:
                if conn.closed:
                    raise
                # One finding the database refuses must not hold up the others (they are
                # found again next round; this one too, once whatever refused it is gone).
                self.log.error("cannot record a fleet finding", subject=f.subject,
                               rule=f.rule, error=str(exc).splitlines()[0][:200])
                found = [g for g in found if g is not f]
                continue
            sent.append((aid, f))
        # New findings first: nothing a take-over meets may hold them up.
        try:
            sent.extend(await self._take_over(conn))
        except Exception as exc:
            if conn.closed:
                raise
            self.log.error("cannot take over undelivered fleet alerts", error=str(exc)[:200])
        if sent:
            await self.on_findings([f for _aid, f in sent])
            async with conn.cursor() as cur:
                await cur.executemany(
                    f"UPDATE {fs.SCHEMA}.alert_claims SET delivered = now() "
                    "WHERE alert_id = %s AND host = %s",
                    [(aid, self.host) for aid, _f in sent],
                )
        self.findings += len(found)
        return found

    async def _record(self, conn: Any, f: FleetFinding, now: float) -> str:
        bantime = float(self.cfg.response.bantime)
        async with conn.transaction(), conn.cursor() as cur:
            await cur.execute(
                f"INSERT INTO {fs.SCHEMA}.fleet_findings "
                "(host, rule, subject, ts, severity, summary, attempts, hosts) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    self.host,
                    f.rule,
                    f.subject,
                    min(f.last, now),
                    f.severity,
                    f.summary,
                    f.attempts,
                    list(f.hosts),
                ),
            )
            fid = int((await cur.fetchone())[0])
            if f.ban and self.cfg.response.enabled:
                await cur.execute(
                    f"INSERT INTO {fs.SCHEMA}.ban_log "
                    "(host, action, net, rule, reason, created, expires) "
                    "VALUES (%s, 'ban', %s::cidr, %s, %s, %s, %s)",
                    (self.host, f.subject, f.rule, f.summary[:500], now, now + bantime),
                )
            aid = alert_id(f.rule, fid)
            await cur.execute(
                f"INSERT INTO {fs.SCHEMA}.alert_claims (alert_id, host, lease_until) "
                "VALUES (%s, %s, now() + make_interval(secs => %s))",
                (aid, self.host, ALERT_LEASE),
            )
        self.log.warning("fleet finding", rule=f.rule, subject=f.subject, summary=f.summary)
        return aid

    async def _take_over(self, conn: Any) -> list[tuple[str, FleetFinding]]:
        """Alerts another host claimed and never delivered (it died): ours now."""
        async with conn.cursor() as cur:
            await cur.execute(TAKE_OVER, (self.host, ALERT_LEASE))
            ids = [str(r[0]) for r in await cur.fetchall()]
            out: list[tuple[str, FleetFinding]] = []
            for aid in ids:
                fid = int(aid.rsplit("-", 1)[1])
                await cur.execute(
                    f"SELECT rule, severity, subject, attempts, hosts, ts, summary "
                    f"FROM {fs.SCHEMA}.fleet_findings WHERE id = %s",
                    (fid,),
                )
                row = await cur.fetchone()
                if row is None:
                    continue
                rule, sev, subject, attempts, hosts, ts, summary = row
                self.takeovers += 1
                self.log.warning("delivering a fleet alert another host claimed", alert=aid)
                out.append(
                    (
                        aid,
                        FleetFinding(
                            rule,
                            sev,
                            subject,
                            int(attempts),
                            tuple(hosts),
                            ts,
                            ts,
                            summary,
                            rule == "fleet_correlate",
                        ),
                    )
                )
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "leader": self.leader,
            "rounds": self.rounds,
            "findings": self.findings,
            "takeovers": self.takeovers,
            "last_error": self.last_error,
        }
