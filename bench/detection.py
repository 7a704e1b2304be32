#!/usr/bin/env python3
"""Labelled detection benchmark (issue #13): does each rule find the attacks, and stay quiet
on the site's own users?

    .venv/bin/python bench/detection.py [--seeds 1,2,3,4,5] [--json] [--keep DIR] [--strict]

Per seed, bench/scenarios.py writes ~10 days of a Debian 12 auth.log (~95,000 lines) with
labelled incidents and labelled benign behaviour in realistic background (see its docstring).
The log then goes through the code under test exactly as ``sshmonitor replay`` runs it:
``sshmonitord.parse.Parser(zone=UTC)`` with the reference time set to the last line, each line
through ``parse_text`` and each event through ``Engine(Config().detection, History(),
zone=UTC).feed`` (or the detection section of ``--config FILE``). Only that API is used, so
the same script measures any version of the engine (``--code DIR``, or ``PYTHONPATH=DIR``:
this script never puts its own checkout ahead of either).

Each finding is mapped to one label, or to the background:

- by address: the address of the event that completed the finding (the login, the failure)
  or the network the finding is about (``1.2.3.4/32``, an IPv6 ``/64``) holds one of the
  label's addresses; by user only for a finding about a user (``user X``) that no label's
  address matches, and only to the incident kinds in :data:`USER_KINDS` (a ``distributed``
  finding's last failure may come from an unlabelled bot);
- by time: from 60 s before the label's first line to its last line plus the rule's window
  (``detection.rules.<rule>.window``; 5 min for rules without one, 1 h for unknown rules), so
  a threshold that completes late still lands on its case;
- among several labels: an incident before a benign case, one naming the finding's user,
  a specific case before a catch-all (``routine_use``, ``health_check``), one whose span
  holds the finding, the nearest, the narrowest.

An incident is *found* when a finding mapped to it comes from an *appropriate* rule at or
above that rule's minimum severity (:data:`APPROPRIATE`): a bruteforce finding on an
enumeration is mapped to it but finds nothing. Findings on benign cases are false alarms,
counted by severity and rule; findings on the background (internet noise) are shown by rule.

Target (issue #13): every incident found; 0 critical or high findings on benign behaviour
(kinds in scenarios.EXTRA_BENIGN are shown but not part of it); both compromise kinds
critical. The exit status is 0 whatever the figures, unless ``--strict`` (1 on FAIL).
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

_BENCH = str(Path(__file__).resolve().parent)
if _BENCH not in sys.path:
    sys.path.append(_BENCH)  # appended: the sshmonitord under test comes first

from scenarios import (  # noqa: E402
    BENIGN_KINDS,
    COMPROMISE_KINDS,
    DEFAULT_DAYS,
    DEFAULT_START,
    EXTRA_BENIGN,
    INCIDENT_KINDS,
    Label,
    Scenario,
    generate,
)

if TYPE_CHECKING:
    from sshmonitord.events import Finding

SEVERITIES = ("info", "warning", "high", "critical")
RANK = {s: i for i, s in enumerate(SEVERITIES)}
DEFAULT_SEEDS = "1,2,3,4,5"

# incident kind -> {rule: the lowest severity that counts}. A finding mapped to an incident
# finds it only through a rule listed here, at that severity or above.
APPROPRIATE: dict[str, dict[str, str]] = {
    "bruteforce_fast": {"bruteforce": "info"},
    "bruteforce_slow": {"slow_bruteforce": "info"},
    "distributed_guessing": {"distributed": "info"},
    "user_enumeration": {"enumeration": "info"},
    "ipv6_rotation": {"bruteforce": "info", "slow_bruteforce": "info"},
    "compromise_after_bruteforce": {"success_after_failures": "critical"},
    "compromise_after_spray": {"success_after_failures": "critical"},
    "root_login_new_network": {"root_login": "info", "new_source": "info"},
    "key_login_new_network": {"new_key": "info"},
}
# Incident kinds a finding about their *user* maps to when no label's address matches (the
# last failure of a distributed finding may come from an unlabelled bot).
USER_KINDS = frozenset({"distributed_guessing", "compromise_after_spray"})
# Kinds whose finding must be about the attacker's whole network (the label's network): an
# IPv6 attacker rotating inside its /64 is not found by a finding about one of its /128s.
COVER_NETWORK = frozenset({"ipv6_rotation"})
BEFORE_SLACK = 60.0
NO_WINDOW_SLACK = 300.0  # rules that fire on the login itself (root_login, new_source...)
UNKNOWN_RULE_SLACK = 3600.0
WINDOWLESS = frozenset({"root_login", "new_source", "new_key", "off_hours"})


# ---------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class Hit:
    """A finding as the scorer sees it: what, how bad, when, about which address and user."""

    rule: str
    severity: str
    ts: float  # the time of the event that completed the finding
    subject: str
    ip: str | None  # that event's address
    user: str | None  # the subject's user, else that event's
    net: str | None  # the network the finding is about (address rules), else None
    summary: str = ""
    about_user: bool = False  # the subject is a user ("user X"), not an address
    method: str | None = None  # that event's method (password, publickey; pam: a PAM line)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ts": _iso(self.ts),
            "rule": self.rule,
            "severity": self.severity,
            "subject": self.subject,
            "ip": self.ip,
            "user": self.user,
            "method": self.method,
            "summary": self.summary,
        }


def hit_from_finding(f: Finding, ts: float | None = None) -> Hit:
    """A Hit from the engine's Finding; ``ts`` defaults to its last event's time."""
    last = f.events[-1] if f.events else None
    if ts is None:
        ts = last.ts.timestamp() if last is not None else 0.0
    subject = str(f.subject)
    user = subject[5:] if subject.startswith("user ") else (last.user if last else None)
    net = None
    for text in (getattr(f, "ban_net", None), subject):
        if text:
            try:
                net = str(ipaddress.ip_network(text, strict=False))
                break
            except ValueError:
                continue
    return Hit(
        str(f.rule),
        str(f.severity),
        ts,
        subject,
        str(last.ip) if last is not None and last.ip is not None else None,
        user,
        net,
        str(getattr(f, "summary", "")),
        subject.startswith("user "),
        last.method if last is not None else None,
    )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------- mapping


class Matcher:
    """Maps Hits to Labels (see the module docstring for the order of preference)."""

    def __init__(self, labels: Sequence[Label], slack: dict[str, float] | None = None) -> None:
        self.labels = list(labels)
        self.slack = slack or {}
        self.by_addr: dict[str, list[Label]] = {}
        self.by_net64: dict[str, list[Label]] = {}
        self.by_user: dict[str, list[Label]] = {}
        self.nets: dict[str, list[ipaddress.IPv4Network | ipaddress.IPv6Network]] = {}
        for lb in self.labels:
            for a in lb.addresses:
                self.by_addr.setdefault(a, []).append(lb)
                ip = ipaddress.ip_address(a)
                if ip.version == 6:
                    n64 = str(ipaddress.ip_network(f"{ip}/64", strict=False))
                    self.by_net64.setdefault(n64, []).append(lb)
            for n in lb.networks:
                net = ipaddress.ip_network(n, strict=False)
                self.nets.setdefault(lb.id, []).append(net)
                if net.version == 6 and net.prefixlen == 64:
                    self.by_net64.setdefault(str(net), []).append(lb)
            if lb.kind in USER_KINDS:
                for u in lb.users:
                    self.by_user.setdefault(u, []).append(lb)

    def slack_for(self, rule: str) -> float:
        if rule in self.slack:
            return self.slack[rule]
        return NO_WINDOW_SLACK if rule in WINDOWLESS else UNKNOWN_RULE_SLACK

    def _by_address(self, h: Hit) -> list[Label]:
        out: list[Label] = []
        if h.ip is not None:
            out += self.by_addr.get(h.ip, [])
        if h.net is not None:
            net = ipaddress.ip_network(h.net)
            if net.num_addresses == 1:
                out += self.by_addr.get(str(net.network_address), [])
            elif net.version == 6 and net.prefixlen == 64:
                out += self.by_net64.get(str(net), [])
            else:  # wider or odd: look at every label (rare)
                for lb in self.labels:
                    if any(ipaddress.ip_address(a) in net for a in lb.addresses) or any(
                        n.overlaps(net)  # type: ignore[arg-type]  # same version checked
                        for n in self.nets.get(lb.id, [])
                        if n.version == net.version
                    ):
                        out.append(lb)
        return out

    def _in_time(self, lb: Label, h: Hit) -> bool:
        return lb.start - BEFORE_SLACK <= h.ts <= lb.end + self.slack_for(h.rule)

    def match(self, h: Hit) -> Label | None:
        cands = [lb for lb in self._by_address(h) if self._in_time(lb, h)]
        if not cands and h.about_user and h.user is not None:
            cands = [lb for lb in self.by_user.get(h.user, []) if self._in_time(lb, h)]
        if not cands:
            return None

        def rank(lb: Label) -> tuple[int, int, int, int, float, float]:
            inside = lb.start <= h.ts <= lb.end
            dist = 0.0 if inside else min(abs(h.ts - lb.start), abs(h.ts - lb.end))
            return (
                0 if lb.cls == "incident" else 1,
                0 if h.user is not None and h.user in lb.users else 1,
                1 if lb.catch_all else 0,
                0 if inside else 1,
                dist,
                lb.end - lb.start,
            )

        return min(cands, key=rank)


def covers(h: Hit, lb: Label) -> bool:
    """Is the finding about (a network holding) each of the label's networks?"""
    if h.net is None:
        return False
    net = ipaddress.ip_network(h.net)
    for text in lb.networks:
        want = ipaddress.ip_network(text)
        if want.version != net.version or not want.subnet_of(net):  # type: ignore[arg-type]
            return False
    return True


