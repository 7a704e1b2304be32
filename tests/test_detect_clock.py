"""Lines stamped in the future cannot make detection forget.

Detection forgets what is past every window: its counters are swept, its memory of
connections and of what fired expires, all in the stream's own time, so that replay and the
daemon are the same code. But any local user can write an sshd-looking line into auth.log
(``logger -t sshd``) with any stamp: an RFC 3339 one may say 2099, a classic one up to two
days ahead of the clock. If such a line's time drove a clean-up, everything genuine would
look older than every window and go: an attacker's failures, a connection already counted,
a finding that makes its rule count afresh. So the time a clean-up runs at is capped by the
latest time a genuine line can carry: the wall clock in the daemon, the file's
modification time in replay (``Engine.set_clock``). Forged lines still count for the
addresses they name, at the time they say; they only stop moving the clean-ups.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sshmonitord import config
from sshmonitord.detect import engine as engine_mod
from sshmonitord.detect.engine import Engine, History
from sshmonitord.events import Finding, Line
from sshmonitord.parse import Parser
from sshmonitord.pipeline import Pipeline
from sshmonitord.replay import Replay, summary_dict
from sshmonitord.store import Store

ATTACKER = "203.0.113.5"
# More counted failures than the counters take between two sweeps (65,536 operations).
FORGED = 70_000


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def fail(t: datetime, pid: int, ip: str, user: str = "root") -> str:
    return f"{iso(t)} web1 sshd[{pid}]: Failed password for {user} from {ip} port 4000 ssh2"


def forged_address(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def attack_with_forgery(now: datetime, forged: int) -> list[str]:
    """Four failures an hour ago, ``forged`` lines stamped two days ahead (each a new
    address and name, as a flood of forgeries would be), then the attacker's fifth."""
    t = now - timedelta(hours=1)
    lines = [fail(t + timedelta(seconds=k), 100 + k, ATTACKER) for k in range(4)]
    ahead = now + timedelta(days=2)
    lines += [fail(ahead, 1000 + i, forged_address(i), f"x{i}") for i in range(forged)]
    lines.append(fail(t + timedelta(seconds=60), 200, ATTACKER))
    return lines


def attacker_rules(findings: list[Finding] | list[dict[str, object]]) -> list[str]:
    out = []
    for f in findings:
        rule, subject = (f.rule, f.subject) if isinstance(f, Finding) else (f["rule"], f["subject"])
        if str(subject).startswith(ATTACKER):
            out.append(str(rule))
    return out


async def _daemon(state: Path, lines: list[str]) -> list[Finding]:
    store = Store(state)
    await asyncio.to_thread(store.open)
    found: list[Finding] = []

    async def on_findings(fs: list[Finding]) -> None:
        found.extend(fs)

    engine = Engine(config.DetectionConfig(), History(since=0.0), zone=UTC)
    pipe = Pipeline(store, Parser(zone=UTC), engine, on_findings=on_findings)
    await pipe.start()
    try:
        for i in range(0, len(lines), 5000):
            await pipe.emit([Line(text, "test") for text in lines[i : i + 5000]])
        assert await pipe.drain(120)
    finally:
        await pipe.stop()
        store.close()
    return found


@pytest.mark.parametrize("forged", [0, FORGED], ids=["no-forgery", "forged-future-flood"])
def test_the_daemon_keeps_an_attackers_count_through_a_forged_future_flood(
    tmp_path: Path, forged: int
) -> None:
    found = asyncio.run(_daemon(tmp_path / "state", attack_with_forgery(datetime.now(UTC), forged)))
    assert attacker_rules(found) == ["bruteforce"]


@pytest.mark.parametrize("jobs", [1, 2], ids=["one-process", "parse-process"])
def test_replay_keeps_an_attackers_count_through_a_forged_future_flood(
    tmp_path: Path, jobs: int
) -> None:
    """Replay caps the clean-ups at the file's modification time: no genuine line of a log
    was written after it."""
    now = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
    log = tmp_path / "auth.log"
    log.write_text("".join(x + "\n" for x in attack_with_forgery(now, FORGED)))
    os.utime(log, (now.timestamp(), now.timestamp()))
    r = Replay(UTC, config=config.Config(), jobs=jobs)
    for _ in r.events([str(log)]):
        pass
    assert attacker_rules(summary_dict(r)["findings"]) == ["bruteforce"]


