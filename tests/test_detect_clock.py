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

import detectfeed
import pytest
from detectfeed import address

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


def attack_with_forgery(now: datetime, forged: int) -> list[str]:
    """Four failures an hour ago, ``forged`` lines stamped two days ahead (each a new
    address and name, as a flood of forgeries would be), then the attacker's fifth."""
    t = now - timedelta(hours=1)
    lines = [fail(t + timedelta(seconds=k), 100 + k, ATTACKER) for k in range(4)]
    ahead = now + timedelta(days=2)
    lines += [fail(ahead, 1000 + i, address(i), f"x{i}") for i in range(forged)]
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


class Stream(detectfeed.Stream):
    """With the engine's clock set, as the pipeline sets it."""

    def __init__(self, clock: datetime, history: History | None = None) -> None:
        super().__init__(clock, clock, history)

    def login(self, at: datetime, user: str, ip: str) -> list[Finding]:
        return self.feed(
            f"{iso(at)} web1 sshd[77]: Accepted password for {user} from {ip} port 4000 ssh2"
        )


def test_a_connection_already_counted_is_not_counted_again_after_forged_future_lines() -> None:
    """Connections expire every 1,024 counted failures; forged ones two days ahead must not
    make detection forget a genuine connection whose follow-up line is still to come."""
    t = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
    s = Stream(t + timedelta(seconds=10))

    s.feed(fail(t, 500, ATTACKER))
    ahead = t + timedelta(days=2)
    for i in range(2 * (engine_mod.SESSION_EXPIRY_EVERY + 1)):
        s.feed(fail(ahead, 10_000 + i, address(i), f"x{i}"))
    s.feed(
        f"{iso(t + timedelta(seconds=5))} web1 sshd[500]: Connection closed by authenticating "
        f"user root {ATTACKER} port 4000 [preauth]"
    )
    assert s.failures(ATTACKER) == 1


def test_a_rule_does_not_fire_again_early_after_forged_future_findings() -> None:
    """What fired is cleaned up when that memory doubles; forged findings two days ahead
    must not make it forget that bruteforce fired on the attacker a moment ago."""
    t = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
    s = Stream(t + timedelta(seconds=30))

    for k in range(5):
        s.feed(fail(t + timedelta(seconds=k), 100 + k, ATTACKER))
    assert attacker_rules(s.found) == ["bruteforce"]
    ahead = t + timedelta(days=2)
    for i in range(engine_mod.FIRED_MIN + 1):  # enough findings to set off a clean-up
        for k in range(5):
            s.feed(fail(ahead, 10_000 + 5 * i + k, address(i), f"x{i}"))
    assert len(s.found) > engine_mod.FIRED_MIN
    s.feed(fail(t + timedelta(seconds=20), 300, ATTACKER))
    assert attacker_rules(s.found) == ["bruteforce"]  # not a second one: it needs five more


def test_a_spray_is_still_seen_through_a_forged_future_flood() -> None:
    """The distinct counters (names per address, addresses per name) sweep the same way."""
    t = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
    s = Stream(t + timedelta(seconds=60))

    spray = [f"198.51.100.{i}" for i in range(1, 11)]
    for i, ip in enumerate(spray[:-1]):
        s.feed(fail(t + timedelta(seconds=i), 100 + i, ip, "oracle"))
    ahead = t + timedelta(days=2)
    for i in range(FORGED):
        s.feed(fail(ahead, 10_000 + i, address(i), f"x{i}"))
    s.feed(fail(t + timedelta(seconds=30), 300, spray[-1], "oracle"))
    assert [f.rule for f in s.found if f.subject == "user oracle"] == ["distributed"]