def finds(h: Hit, lb: Label) -> bool:
    """Does this finding (mapped to incident ``lb``) find it: an appropriate rule, severe
    enough, about the whole network where that matters?"""
    need = APPROPRIATE.get(lb.kind, {}).get(h.rule)
    if need is None or RANK.get(h.severity, -1) < RANK[need]:
        return False
    return lb.kind not in COVER_NETWORK or covers(h, lb)


# ---------------------------------------------------------------------------- scoring


@dataclass
class LabelResult:
    label: Label
    hits: list[Hit] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return any(finds(h, self.label) for h in self.hits)

    @property
    def max_severity(self) -> str | None:
        if not self.hits:
            return None
        return max((h.severity for h in self.hits), key=lambda s: RANK.get(s, -1))


@dataclass
class SeedResult:
    seed: int
    labels: list[LabelResult]
    background: list[Hit]
    lines: int = 0
    events: int = 0
    unrecognized: int = 0
    malformed: int = 0
    parser_errors: int = 0
    gen_seconds: float = 0.0
    run_seconds: float = 0.0


def score(
    labels: Sequence[Label],
    hits: Iterable[Hit],
    slack: dict[str, float] | None = None,
    seed: int = 0,
) -> SeedResult:
    """Map every hit to a label or the background."""
    m = Matcher(labels, slack)
    results = {lb.id: LabelResult(lb) for lb in labels}
    background: list[Hit] = []
    for h in hits:
        lb = m.match(h)
        if lb is None:
            background.append(h)
        else:
            results[lb.id].hits.append(h)
    return SeedResult(seed, list(results.values()), background)