def _engine(clock: datetime, history: History | None = None) -> tuple[Engine, Parser]:
    e = Engine(config.DetectionConfig(), history or History(since=0.0), zone=UTC)
    e.set_clock(clock.timestamp())
    return e, Parser(zone=UTC, reference=clock)


def test_a_connection_already_counted_is_not_counted_again_after_forged_future_lines() -> None:
    """Connections expire every 1,024 counted failures; forged ones two days ahead must not
    make detection forget a genuine connection whose follow-up line is still to come."""
    t = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
    e, p = _engine(t + timedelta(seconds=10))

    def feed(text: str) -> None:
        ev = p.parse_text(text)
        assert ev is not None
        e.feed(ev)

    feed(fail(t, 500, ATTACKER))
    ahead = t + timedelta(days=2)
    for i in range(2 * (engine_mod.SESSION_EXPIRY_EVERY + 1)):
        feed(fail(ahead, 10_000 + i, forged_address(i), f"x{i}"))
    feed(
        f"{iso(t + timedelta(seconds=5))} web1 sshd[500]: Connection closed by authenticating "
        f"user root {ATTACKER} port 4000 [preauth]"
    )
    key = int.from_bytes(bytes(int(x) for x in ATTACKER.split(".")))
    assert e.by_ip.count(key, 0) + e.by_ip_scan.count(key, 0) == 1


def test_a_rule_does_not_fire_again_early_after_forged_future_findings() -> None:
    """What fired is cleaned up when that memory doubles; forged findings two days ahead
    must not make it forget that bruteforce fired on the attacker a moment ago."""
    t = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
    e, p = _engine(t + timedelta(seconds=30))
    found: list[Finding] = []

    def feed(text: str) -> None:
        ev = p.parse_text(text)
        assert ev is not None
        found.extend(e.feed(ev))

    for k in range(5):
        feed(fail(t + timedelta(seconds=k), 100 + k, ATTACKER))
    assert attacker_rules(found) == ["bruteforce"]
    ahead = t + timedelta(days=2)
    for i in range(engine_mod.FIRED_MIN + 1):  # enough findings to set off a clean-up
        for k in range(5):
            feed(fail(ahead, 10_000 + 5 * i + k, forged_address(i), f"x{i}"))
    assert len(found) > engine_mod.FIRED_MIN
    feed(fail(t + timedelta(seconds=20), 300, ATTACKER))
    assert attacker_rules(found) == ["bruteforce"]  # not a second one: it needs five more


def test_a_spray_is_still_seen_through_a_forged_future_flood() -> None:
    """The distinct counters (names per address, addresses per name) sweep the same way."""
    t = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
    e, p = _engine(t + timedelta(seconds=60))
    found: list[Finding] = []

    def feed(text: str) -> None:
        ev = p.parse_text(text)
        assert ev is not None
        found.extend(e.feed(ev))

    spray = [f"198.51.100.{i}" for i in range(1, 11)]
    for i, ip in enumerate(spray[:-1]):
        feed(fail(t + timedelta(seconds=i), 100 + i, ip, "oracle"))
    ahead = t + timedelta(days=2)
    for i in range(FORGED):
        feed(fail(ahead, 10_000 + i, forged_address(i), f"x{i}"))
    feed(fail(t + timedelta(seconds=30), 300, spray[-1], "oracle"))
    assert [f.rule for f in found if f.subject == "user oracle"] == ["distributed"]


def test_a_forged_first_login_in_the_future_does_not_prolong_learning() -> None:
    """new_source and new_key stay quiet for ``learning`` after the first login ever
    recorded. On a fresh host that first login may be a forged one stamped ahead: the
    learning period must still start no later than the clock."""
    t = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
    e, p = _engine(t, History())  # a fresh host: no login recorded yet
    learning = float(e.rules.new_source.learning)

    def login(at: datetime, user: str, ip: str) -> list[Finding]:
        ev = p.parse_text(
            f"{iso(at)} web1 sshd[77]: Accepted password for {user} from {ip} port 4000 ssh2"
        )
        assert ev is not None
        return e.feed(ev)

    login(t + timedelta(days=2), "mallory", "192.0.2.50")  # forged, two days ahead
    later = t + timedelta(seconds=learning + 3600)
    e.set_clock(later.timestamp())
    login(later, "alice", "198.51.100.20")  # her first login: learning is over, so it is new
    found = login(later + timedelta(minutes=1), "alice", "203.0.113.80")
    assert [f.rule for f in found] == ["new_source"]