def test_a_forged_first_login_in_the_future_does_not_prolong_learning() -> None:
    """new_source and new_key stay quiet for ``learning`` after the first login ever
    recorded. On a fresh host that first login may be a forged one stamped ahead: the
    learning period must still start no later than the clock."""
    t = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
    s = Stream(t, History())  # a fresh host: no login recorded yet
    e = s.engine
    learning = float(e.rules.new_source.learning)

    s.login(t + timedelta(days=2), "mallory", "192.0.2.50")  # forged, two days ahead
    later = t + timedelta(seconds=learning + 3600)
    e.set_clock(later.timestamp())
    s.login(later, "alice", "198.51.100.20")  # her first login: learning is over, so it is new
    assert [f.rule for f in s.login(later + timedelta(minutes=1), "alice", "203.0.113.80")] == [
        "new_source"
    ]


# What detection remembers with a time well after the event at hand is not believed
# (FUTURE_SKEW). Found by an attack pass on the caps above: the clean-ups were capped, the
# memories were not.


def test_a_forged_future_finding_does_not_keep_its_rule_from_counting() -> None:
    """A rule counts a subject afresh after it fired on it. A finding stamped a year ahead
    (five forged lines naming the attacker, or ten naming forged addresses against one user)
    would keep it from counting the genuine attack until then."""
    t = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
    s = Stream(t + timedelta(minutes=5))

    year = t + timedelta(days=365)
    for k in range(5):
        s.feed(fail(year, 100 + k, ATTACKER))
    for i in range(10):
        s.feed(fail(year, 200 + i, f"192.0.2.{i + 1}", "oracle"))
    forged = [(f.rule, f.subject) for f in s.found]
    assert ("bruteforce", f"{ATTACKER}/32") in forged and ("distributed", "user oracle") in forged
    s.found.clear()
    for k in range(5):
        s.feed(fail(t + timedelta(seconds=k), 300 + k, ATTACKER))
    for i in range(10):
        s.feed(fail(t + timedelta(seconds=10 + i), 400 + i, f"198.51.100.{i + 1}", "oracle"))
    genuine = [(f.rule, f.subject) for f in s.found]
    assert ("bruteforce", f"{ATTACKER}/32") in genuine
    assert ("distributed", "user oracle") in genuine


def test_forged_future_pam_lines_on_the_next_pids_do_not_hide_their_failures() -> None:
    """sshd's own "PAM: ..." line is restated by the connection's Failed line, which is then
    not counted again. Forged on the pids sshd will hand out next and stamped a year ahead,
    they would make every genuine Failed line on those pids a restatement."""
    t = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
    at = t + timedelta(hours=2)
    s = Stream(at + timedelta(minutes=5))
    pids = range(4242, 4252)

    def attack() -> list[str]:
        s.found.clear()
        for c, pid in enumerate(pids):  # ten connections, three guesses each
            for g in range(3):
                s.feed(fail(at + timedelta(seconds=10 * c + g), pid, ATTACKER))
        return attacker_rules(s.found)

    unforged = attack()
    assert "bruteforce" in unforged
    s = Stream(at + timedelta(minutes=5))
    for pid in pids:
        for j in range(12):
            s.feed(
                f"{iso(t + timedelta(days=365))} web1 sshd[{pid}]: error: PAM: Authentication "
                f"failure for u{pid}_{j} from 10.{j}.{pid >> 8 & 255}.{pid & 255}"
            )
    assert attack() == unforged


def test_forged_future_connections_do_not_stop_the_expiry_of_genuine_ones() -> None:
    """Connections expire from the front of an insertion-ordered dict, up to the first
    young one: a forged future one at the front must not hold every later one for ever."""
    t = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
    s = Stream(t)
    e = s.engine

    s.feed(f"{iso(t + timedelta(days=365))} web1 sshd[2]: Invalid user zz from 10.0.0.2 port 4000")
    rate, seconds = 20, 4 * int(engine_mod.SESSION_MAX_AGE)
    for i in range(seconds * rate):
        at = t + timedelta(seconds=i / rate)
        e.set_clock(at.timestamp())  # the wall clock moves with the genuine log
        s.feed(f"{iso(at)} web1 sshd[{10_000 + i}]: Invalid user u{i} from {address(i)} port 4000")
    bound = engine_mod.SESSION_MAX_AGE * rate + 2 * (engine_mod.SESSION_EXPIRY_EVERY + 1)
    assert len(e.counted_sessions) <= bound
    assert len(e.invalid_sessions) <= bound