def rule_slack(detection: Any) -> dict[str, float]:
    """Each rule's window from a DetectionConfig (whatever rules it has)."""
    out: dict[str, float] = {}
    rules = getattr(detection, "rules", None)
    for name in getattr(rules, "__dataclass_fields__", {}):
        window = getattr(getattr(rules, name), "window", None)
        if window is not None:
            out[name] = max(float(window), BEFORE_SLACK)
    return out


def run_seed(scenario: Scenario, detection: Any, gen_seconds: float = 0.0) -> SeedResult:
    """The scenario's log through the real parser and engine, scored."""
    from sshmonitord.detect.engine import Engine, History
    from sshmonitord.parse import Parser

    t = time.perf_counter()
    parser = Parser(zone=UTC)
    parser.time.set_reference(datetime.fromtimestamp(scenario.last_ts, UTC))
    engine = Engine(detection, History(), zone=UTC)
    parse, feed = parser.parse_text, engine.feed
    hits: list[Hit] = []
    for line in scenario.lines:
        ev = parse(line)
        if ev is None:
            continue
        found = feed(ev)
        if found:
            ts = ev.ts.timestamp()
            hits.extend(hit_from_finding(f, ts) for f in found)
    res = score(scenario.labels, hits, rule_slack(detection), scenario.seed)
    st = parser.stats
    res.lines = st.lines
    res.events = st.events
    res.unrecognized = st.kinds.get("unrecognized", 0)
    res.malformed = st.malformed
    res.parser_errors = st.errors
    res.gen_seconds = gen_seconds
    res.run_seconds = time.perf_counter() - t
    return res


