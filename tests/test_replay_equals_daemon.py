"""Replay raises exactly the findings, and plans exactly the bans, the daemon would.

One log goes through the daemon's own Pipeline in-process (a real Store in tmp_path, a real
Engine, a BanManager with the ``none`` backend, fed Lines in batches as a source would) and
through replay, both from an empty state. Compared: the findings (rule, subject, severity, in
order) and the ban plans (network, rule, offence number, duration). Timestamps are not: the
daemon's bans run in wall time, replay's in event time (respond/policy.py says why both agree
when the bans outlast the log, as they do here: minutes of log, bans of 10 minutes and more
that escalate). Property-based over generated logs, plus the two drifts issue #12 measured:
an allowlisted address, and the second finding on an address banned a moment before.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import itertools
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sshmonitord import config
from sshmonitord.detect.engine import Engine, History
from sshmonitord.events import Finding, Line
from sshmonitord.parse import Parser
from sshmonitord.pipeline import Pipeline
from sshmonitord.replay import Replay, summary_dict
from sshmonitord.respond import make_backend
from sshmonitord.respond.bans import BanManager
from sshmonitord.store import Store

T0 = datetime(2026, 11, 24, 21, 0, 0, tzinfo=UTC)
ADDRESSES = ("203.0.113.5", "198.51.100.7", "192.0.2.9", "2001:db8:1::5", "2001:db8:1::6")
USERS = ("root", "admin", "alice", "oracle", "test", "git")

Plan = tuple[str, str, int, int]  # net, rule, offence, seconds
Seen = tuple[str, str, str]  # rule, subject, severity


def line(t: int, pid: int, kind: str, user: str, ip: str) -> str:
    """An sshd line with an RFC 3339 stamp: the year is in it, so the daemon (which judges
    classic stamps against the wall clock) and replay (against the file's mtime) agree."""
    ts = (T0 + timedelta(seconds=t)).isoformat()
    msg = {
        "fail": f"Failed password for {user} from {ip} port {1000 + pid} ssh2",
        "invalid": f"Invalid user {user} from {ip} port {1000 + pid}",
        "success": f"Accepted password for {user} from {ip} port {1000 + pid} ssh2",
    }[kind]
    return f"{ts} web1 sshd[{pid}]: {msg}"


def make_config(allow: tuple[str, ...] = ()) -> config.Config:
    return dataclasses.replace(
        config.Config(),
        response=dataclasses.replace(config.ResponseConfig(), backend="none"),
        allowlist=tuple(ipaddress.ip_network(a) for a in allow),
    )


def _seen(findings: list[Finding] | list[dict[str, Any]]) -> list[Seen]:
    out: list[Seen] = []
    for f in findings:
        if isinstance(f, Finding):
            out.append((f.rule, f.subject, str(f.severity)))
        else:
            out.append((f["rule"], f["subject"], f["severity"]))
    return out


async def _daemon(
    state: Path, cfg: config.Config, lines: list[str], cuts: list[int]
) -> tuple[list[Seen], list[Plan]]:
    store = Store(state)
    await asyncio.to_thread(store.open)
    bans = BanManager(store, make_backend("none"), cfg.response, cfg.allowlist)
    await bans.start()
    findings: list[Finding] = []

    async def on_findings(fs: list[Finding]) -> None:
        findings.extend(fs)

    pipe = Pipeline(
        store,
        Parser(zone=UTC),
        Engine(cfg.detection, History(), zone=UTC),
        bans,
        on_findings=on_findings,
    )
    await pipe.start()
    try:
        # A source's batches: the cut points decide which findings meet in one decide().
        start = 0
        for end in [*sorted(set(cuts)), len(lines)]:
            chunk = lines[start:end]
            start = max(start, end)
            if chunk:
                await pipe.emit([Line(text, "test") for text in chunk])
        assert await pipe.drain(30)

        def rows(conn: Any) -> list[Plan]:
            return [
                (str(net), str(rule), int(offence), round(expires - created))
                for net, rule, offence, created, expires in conn.execute(
                    "SELECT net, rule, offence, created, expires FROM bans ORDER BY id"
                )
            ]

        plans = await store.run(rows)
    finally:
        await pipe.stop()
        await bans.stop()
        store.close()
    return _seen(findings), plans


def _replay(path: Path, cfg: config.Config) -> tuple[list[Seen], list[Plan]]:
    r = Replay(UTC, config=cfg)
    for _ in r.events([str(path)]):
        pass
    d = summary_dict(r)
    plans = [(b["net"], b["rule"], b["offence"], b["seconds"]) for b in d["bans"]]
    assert d["bans_that_would_be_placed"] == len(plans)
    assert sum(d["findings_by_rule"].values()) == len(d["findings"])
    return _seen(d["findings"]), plans


def both(
    tmp: Path,
    lines: list[str],
    cfg: config.Config,
    cuts: list[int] = (),  # type: ignore[assignment]
) -> tuple[tuple[list[Seen], list[Plan]], tuple[list[Seen], list[Plan]]]:
    log = tmp / "auth.log"
    log.write_text("".join(x + "\n" for x in lines))
    daemon = asyncio.run(_daemon(tmp / "state", cfg, lines, list(cuts)))
    return daemon, _replay(log, cfg)


def test_allowlisted_address_is_not_banned_by_replay_either(tmp_path):
    """Issue #12: 40 failures from an allowlisted address; the daemon places no ban, and
    replay used to say "1 bans would be placed" (its copy of the policy had no allowlist)."""
    lines = [line(i, 100 + i // 4, "fail", "root", "192.0.2.9") for i in range(40)]
    lines += [line(40 + i, 200 + i, "fail", "root", "203.0.113.5") for i in range(6)]
    (d_seen, d_plans), (r_seen, r_plans) = both(tmp_path, lines, make_config(("192.0.2.0/24",)))
    assert [p[0] for p in d_plans] == ["203.0.113.5/32"]  # the allowlisted one: none
    assert r_plans == d_plans
    assert r_seen == d_seen
    assert any("192.0.2.9" in s[1] for s in d_seen)  # still alerted on (alert_allowlisted)


def test_second_finding_on_a_banned_address_is_still_raised(tmp_path):
    """Issue #12: 19 lines, bruteforce bans the address and enumeration fires on it after; the
    daemon raises both (and bans once), replay used to drop the enumeration finding."""
    lines = [line(i, 300 + i, "invalid", f"user{i}", "203.0.113.5") for i in range(19)]
    (d_seen, d_plans), (r_seen, r_plans) = both(tmp_path, lines, make_config())
    rules = [s[0] for s in d_seen]
    assert "enumeration" in rules and "bruteforce" in rules
    assert len(d_plans) == 1 and d_plans[0][2] == 1  # one ban, first offence
    assert r_seen == d_seen
    assert r_plans == d_plans


def test_escalation_in_event_time(tmp_path):
    """Bans that end inside the log (bantime 60s, factor 2, bursts an hour apart): replay
    judges "already banned" in event time, so each burst is a new, longer ban. (The daemon,
    fed the same three bursts within a second of wall time, would still hold the first ban;
    the two clocks agree only while the bans outlast the log, see respond/policy.py.)"""
    cfg = make_config()
    response = dataclasses.replace(cfg.response, bantime=config.Duration(60), bantime_factor=2.0)
    cfg = dataclasses.replace(cfg, response=response)
    lines = [
        line(burst * 3600 + i, 400 + 10 * burst + i, "fail", "root", "203.0.113.5")
        for burst in range(3)
        for i in range(5)
    ]
    log = tmp_path / "auth.log"
    log.write_text("".join(x + "\n" for x in lines))
    r = Replay(UTC, config=cfg)
    for _ in r.events([str(log)]):
        pass
    plans = [(b["net"], b["offence"], b["seconds"]) for b in summary_dict(r)["bans"]]
    assert plans == [
        ("203.0.113.5/32", 1, 60),
        ("203.0.113.5/32", 2, 120),
        ("203.0.113.5/32", 3, 240),
    ]


KINDS = st.sampled_from(("fail", "fail", "fail", "invalid", "invalid", "success"))


@st.composite
def logs(draw: st.DrawFn) -> tuple[list[str], list[int], tuple[str, ...]]:
    n = draw(st.integers(1, 200))
    t = 0
    pid = itertools.count(1000)
    lines: list[str] = []
    for _ in range(n):
        t += draw(st.integers(0, 2))  # the log spans < 600 s, the first ban
        ip = draw(st.sampled_from(ADDRESSES))
        user = draw(st.sampled_from(USERS))
        lines.append(line(t, next(pid), draw(KINDS), user, ip))
    cuts = draw(st.lists(st.integers(0, n), max_size=6))
    allow = draw(st.sampled_from(((), ("192.0.2.0/24",), ("2001:db8:1::/64", "203.0.113.5"))))
    return lines, cuts, allow


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(logs())
def test_replay_equals_daemon_on_generated_logs(case):
    lines, cuts, allow = case
    with tempfile.TemporaryDirectory(prefix="replay-eq-") as tmp:
        (d_seen, d_plans), (r_seen, r_plans) = both(Path(tmp), lines, make_config(allow), cuts)
    assert r_seen == d_seen
    assert r_plans == d_plans