def test_a_stored_forged_first_login_does_not_prolong_learning_after_a_restart() -> None:
    """The store keeps the forged login's own time as the first login ever recorded
    (store/history.py), so a restarted daemon's History starts learning then. The clock
    brings it back."""
    t = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
    s = Stream(t, History(since=(t + timedelta(days=30)).timestamp()))
    e = s.engine
    assert e.history.since == t.timestamp()
    later = t + timedelta(seconds=float(e.rules.new_source.learning) + 3600)
    e.set_clock(later.timestamp())

    s.login(later, "alice", "198.51.100.20")
    assert [f.rule for f in s.login(later, "alice", "203.0.113.80")] == ["new_source"]


def _count_with_and_without(forged: list[str], genuine: list[str]) -> tuple[int, int]:
    """Failures counted against ATTACKER for ``genuine`` lines, on a fresh engine and on one
    that first read ``forged`` lines (stamped a year ahead, on the same pids)."""
    t = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
    out = []
    for pre in ([], forged):
        s = Stream(t + timedelta(minutes=5))
        for text in [*pre, *genuine]:
            s.feed(text)
        out.append(s.failures(ATTACKER))
    return out[0], out[1]


_T = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
_Y = _T + timedelta(days=365)


def _on_three_pids(at: datetime, message: str) -> list[str]:
    """``message`` (``{i}`` filled in) from sshd pids 700-702, a second apart from ``at``."""
    return [
        f"{iso(at + timedelta(seconds=i))} web1 sshd[{700 + i}]: {message.format(i=i)}"
        for i in range(3)
    ]


