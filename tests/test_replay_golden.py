"""Speed work must not change a result: replay of generated logs against the output of the
code before it (issue #17).

Two logs from bench/gen_authlog.py (fixed seed and start: the same bytes on every machine) —
an attack-heavy one (95 % of lines from attacks) and a default one (a third CRON) — go through
``Replay`` in-process with the default config. Every event (its replay JSON), every finding
(rule, subject, severity, action, summary, the evidence's times) and every planned ban is
folded into a SHA-256 per stream; tests/data/replay_golden.json holds the digests and counts
written by the code as it was before the speed work (commit 5ad1650), by::

    .venv/bin/python tests/test_replay_golden.py --write

Regenerate it only for a change that *means* to change results, and say so in the commit.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "bench"))

import gen_authlog  # noqa: E402  (a script, not a package)

from sshmonitord import replay as replay_mod  # noqa: E402
from sshmonitord.config import Config  # noqa: E402
from sshmonitord.events import Finding  # noqa: E402
from sshmonitord.replay import Replay, event_json  # noqa: E402

GOLDEN = HERE / "data" / "replay_golden.json"
START = datetime(2026, 11, 16, tzinfo=UTC)
LOGS = {
    # name: (lines, seed, days, attack share or None for the default mix)
    "attack": (60_000, 7, 0.5, 0.95),
    "default": (60_000, 3, 1.0, None),
}


def make_log(directory: Path, name: str) -> Path:
    lines, seed, days, attack = LOGS[name]
    cron = 0.35 if attack is None else gen_authlog.cron_share_for(attack, lines, days)
    out = directory / f"{name}.log"
    gen_authlog.generate(str(out), lines, seed, START, days, "web1", cron, quiet=True)
    return out


def fingerprint(path: Path, jobs: int = 1) -> dict[str, Any]:
    """Digests and counts of everything replay decides about ``path``."""
    r = Replay(UTC, config=Config(), jobs=jobs)
    findings: list[Finding] = []
    seen_finding = r._finding

    def finding(f: Finding, now: float) -> None:
        findings.append(f)
        seen_finding(f, now)

    r._finding = finding  # type: ignore[method-assign]
    ev_hash = hashlib.sha256()
    n_events = 0
    for ev in r.events([str(path)]):
        ev_hash.update(json.dumps(event_json(ev), sort_keys=True).encode())
        ev_hash.update(b"\n")
        n_events += 1
    f_hash = hashlib.sha256()
    for f in findings:
        row = [
            f.rule,
            str(f.severity),
            f.subject,
            str(f.action),
            f.summary,
            [e.ts.isoformat() for e in f.events],
        ]
        f_hash.update(json.dumps(row).encode() + b"\n")
    d = replay_mod.summary_dict(r)
    b_hash = hashlib.sha256()
    for b in d["bans"]:
        b_hash.update(json.dumps(b, sort_keys=True).encode() + b"\n")
    return {
        "lines": d["lines"],
        "events": n_events,
        "kinds": d["kinds"],
        "findings": len(findings),
        "findings_by_rule": d["findings_by_rule"],
        "bans": d["bans_that_would_be_placed"],
        "distinct_offenders": d["distinct_offenders"],
        "top_offenders": d["top_offenders"],
        "events_sha256": ev_hash.hexdigest(),
        "findings_sha256": f_hash.hexdigest(),
        "bans_sha256": b_hash.hexdigest(),
    }


@pytest.fixture(autouse=True)
def _list_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every ban in the digest, not the first 1,000 the summary lists.
    monkeypatch.setattr(replay_mod, "MAX_FINDINGS_LISTED", 10**9)


@pytest.mark.parametrize("jobs", [1, 2], ids=["one-process", "parse-process"])
@pytest.mark.parametrize("name", sorted(LOGS))
def test_replay_results_unchanged(name: str, jobs: int, tmp_path: Path) -> None:
    want = json.loads(GOLDEN.read_text())[name]
    got = fingerprint(make_log(tmp_path, name), jobs)
    # Counts first: a mismatch there says what changed; the digests catch the rest.
    for key in ("lines", "events", "kinds", "findings_by_rule", "bans", "top_offenders"):
        assert got[key] == want[key], key
    assert got == want


def test_the_logs_are_attack_heavy_and_default(tmp_path: Path) -> None:
    """What the golden logs are meant to be (so a generator change cannot quietly make them
    trivial): ≥ 90 % events in the attack log, findings and bans in both."""
    want = json.loads(GOLDEN.read_text())
    assert want["attack"]["events"] >= 0.9 * want["attack"]["lines"]
    assert want["default"]["events"] < 0.8 * want["default"]["lines"]
    for name in LOGS:
        assert want[name]["findings"] > 50 and want[name]["bans"] > 10, name


def main() -> int:
    if sys.argv[1:] != ["--write"]:
        sys.stderr.write(__doc__ or "")
        return 2
    import tempfile

    replay_mod.MAX_FINDINGS_LISTED = 10**9
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        for name in sorted(LOGS):
            out[name] = fingerprint(make_log(Path(d), name))
            print(name, {k: v for k, v in out[name].items() if "sha" in k or k == "events"})
    GOLDEN.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