# ---------------------------------------------------------------------------- summary


def _sev_counts(hits: Iterable[Hit]) -> dict[str, int]:
    c = Counter(h.severity for h in hits)
    return {s: c.get(s, 0) for s in SEVERITIES}


def _rule_sev(hits: Iterable[Hit]) -> dict[str, dict[str, int]]:
    out: dict[str, Counter[str]] = {}
    for h in hits:
        out.setdefault(h.rule, Counter())[h.severity] += 1
    return {r: {s: c[s] for s in SEVERITIES if c[s]} for r, c in sorted(out.items())}


def summarize(results: Sequence[SeedResult], examples: int = 3) -> dict[str, Any]:
    """Everything the report prints, JSON-ready, over all seeds."""
    all_labels = [lr for r in results for lr in r.labels]
    incidents: dict[str, Any] = {}
    for kind in INCIDENT_KINDS:
        lrs = [lr for lr in all_labels if lr.label.kind == kind]
        hits = [h for lr in lrs for h in lr.hits]
        appropriate = [h for lr in lrs for h in lr.hits if finds(h, lr.label)]
        incidents[kind] = {
            "description": INCIDENT_KINDS[kind],
            "appropriate": APPROPRIATE.get(kind, {}),
            "n": len(lrs),
            "found": sum(1 for lr in lrs if lr.found),
            "missed": [
                f"seed {r.seed}: {lr.label.id}"
                for r in results
                for lr in r.labels
                if lr.label.kind == kind and not lr.found
            ],
            "critical": sum(1 for lr in lrs if lr.max_severity == "critical"),
            "appropriate_findings": _rule_sev(appropriate),
            "all_findings": _rule_sev(hits),
            "max_severity": Counter(lr.max_severity or "none" for lr in lrs),
        }
    benign: dict[str, Any] = {}
    ex: list[dict[str, Any]] = []
    for kind in (*BENIGN_KINDS, *EXTRA_BENIGN):
        lrs = [lr for lr in all_labels if lr.label.kind == kind]
        hits = [h for lr in lrs for h in lr.hits]
        benign[kind] = {
            "description": (BENIGN_KINDS | EXTRA_BENIGN)[kind],
            "in_target": kind not in EXTRA_BENIGN,
            "cases": len(lrs),
            "cases_high_or_critical": sum(
                1 for lr in lrs if any(RANK.get(h.severity, 0) >= RANK["high"] for h in lr.hits)
            ),
            "cases_any": sum(1 for lr in lrs if lr.hits),
            "findings": _sev_counts(hits),
            "by_rule": _rule_sev(hits),
        }
        shown: Counter[tuple[str, str]] = Counter()
        for r in results:
            for lr in r.labels:
                if lr.label.kind != kind:
                    continue
                for h in lr.hits:
                    key = (h.rule, h.severity)
                    if RANK.get(h.severity, 0) >= RANK["high"] and shown[key] < examples:
                        shown[key] += 1
                        ex.append(
                            {
                                "seed": r.seed,
                                "label": lr.label.id,
                                "kind": kind,
                                "note": lr.label.note,
                                **h.as_dict(),
                            }
                        )
    background = [h for r in results for h in r.background]
    per_rule: dict[str, dict[str, int]] = {}
    for r in results:
        for lr in r.labels:
            where = "incident" if lr.label.cls == "incident" else "benign"
            for h in lr.hits:
                d = per_rule.setdefault(h.rule, Counter())
                d["total"] += 1
                d[where] += 1
                d[h.severity] += 1
        for h in r.background:
            d = per_rule.setdefault(h.rule, Counter())
            d["total"] += 1
            d["background"] += 1
            d[h.severity] += 1
    cols = ("total", "incident", "benign", "background", *SEVERITIES)
    per_rule_out = {
        rule: {c: d.get(c, 0) for c in cols}
        for rule, d in sorted(per_rule.items(), key=lambda kv: -kv[1]["total"])
    }
    missed = {k: v["n"] - v["found"] for k, v in incidents.items() if v["found"] < v["n"]}
    no_incidents = [k for k, v in incidents.items() if v["n"] == 0]
    loud = {
        k: v["findings"]["critical"] + v["findings"]["high"]
        for k, v in benign.items()
        if v["in_target"] and v["findings"]["critical"] + v["findings"]["high"]
    }
    loud_extra = {
        k: v["findings"]["critical"] + v["findings"]["high"]
        for k, v in benign.items()
        if not v["in_target"] and v["findings"]["critical"] + v["findings"]["high"]
    }
    compromise = {
        k: {"n": incidents[k]["n"], "critical": incidents[k]["found"]} for k in COMPROMISE_KINDS
    }
    comp_ok = all(c["n"] and c["critical"] == c["n"] for c in compromise.values())
    target = {
        "every_incident_found": not missed and not no_incidents,
        "missed": missed,
        "benign_high_or_critical": sum(loud.values()),
        "benign_high_or_critical_by_kind": loud,
        "extra_benign_high_or_critical_by_kind": loud_extra,
        "both_compromise_kinds_critical": comp_ok,
        "compromise": compromise,
    }
    target["pass"] = (
        target["every_incident_found"] and not target["benign_high_or_critical"] and comp_ok
    )
    return {
        "seeds": [
            {
                "seed": r.seed,
                "lines": r.lines,
                "events": r.events,
                "unrecognized": r.unrecognized,
                "malformed": r.malformed,
                "parser_errors": r.parser_errors,
                "findings": sum(len(lr.hits) for lr in r.labels) + len(r.background),
                "incidents_found": sum(
                    1 for lr in r.labels if lr.label.cls == "incident" and lr.found
                ),
                "incidents": sum(1 for lr in r.labels if lr.label.cls == "incident"),
                "benign_high_or_critical": sum(
                    1
                    for lr in r.labels
                    if lr.label.cls == "benign" and not lr.label.extra
                    for h in lr.hits
                    if RANK.get(h.severity, 0) >= RANK["high"]
                ),
                "gen_seconds": round(r.gen_seconds, 2),
                "run_seconds": round(r.run_seconds, 2),
            }
            for r in results
        ],
        "incidents": incidents,
        "benign": benign,
        "background": {"findings": _sev_counts(background), "by_rule": _rule_sev(background)},
        "per_rule": per_rule_out,
        "target": target,
        "benign_examples": ex,
    }