_FORGED_FAILURES = _on_three_pids(_Y, "Failed password for x{i} from 192.0.2.1{i} port 4000 ssh2")
_CASES = {
    # A forged failure counted for pid N makes the scanner's close on N a follow-up.
    "follow-up": (
        _FORGED_FAILURES,
        _on_three_pids(
            _T, f"Connection closed by authenticating user root {ATTACKER} port 4000 [preauth]"
        ),
    ),
    # A forged "Invalid user" on pid N makes N's "Failed password for invalid user" its
    # restatement.
    "invalid user": (
        _on_three_pids(_Y, "Invalid user x{i} from 192.0.2.1{i} port 4000"),
        _on_three_pids(
            _T, f"Failed password for invalid user admin from {ATTACKER} port 4000 ssh2"
        ),
    ),
    # A forged failure counted for pid N makes a key tried on N a stale offer of the same
    # client.
    "key try": (
        _FORGED_FAILURES,
        _on_three_pids(
            _T, f"Failed publickey for root from {ATTACKER} port 4000 ssh2: RSA SHA256:abcDEF1+/x"
        ),
    ),
    # A forged PAM prompt pending on pid N makes N's own prompt the second of two: one more
    # Failed line than there were prompts is then taken for a restatement.
    "pam prompt": (
        [f"{iso(_Y)} web1 sshd[701]: error: PAM: Authentication failure for x from 192.0.2.1"],
        [
            f"{iso(_T)} web1 sshd[701]: error: PAM: Authentication failure for root from "
            f"{ATTACKER}",
            f"{iso(_T + timedelta(seconds=1))} web1 sshd[701]: Failed keyboard-interactive/pam "
            f"for root from {ATTACKER} port 4000 ssh2",
            f"{iso(_T + timedelta(seconds=3))} web1 sshd[701]: Failed keyboard-interactive/pam "
            f"for root from {ATTACKER} port 4000 ssh2",
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(_CASES))
def test_forged_future_connections_do_not_make_genuine_lines_restatements(case: str) -> None:
    forged, genuine = _CASES[case]
    unforged, after_forgery = _count_with_and_without(forged, genuine)
    assert unforged > 0
    assert after_forgery == unforged


def test_forged_future_findings_are_dropped_at_a_clean_up() -> None:
    """Not believed, and not kept either: a flood of them would otherwise survive every
    clean-up of what fired."""
    t = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
    s = Stream(t + timedelta(hours=1))
    e = s.engine

    year = t + timedelta(days=365)
    forged = engine_mod.FIRED_MIN // 2 + 10
    for i in range(forged):
        for k in range(5):
            s.feed(fail(year, 10_000 + 5 * i + k, address(i), f"x{i}"))
    genuine = 0
    while len(e.fired) >= genuine + forged // 2 and genuine < engine_mod.FIRED_MIN:
        for k in range(5):
            s.feed(fail(t + timedelta(seconds=genuine), 900_000 + 5 * genuine + k,
                      f"172.16.{genuine >> 8}.{genuine & 255}", f"g{genuine}"))  # fmt: skip
        genuine += 1
    assert len(e.fired) == genuine  # a clean-up ran: the forged ones went, the genuine stayed
    assert all(v < year.timestamp() for v in e.fired.values())


def test_a_clock_hours_behind_every_stamp_changes_nothing(tmp_path: Path) -> None:
    """A wrong ``sources.timezone`` puts every stamp hours off the wall clock, all alike
    (here 14 h ahead, the most a zone can be). Only clean-ups use the clock, and running them
    earlier changes no result: the findings are those of an engine without a clock. (The
    clock also caps the start of learning, which would end up to 14 h early; this log is
    shorter than the learning period.)"""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import gen_authlog

    log = tmp_path / "auth.log"
    start = datetime(2026, 11, 16, tzinfo=UTC)
    gen_authlog.generate(str(log), 30_000, 5, start, 1, "web1", 0.9, quiet=True)
    lines = log.read_text().splitlines()
    runs = []
    for offset in (None, timedelta(hours=-14)):
        e = Engine(config.DetectionConfig(), History(), zone=UTC)
        p = Parser(zone=UTC, reference=datetime(2026, 12, 1, tzinfo=UTC))
        found = []
        for text in lines:
            ev = p.parse_text(text)
            if ev is None:
                continue
            if offset is not None:
                e.set_clock((ev.ts + offset).timestamp())
            found += [(f.rule, f.subject, str(f.severity), f.events[-1].raw) for f in e.feed(ev)]
        runs.append(found)
    assert len(runs[0]) > 100
    assert runs[1] == runs[0]


def test_every_counter_of_the_engine_gets_the_clock() -> None:
    """Each counter sweeps on its own (every 65,536 adds): all of them, including any added
    later, must know the cap."""
    from sshmonitord.detect.windows import DistinctCounter, WindowCounter

    e = Stream(datetime(2026, 11, 24, 21, 0, tzinfo=UTC)).engine
    counters = [v for v in vars(e).values() if isinstance(v, WindowCounter | DistinctCounter)]
    assert len(counters) >= 6
    assert all(c.clock_limit == e._clock for c in counters)


def test_lines_stamped_in_the_past_leave_newer_memories_believed() -> None:
    """The mirror case, with the clock set as the daemon sets it: late or forged lines
    stamped hours in the past set off the connections' expiry; what is newer than them is
    not "in the future" for that, since it is not after the clock."""
    t = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
    s = Stream(t + timedelta(hours=2, minutes=1))
    e = s.engine

    at = t + timedelta(hours=2)
    s.feed(fail(at, 600, ATTACKER))
    for i in range(3 * (engine_mod.SESSION_EXPIRY_EVERY + 1)):  # expiry runs several times
        s.feed(
            f"{iso(t + timedelta(seconds=i * 0.1))} web1 sshd[{20_000 + i}]: Invalid user "
            f"old{i} from {address(i)} port 9"
        )
    assert "600" in e.counted_sessions
    s.feed(
        f"{iso(at + timedelta(seconds=1))} web1 sshd[600]: Connection closed by "
        f"authenticating user root {ATTACKER} port 4000 [preauth]"
    )
    assert s.failures(ATTACKER) == 1
