"""Detection's memory of its own findings: when each rule last fired on each subject.

A rule that fired on an address counts that address's failures again only from just after
the finding (``Engine._since``): one attack, one finding per window, not one per line.
That memory is worth keeping for the rule's window and no longer; before, nothing ever
dropped it, so a daemon facing a stream of new attackers grew by an entry per attacker for
as long as it ran. Lines are real sshd wording, read by the daemon's own parser.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from detectfeed import Stream, address

from sshmonitord import config
from sshmonitord.detect import engine as engine_mod
from sshmonitord.detect.engine import Engine, History
from sshmonitord.events import Finding

T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)


class Feed(Stream):
    def __init__(self) -> None:
        super().__init__(T0 + timedelta(days=30))

    def fail(self, at: float, pid: int, ip: str, user: str = "root") -> list[Finding]:
        stamp = (T0 + timedelta(seconds=at)).strftime("%b %d %H:%M:%S")
        return self.feed(
            f"{stamp} h sshd[{pid}]: Failed password for {user} from {ip} port 4000 ssh2"
        )


def horizon(e: Engine) -> float:
    r = e.rules
    return max(
        r.bruteforce.window, r.slow_bruteforce.window, r.enumeration.window, r.distributed.window
    )


def test_what_fired_is_remembered_for_the_longest_window_not_for_ever() -> None:
    """Four days of log time, a new address reaching bruteforce's threshold every 20 s:
    17,280 findings. Only the last day's (the longest window, slow_bruteforce's) matter."""
    f = Feed()
    e = f.engine
    every = 20.0
    days = 4
    largest = 0
    for i in range(int(days * 86400 / every)):
        at = i * every
        for k in range(5):
            f.fail(at + k * 0.5, 10_000 + i * 5 + k, address(i), f"u{i}")
        largest = max(largest, len(e.fired))
    live = horizon(e) / every
    assert [x.rule for x in f.found] == ["bruteforce"] * int(days * 86400 / every)
    assert largest <= 2 * live + engine_mod.FIRED_MIN
    assert len(e.fired) >= live * 0.99  # the last day's are all still there


def test_a_subject_that_fired_within_its_window_is_not_forgotten() -> None:
    """A clean-up drops what is older than the windows and keeps what is live: an address
    that fired a moment before it does not fire again on its next failure (it needs a
    threshold's worth more)."""
    f = Feed()
    e = f.engine
    old = engine_mod.FIRED_MIN // 2
    for i in range(old):  # long ago: past every window by the time of the clean-up
        for k in range(5):
            f.fail(i * 0.01, 10_000 + i * 5 + k, address(i), f"u{i}")
    now = horizon(e) + 100
    for k in range(5):
        f.fail(now + k, 100 + k, "198.51.100.7", "admin")
    target = ("bruteforce", int.from_bytes(bytes([198, 51, 100, 7])))
    assert target in e.fired
    # Other addresses' findings, soon after, until the memory cleans itself up.
    i = old
    largest = cleaned = 0
    while not cleaned and i < 4 * engine_mod.FIRED_MIN:
        i += 1
        for k in range(5):
            f.fail(now + 10, 10_000 + i * 5 + k, address(i), f"u{i}")
        largest = max(largest, len(e.fired))
        cleaned = len(e.fired) < largest
    assert cleaned and len(e.fired) == i - old + 1  # the old ones went, the live ones stayed
    assert target in e.fired
    before = len(f.found)
    assert f.fail(now + 20, 200, "198.51.100.7", "admin") == []  # no second finding
    assert len(f.found) == before


def test_the_memory_follows_a_reload_to_longer_windows() -> None:
    """SIGHUP to a longer slow_bruteforce window: what fired is kept for the new window."""
    f = Feed()
    e = f.engine
    cfg = config.DetectionConfig()
    longer = dataclasses.replace(cfg.rules.slow_bruteforce, window=3 * 86400)
    e.configure(
        dataclasses.replace(cfg, rules=dataclasses.replace(cfg.rules, slow_bruteforce=longer))
    )
    assert horizon(e) == 3 * 86400
    assert e._fired_horizon == 3 * 86400


def test_each_rule_that_reads_what_fired_sets_how_long_it_is_kept() -> None:
    cfg = config.DetectionConfig()
    for rule in ("bruteforce", "slow_bruteforce", "enumeration", "distributed"):
        longest = dataclasses.replace(getattr(cfg.rules, rule), window=5 * 86400)
        rules = dataclasses.replace(cfg.rules, **{rule: longest})
        e = Engine(dataclasses.replace(cfg, rules=rules), History(since=0.0), zone=UTC)
        assert e._fired_horizon == 5 * 86400, rule