# ---------------------------------------------------------------------------- report


def _rules_text(d: dict[str, dict[str, int]]) -> str:
    parts = []
    for rule, sev in d.items():
        inner = " ".join(f"{s[:4]} {n}" for s, n in sev.items())
        parts.append(f"{rule} ({inner})")
    return ", ".join(parts) or "-"


def print_text(s: dict[str, Any], meta: dict[str, Any], out: TextIO) -> None:
    w = out.write
    w(f"Detection benchmark (issue #13): code {meta['code']}\n")
    w(
        f"  engine+config sha256 {meta['engine_sha256'][:12]}, {meta['config']}, "
        f"{meta['days']:g} days from {meta['start']} per seed (UTC), "
        f"noise x{meta['noise']:g}\n\n"
    )
    w(
        f"{'seed':>5} {'lines':>8} {'events':>8} {'unrecog':>7} {'malformed':>9} {'findings':>8} "
        f"{'incidents':>9} {'benign hi/crit':>14} {'gen s':>6} {'run s':>6}\n"
    )
    for r in s["seeds"]:
        w(
            f"{r['seed']:>5} {r['lines']:>8,} {r['events']:>8,} {r['unrecognized']:>7} "
            f"{r['malformed']:>9} {r['findings']:>8,} "
            f"{str(r['incidents_found']) + '/' + str(r['incidents']):>9} "
            f"{r['benign_high_or_critical']:>14,} {r['gen_seconds']:>6.1f} "
            f"{r['run_seconds']:>6.1f}\n"
        )

    w("\nINCIDENTS: recall = found by an appropriate rule (at or above its severity)\n")
    w(
        f"  {'kind':<28} {'n':>3} {'found':>5} {'recall':>6} {'crit':>4}  "
        f"{'appropriate rule (min severity)':<42} findings mapped to it\n"
    )
    for kind, d in s["incidents"].items():
        rec = f"{100 * d['found'] / d['n']:.0f}%" if d["n"] else "-"
        appr = ", ".join(f"{r} ({sev})" for r, sev in d["appropriate"].items())
        w(
            f"  {kind:<28} {d['n']:>3} {d['found']:>5} {rec:>6} {d['critical']:>4}  {appr:<42} "
            f"{_rules_text(d['all_findings'])}\n"
        )
        for m in d["missed"][:4]:
            w(f"      missed: {m}\n")
    t = s["target"]
    comp = ", ".join(f"{k} {v['critical']}/{v['n']}" for k, v in t["compromise"].items())
    w(
        f"\nCOMPROMISE critical (success_after_failures at critical): {comp} -> "
        f"{'yes' if t['both_compromise_kinds_critical'] else 'NO'}\n"
    )

    w("\nBENIGN: false alarms (findings mapped to benign cases)\n")
    w(
        f"  {'kind':<26} {'cases':>5} {'hi/crit':>7} {'any':>4} {'crit':>5} {'high':>5} "
        f"{'warn':>5} {'info':>5}  by rule\n"
    )
    for kind, d in s["benign"].items():
        f = d["findings"]
        name = kind if d["in_target"] else f"{kind} (extra)"
        w(
            f"  {name:<26} {d['cases']:>5} {d['cases_high_or_critical']:>7} {d['cases_any']:>4} "
            f"{f['critical']:>5} {f['high']:>5} {f['warning']:>5} {f['info']:>5}  "
            f"{_rules_text(d['by_rule'])}\n"
        )
    w(
        "  (cases: labelled cases; hi/crit and any: cases with such a finding; extra: benign kinds "
        "beyond issue #13's list, not in the target)\n"
    )

    bg = s["background"]
    w(
        f"\nBACKGROUND (internet noise, no label): {sum(bg['findings'].values()):,} findings: "
        f"{_rules_text(bg['by_rule'])}\n"
    )

    w("\nTOTALS per rule\n")
    w(
        f"  {'rule':<24} {'total':>7} {'incident':>8} {'benign':>7} {'backgr':>7} "
        f"{'crit':>6} {'high':>6} {'warn':>6} {'info':>6}\n"
    )
    for rule, d in s["per_rule"].items():
        w(
            f"  {rule:<24} {d['total']:>7,} {d['incident']:>8,} {d['benign']:>7,} "
            f"{d['background']:>7,} {d['critical']:>6,} {d['high']:>6,} {d['warning']:>6,} "
            f"{d['info']:>6,}\n"
        )

    if s["benign_examples"]:
        w(
            "\nExamples of high/critical findings on benign cases "
            "(a few per kind, rule and severity):\n"
        )
        for e in s["benign_examples"]:
            how = f" [the event's method: {e['method']}]" if e["method"] else ""
            w(
                f"  seed {e['seed']} {e['label']}: {e['note']}\n"
                f"      {e['ts']} [{e['severity']}] {e['rule']} {e['subject']}: "
                f"{e['summary']}{how}\n"
            )

    missed = ", ".join(f"{k} {n}" for k, n in t["missed"].items()) or "none"
    loud = ", ".join(f"{k} {n}" for k, n in t["benign_high_or_critical_by_kind"].items())
    extra = ", ".join(f"{k} {n}" for k, n in t["extra_benign_high_or_critical_by_kind"].items())
    w(
        "\nTARGET: every incident found: "
        f"{'yes' if t['every_incident_found'] else 'NO (missed: ' + missed + ')'}; "
        f"0 critical/high on benign: "
        f"{'yes' if not t['benign_high_or_critical'] else 'NO (' + loud + ')'}; "
        f"both compromise kinds critical: "
        f"{'yes' if t['both_compromise_kinds_critical'] else 'NO'} "
        f"-> {'PASS' if t['pass'] else 'FAIL'}\n"
    )
    if extra:
        w(f"  (not in the target: high/critical on extra benign kinds: {extra})\n")


