"""The alert queue with a real store: throttle, digest, cap, retries, spool across restarts.
(Real SMTP and HTTP servers: test_channels.py and test_alerts_e2e.py.)"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import time
from datetime import UTC, datetime

from sshmonitord import config
from sshmonitord.events import Action, Event, Finding, Kind, Severity
from sshmonitord.notify.alert import DeliveryError, Message, make_id
from sshmonitord.notify.channels import BaseChannel
from sshmonitord.notify.queue import AlertQueue
from sshmonitord.store import Store


class Recorder(BaseChannel):
    type = "recorder"

    def __init__(self, name: str = "rec", fail: list | None = None, **kw) -> None:
        super().__init__(name=name, min_severity="info", **kw)
        self.messages = []
        self.fail = list(fail or [])  # DeliveryErrors to raise first, in order
        self.attempts: list[float] = []

    async def send(self, message):
        self.attempts.append(time.monotonic())
        if self.fail:
            raise self.fail.pop(0)
        self.messages.append(message)
        return "250 ok"

    async def close(self):
        return None


def finding(rule="bruteforce", subject="203.0.113.5/32", sev=Severity.HIGH, raw="x"):
    ev = Event(
        datetime.now(UTC),
        "h",
        "sshd",
        1,
        Kind.AUTH_FAILURE,
        "root",
        ipaddress.ip_address("203.0.113.5"),
        22,
        "password",
        raw=raw,
    )
    return Finding(rule, sev, subject, (ev,), Action.ALERT, f"{rule} on {subject}")


def cfg(**kw) -> config.NotifyConfig:
    base = dict(
        throttle=config.Duration(3600),
        digest_window=config.Duration(0.3),
        hourly_cap=30,
        retry_initial=config.Duration(0.2),
        retry_max=config.Duration(1.0),
    )
    base.update(kw)
    return dataclasses.replace(config.NotifyConfig(), **base)


async def _queue(tmp_path, channels, **kw) -> AlertQueue:
    store = Store(tmp_path / "state")
    await asyncio.to_thread(store.open)
    q = AlertQueue(store, cfg(**kw), channels, "web1")
    await q.start()
    return q


async def _until(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return False


def test_digest_throttle_and_fold(tmp_path):
    async def go():
        rec = Recorder()
        q = await _queue(tmp_path, [rec], throttle=config.Duration(1.0))
        await q.submit([finding(), finding(subject="198.51.100.1/32"), finding()])
        assert await _until(lambda: rec.messages)
        await asyncio.sleep(0.5)
        assert len(rec.messages) == 1  # one digest for the window
        m = rec.messages[0]
        assert [a.subject for a in m.alerts] == ["203.0.113.5/32", "198.51.100.1/32"]
        assert q.stats["folded"] == 1
        # After the throttle, the next one carries the folded count.
        await asyncio.sleep(0.8)
        await q.submit([finding()])
        assert await _until(lambda: len(rec.messages) == 2)
        a = rec.messages[1].alerts[0]
        assert a.count == 2 and a.folded_since is not None
        assert "2" in rec.messages[1].text
        await q.stop()
        q.store.close()

    asyncio.run(go())


def test_critical_is_not_held_by_a_lower_severity_throttle(tmp_path):
    async def go():
        rec = Recorder()
        q = await _queue(tmp_path, [rec], digest_window=config.Duration(60))
        await q.submit([finding(rule="x", sev=Severity.WARNING)])
        await q.submit([finding(rule="x", sev=Severity.CRITICAL)])
        # The critical one goes out at once, without waiting for the 60 s digest window,
        # and takes the waiting warning along.
        assert await _until(lambda: rec.messages, timeout=5)
        sevs = [a.severity for a in rec.messages[0].alerts]
        assert sevs[0] == "critical"
        await q.stop()
        q.store.close()

    asyncio.run(go())


def test_retries_with_backoff_then_delivers_exactly_once(tmp_path):
    async def go():
        rec = Recorder(
            fail=[
                DeliveryError("500 boom"),
                DeliveryError("429 slow down", retry_after=0.6),
                DeliveryError("timeout"),
            ]
        )
        q = await _queue(tmp_path, [rec])
        await q.submit([finding()])
        assert await _until(lambda: rec.messages, timeout=15)
        await asyncio.sleep(1.0)
        assert len(rec.messages) == 1 and len(rec.attempts) == 4
        gaps = [b - a for a, b in zip(rec.attempts, rec.attempts[1:], strict=False)]
        # 0.2 s (±20 %), then at least Retry-After 0.6 s, then 0.8 s (±20 %).
        assert 0.12 < gaps[0] < 0.6
        assert gaps[1] >= 0.55
        assert 0.5 < gaps[2] < 1.3
        assert q.stats["delivery_failures"] == 3
        await q.stop()
        q.store.close()

    asyncio.run(go())


def test_permanent_failure_drops_and_counts(tmp_path):
    async def go():
        rec = Recorder(fail=[DeliveryError("535 bad credentials", permanent=True)])
        q = await _queue(tmp_path, [rec])
        await q.submit([finding()])
        assert await _until(lambda: q.stats["dropped_permanent"] == 1)
        await asyncio.sleep(0.5)
        assert rec.messages == []
        n = await q.store.run(lambda c: c.execute("SELECT COUNT(*) FROM alert_spool").fetchone())
        assert n[0] == 0
        await q.stop()
        q.store.close()

    asyncio.run(go())


def test_spool_survives_restart(tmp_path):
    async def go():
        down = Recorder(fail=[DeliveryError("connection refused")] * 100)
        q = await _queue(tmp_path, [down], retry_initial=config.Duration(30))
        await q.submit([finding(), finding(subject="198.51.100.1/32")])
        assert await _until(lambda: q.stats["delivery_failures"] >= 1)
        await q.stop()
        q.store.close()
        # A new process: the pending alerts go out once the channel works.
        up = Recorder()
        q2 = await _queue(tmp_path, [up])
        # The spooled rows still wait for their retry time; a working channel after a
        # restart should not wait 30 s, so the queue retries pending rows at start.
        assert await _until(lambda: up.messages, timeout=5)
        assert sorted(a.subject for a in up.messages[0].alerts) == [
            "198.51.100.1/32",
            "203.0.113.5/32",
        ]
        await asyncio.sleep(0.5)
        assert len(up.messages) == 1
        await q2.stop()
        q2.store.close()

    asyncio.run(go())


def test_flood_is_bounded_with_correct_counts(tmp_path):
    async def go():
        rec = Recorder()
        q = await _queue(tmp_path, [rec], hourly_cap=5, digest_window=config.Duration(0.2))
        total = 10_000
        for i in range(total):
            await q.submit([finding(subject=f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}/32")])
            if i % 500 == 0:
                await asyncio.sleep(0.05)
        assert await _until(lambda: q.stats["alerts"] == total, timeout=30)
        await asyncio.sleep(1.5)
        assert len(rec.messages) <= 5
        delivered = sum(len(m.alerts) for m in rec.messages)
        assert delivered + q.stats["suppressed_by_cap"] == total
        # The next message after the cap tells how many were suppressed.
        q.sent_times["rec"].clear()
        await q.submit([finding(subject="192.0.2.1/32", sev=Severity.CRITICAL)])
        assert await _until(
            lambda: len(rec.messages) > 5 or any(m.suppressed for m in rec.messages)
        )
        last = rec.messages[-1]
        assert last.suppressed == q.stats["suppressed_by_cap"]
        await q.stop()
        q.store.close()

    asyncio.run(go())


HOLD_LOCK = """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
c.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
c.execute("ROLLBACK")
"""


def test_a_foreign_lock_delays_alerts_but_loses_none_and_keeps_the_throttle(tmp_path):
    """Another process holds the database's write lock for 8 s (longer than the store's 5 s
    busy timeout): every alert is still spooled and delivered once, and the throttle folds
    only what a successful write recorded (no repeats held back by a write that failed)."""
    import subprocess
    import sys

    async def go():
        rec = Recorder()
        q = await _queue(tmp_path, [rec], digest_window=config.Duration(0.1))
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(q.store.path), "8"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "locked"
            subjects = [f"198.51.100.{i}/32" for i in range(1, 41)]
            for s in subjects:
                await q.submit([finding(subject=s)])
            assert await _until(lambda: q.stats["spool_failures"] >= 1, timeout=15)
            assert not rec.messages  # nothing could be spooled, so nothing went out
            assert q.throttle == {}, "throttle advanced by a write that failed"
            assert await _until(
                lambda: sum(len(m.alerts) for m in rec.messages) >= 40, timeout=30
            )
            got = sorted(a.subject for m in rec.messages for a in m.alerts)
            assert got == sorted(subjects)  # each once: none lost, none doubled
            assert q.stats["spooled"] == 40 and q.stats["folded"] == 0
        finally:
            holder.kill()
            holder.wait()
        await q.stop()
        q.store.close()

    asyncio.run(go())


def test_a_retried_digest_is_the_same_message_even_when_more_alerts_arrived(tmp_path):
    """A message that failed (or may have got through before a crash) goes out again with the
    same members and so the same id; alerts raised meanwhile go in a message of their own."""

    async def go():
        tried: list[str] = []

        class Tracing(Recorder):
            async def send(self, message):
                tried.append(message.id)
                return await super().send(message)

        rec = Tracing(fail=[DeliveryError("500 boom")])
        # The newcomer's own window (2 s) ends after the retry (~0.2 s): unpinned, it would
        # ride along in the retry and change the retried message's id.
        q = await _queue(tmp_path, [rec], digest_window=config.Duration(2.0))
        await q.submit([finding(subject="198.51.100.1/32"), finding(subject="198.51.100.2/32")])
        assert await _until(lambda: len(rec.attempts) == 1, timeout=5)
        await q.submit([finding(subject="198.51.100.3/32")])
        assert await _until(lambda: len(rec.messages) == 2, timeout=15)
        by_members = {tuple(a.subject for a in m.alerts): m for m in rec.messages}
        retried = by_members[("198.51.100.1/32", "198.51.100.2/32")]
        alone = by_members[("198.51.100.3/32",)]
        assert retried.id == tried[0]  # the failed attempt's id, sent again
        assert alone.id != retried.id
        rows = await q.store.run(lambda c: c.execute("SELECT COUNT(*) FROM alert_spool").fetchone())
        assert rows[0] == 0
        await q.stop()
        q.store.close()

    asyncio.run(go())


def test_a_prepared_message_goes_out_as_it_is_beside_the_alerts(tmp_path):
    """A report in the spool is never folded into a digest, never held by the hourly cap, and
    spooled twice under one id (a catch-up after a crash) it is sent once."""

    async def go():
        rec = Recorder()
        q = await _queue(tmp_path, [rec], hourly_cap=1, digest_window=config.Duration(0.2))
        report = Message(
            subject="report web1", text="the text", html="<p>the html</p>", alerts=[],
            host="web1", id=make_id("report/1", "web1", 1.0, 2.0),
        )  # fmt: skip
        await q.submit([finding()])
        assert await _until(lambda: len(rec.messages) == 1)  # the cap (1/hour) is now used
        assert await q.spool_message(report, ["rec", "no-such-channel"]) == ["rec"]
        assert await q.spool_message(report, ["rec"]) == ["rec"]
        await q.submit([finding(subject="198.51.100.1/32", sev=Severity.WARNING)])
        assert await _until(lambda: len(rec.messages) == 2)
        await asyncio.sleep(0.6)
        assert len(rec.messages) == 2 and q.stats["suppressed_by_cap"] == 1
        got = rec.messages[1]
        assert (got.id, got.subject, got.text, got.html) == (
            report.id, "report web1", "the text", "<p>the html</p>"
        )  # fmt: skip
        assert got.alerts == []
        n = await q.store.run(lambda c: c.execute("SELECT COUNT(*) FROM alert_spool").fetchone())
        assert n[0] == 0
        await q.stop()
        q.store.close()

    asyncio.run(go())


def test_a_stop_arriving_as_a_send_finishes_still_stops_delivery(tmp_path):
    """stop() cancels the delivery loop; a cancellation arriving just as a channel's send
    finished was swallowed by asyncio.wait_for before Python 3.12 (CPython gh-86296): the
    loop went on, and stop(), which waits for it, never returned (seen once in CI). The
    send here makes that timing certain: it queues the cancel before it returns."""

    class CancelsAsItSends(Recorder):
        async def send(self, message):
            flusher = next(t for t in asyncio.all_tasks() if t.get_name() == "alerts-flush")
            asyncio.get_running_loop().call_soon(flusher.cancel)
            return await super().send(message)

    async def go():
        rec = CancelsAsItSends()
        q = await _queue(tmp_path, [rec])
        await q.submit([finding()])
        assert await _until(lambda: rec.messages)
        flusher = next(t for t in q._tasks if t.get_name() == "alerts-flush")
        assert await _until(flusher.done, 2.0), "the delivery loop ignored its cancellation"
        assert flusher.cancelled()
        async with asyncio.timeout(5):
            await q.stop()
        q.store.close()

    asyncio.run(go())