# ---------------------------------------------------------------------------- CLI


def _code_meta(code_dir: Path) -> str:
    """Which checkout is measured: its path and git commit (+ local changes)."""
    try:
        rev = subprocess.run(
            ["git", "-C", str(code_dir), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "-C", str(code_dir), "status", "--porcelain", "--", "sshmonitord"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return str(code_dir)
    if rev.returncode != 0:
        return str(code_dir)
    mark = " + uncommitted changes" if dirty.stdout.strip() else ""
    return f"{code_dir} at {rev.stdout.strip()}{mark}"


def _engine_sha(pkg: Path) -> str:
    h = hashlib.sha256()
    for p in sorted([*pkg.glob("detect/*.py"), pkg / "config.py"]):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        if dash:
            seeds.extend(range(int(lo), int(hi) + 1))
        else:
            seeds.append(int(part))
    if not seeds:
        raise ValueError("no seeds")
    return seeds


_HELP = """\
Labelled detection benchmark (issue #13).

For each seed: write ~10 days of a Debian 12 auth.log (bench/scenarios.py) with labelled
incidents and labelled benign behaviour in realistic background; run it through the real
Parser and detection Engine, as `sshmonitor replay` does; map every finding to an incident,
a benign case or the background (by address or network, by user for findings about a user,
by time with the rule's window as slack); print recall per incident kind, false alarms on
benign behaviour by severity and rule, background findings, totals per rule, and the target:
every incident found, 0 critical/high findings on benign behaviour, both compromise kinds
critical -> PASS/FAIL. ~2 s per seed."""


def _epilog() -> str:
    lines = ["incident kinds, and the rules that find them (minimum severity):"]
    for kind, desc in INCIDENT_KINDS.items():
        rules = ", ".join(f"{r} ({sev})" for r, sev in APPROPRIATE[kind].items())
        extra = "; the finding must cover the /64" if kind in COVER_NETWORK else ""
        lines.append(f"  {kind}: {rules}{extra}\n      {desc}")
    lines.append("benign kinds (every finding on them is a false alarm):")
    for kind, desc in BENIGN_KINDS.items():
        lines.append(f"  {kind}: {desc}")
    for kind, desc in EXTRA_BENIGN.items():
        lines.append(f"  {kind} (extra, not in the target): {desc}")
    lines += [
        "",
        "Measure another version of the code with --code DIR (a checkout, e.g. a git worktree)",
        "or PYTHONPATH=DIR; the header names the checkout and commit measured:",
        "  git worktree add /tmp/det-before 0d161cb",
        "  .venv/bin/python bench/detection.py --code /tmp/det-before",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="bench/detection.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_HELP,
        epilog=_epilog(),
    )
    ap.add_argument(
        "--seeds",
        default=DEFAULT_SEEDS,
        help=f"comma-separated seeds or ranges, e.g. 1,2,3 or 1-5 "
        f"(default {DEFAULT_SEEDS}; ~2 s each)",
    )
    ap.add_argument(
        "--days",
        type=float,
        default=DEFAULT_DAYS,
        help=f"days of log per seed, >= 9 (default {DEFAULT_DAYS:g})",
    )
    ap.add_argument(
        "--start", default=DEFAULT_START, help=f"first day, UTC (default {DEFAULT_START}, a Monday)"
    )
    ap.add_argument(
        "--noise",
        type=float,
        default=1.0,
        help="scale of the internet background and CRON (default 1.0)",
    )
    ap.add_argument(
        "--config",
        metavar="FILE",
        help="take the detection settings from this sshmonitor config file "
        "(default: the built-in defaults, Config().detection)",
    )
    ap.add_argument(
        "--code", metavar="DIR", help="import sshmonitord from this checkout (first on sys.path)"
    )
    ap.add_argument(
        "--keep",
        metavar="DIR",
        help="keep each seed's log (seed-N.auth.log), its labels "
        "(.labels.json) and its findings, each with its label "
        "(.findings.jsonl)",
    )
    ap.add_argument(
        "--examples",
        type=int,
        default=2,
        help="high/critical findings on benign cases shown per kind, rule and severity (default 2)",
    )
    ap.add_argument("--json", action="store_true", help="one JSON document on stdout")
    ap.add_argument("--strict", action="store_true", help="exit 1 when the target is not met")
    args = ap.parse_args(argv)
    err = sys.stderr
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError:
        ap.error(f"--seeds: expected numbers like 1,2,3 or 1-5, got {args.seeds!r}")
    if args.days < 9:
        ap.error("--days must be at least 9 (7 days of learning, then the incidents)")
    if args.noise <= 0:
        ap.error("--noise must be positive")
    try:
        datetime.fromisoformat(args.start)
    except ValueError:
        ap.error(f"--start: not an ISO date: {args.start!r}")
    if args.code is not None:
        code = Path(args.code).resolve()
        if not (code / "sshmonitord" / "__init__.py").is_file():
            ap.error(f"--code: {code} holds no sshmonitord package")
        sys.path.insert(0, str(code))
    try:
        import sshmonitord
        from sshmonitord.config import Config, ConfigError, load_config
    except ImportError as exc:
        err.write(
            f"bench/detection.py: cannot import sshmonitord ({exc}); run it with the "
            "project's .venv/bin/python, or give --code DIR\n"
        )
        return 2
    if args.config:
        try:
            cfg = load_config(args.config)
        except (OSError, ConfigError) as exc:
            err.write(f"bench/detection.py: {args.config}: {exc}\n")
            return 2
    else:
        cfg = Config()
    pkg = Path(sshmonitord.__file__).resolve().parent
    meta = {
        "code": _code_meta(pkg.parent),
        "sshmonitord": str(pkg),
        "engine_sha256": _engine_sha(pkg),
        "config": f"config {args.config}" if args.config else "default config",
        "seeds": seeds,
        "days": args.days,
        "start": args.start,
        "noise": args.noise,
        "python": sys.version.split()[0],
    }
    keep = Path(args.keep) if args.keep else None
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    results: list[SeedResult] = []
    for seed in seeds:
        t = time.perf_counter()
        scenario = generate(seed, args.start, args.days, args.noise)
        gen_s = time.perf_counter() - t
        r = run_seed(scenario, cfg.detection, gen_s)
        results.append(r)
        err.write(
            f"  seed {seed}: {r.lines:,} lines, {gen_s:.1f} s to generate, "
            f"{r.run_seconds:.1f} s to parse and detect\n"
        )
        if keep is not None:
            scenario.write(keep / f"seed-{seed}.auth.log")
            with open(keep / f"seed-{seed}.auth.log.findings.jsonl", "w", encoding="utf-8") as fh:
                for lr in r.labels:
                    for h in lr.hits:
                        row = {"label": lr.label.id, "class": lr.label.cls, **h.as_dict()}
                        fh.write(json.dumps(row) + "\n")
                for h in r.background:
                    fh.write(
                        json.dumps({"label": None, "class": "background", **h.as_dict()}) + "\n"
                    )
    summary = summarize(results, args.examples)
    if args.json:
        json.dump({"meta": meta, **summary}, sys.stdout, indent=1, default=dict)
        sys.stdout.write("\n")
    else:
        print_text(summary, meta, sys.stdout)
    if keep is not None:
        err.write(f"  logs, labels and findings kept in {keep}{os.sep}\n")
    return 1 if args.strict and not summary["target"]["pass"] else 0


if __name__ == "__main__":
    sys.exit(main())
