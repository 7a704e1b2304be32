"""`sshmonitor replay` end to end: files, .gz, stdin, JSON shape, time window, New Year."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from datetime import UTC, datetime

from sshmonitord.parse import Parser
from sshmonitord.parse.prefix import TimeContext

KEYS = [
    "ts",
    "host",
    "program",
    "pid",
    "kind",
    "user",
    "ip",
    "port",
    "method",
    "key_fp",
    "count",
    "detail",
]

LOG = """\
Dec 31 23:59:58 web1 sshd[10]: Failed password for root from 203.0.113.5 port 1000 ssh2
Dec 31 23:59:59 web1 CRON[11]: pam_unix(cron:session): session opened for user root
Jan  1 00:00:01 web1 sshd[10]: Failed password for root from 203.0.113.5 port 1000 ssh2
Jan  1 00:00:02 web1 sshd[12]: Accepted publickey for alice from 2001:db8::7 port 2222 ssh2: ED25519 SHA256:AbCdEf0123456789
Jan  1 00:00:03 web1 sshd[10]: message repeated 3 times: [ Failed password for root from 203.0.113.5 port 1000 ssh2]
Jan  1 00:00:04 web1 sshd[13]: Server listening on 0.0.0.0 port 22.
Jan  1 00:00:05 web1 sshd[13]: Some message nobody has catalogued yet
"""


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from sshmonitord.cli import main; sys.exit(main())",
            "replay",
            "--timezone",
            "UTC",
            *args,
        ],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
    )


def _write(tmp_path, text: str, mtime: datetime):
    p = tmp_path / "auth.log"
    p.write_text(text)
    os.utime(p, (mtime.timestamp(), mtime.timestamp()))
    return p


def test_json_events_have_exactly_the_keys_and_years_across_new_year(tmp_path):
    p = _write(tmp_path, LOG, datetime(2027, 1, 1, 0, 1, tzinfo=UTC))
    r = _run("--format", "json", str(p))
    assert r.returncode == 0, r.stderr
    evs = [json.loads(line) for line in r.stdout.splitlines()]
    assert all(list(e) == KEYS for e in evs)
    assert [e["kind"] for e in evs] == [
        "auth_failure",
        "auth_failure",
        "auth_success",
        "auth_failure",
    ]
    assert evs[0]["ts"] == "2026-12-31T23:59:58Z"
    assert evs[1]["ts"] == "2027-01-01T00:00:01Z"
    assert evs[2]["ip"] == "2001:db8::7" and evs[2]["key_fp"] == "SHA256:AbCdEf0123456789"
    assert evs[3]["count"] == 3
    summary = json.loads(r.stderr)
    assert summary["lines"] == 7 and summary["unrecognized"] == 1
    assert summary["unrecognized_samples"] == [LOG.splitlines()[-1]]
    assert summary["top_offenders"][0] == {"ip": "203.0.113.5", "failures": 5, "user": "root"}


def test_gz_and_stdin_and_text_summary(tmp_path):
    gz = tmp_path / "auth.log.2.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(LOG)
    r = _run(str(gz))
    assert r.returncode == 0, r.stderr
    assert "7 lines" in r.stdout and "auth_failure" in r.stdout
    assert "Unrecognized sshd lines: 1" in r.stdout
    r2 = _run("--format", "json", "--summary", "-", stdin=LOG)
    d = json.loads(r2.stdout)
    assert d["kinds"]["auth_failure"] == 3 and d["kinds"]["ignored"] == 1


def test_time_window(tmp_path):
    p = _write(tmp_path, LOG, datetime(2027, 1, 1, 0, 1, tzinfo=UTC))
    r = _run(
        "--format",
        "json",
        "--from",
        "2027-01-01T00:00:00",
        "--to",
        "2027-01-01T00:00:02+00:00",
        str(p),
    )
    kinds = [json.loads(x)["kind"] for x in r.stdout.splitlines()]
    assert kinds == ["auth_failure", "auth_success"]


def test_bad_arguments(tmp_path):
    r = _run(str(tmp_path / "missing.log"))
    assert r.returncode == 2 and "no such file" in r.stderr
    r = _run("--from", "yesterday-ish", "-", stdin="")
    assert r.returncode == 2 and "is neither a duration" in r.stderr


def test_year_inference_live_and_replay():
    tc = TimeContext()
    tc.set_reference(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC))
    # A writer whose clock is a second ahead: Jan 1 belongs to the next year.
    assert tc.classic("Jan  1 00:00:00").year == 2027
    assert tc.classic("Dec 31 23:59:58").year == 2026
    tc.set_reference(datetime(2027, 3, 1, tzinfo=UTC))
    assert tc.classic("Nov 24 10:00:00").year == 2026  # never in the future
    assert tc.classic("Feb 29 10:00:00") is None or tc.classic("Feb 29 10:00:00").year == 2024


def test_zone_applies_to_classic_stamps_only():
    from zoneinfo import ZoneInfo

    p = Parser(zone=ZoneInfo("Europe/Berlin"), reference=datetime(2026, 11, 25, tzinfo=UTC))
    ev = p.parse_text("Nov 24 21:45:48 h sshd[1]: Invalid user a from 192.0.2.1 port 1")
    assert ev.ts == datetime(2026, 11, 24, 20, 45, 48, tzinfo=UTC)
    ev = p.parse_text("2026-11-24T21:45:48.5+01:00 h sshd[1]: Invalid user a from 192.0.2.1 port 1")
    assert ev.ts == datetime(2026, 11, 24, 20, 45, 48, 500000, tzinfo=UTC)


def test_replay_takes_the_whole_config_allowlist_and_ban_lengths(tmp_path):
    """Issue #12: cli handed replay the detection config only, so it planned bans on
    allowlisted addresses and with the default ban length. Now: the daemon's policy, the
    config's allowlist and bantime."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text("allowlist: [192.0.2.0/24]\nresponse: {bantime: 1h, backend: none}\n")
    lines = []
    for i in range(10):
        for n, ip in ((1, "192.0.2.9"), (2, "203.0.113.5")):
            lines.append(
                f"2026-11-24T21:00:{i:02d}+00:00 web1 sshd[{n}{i}]: Failed password for root "
                f"from {ip} port 1 ssh2\n"
            )
    p = _write(tmp_path, "".join(lines), datetime(2026, 11, 25, tzinfo=UTC))
    r = _run("--config", str(cfg), "--format", "json", "--summary", str(p))
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["bans_that_would_be_placed"] == 1
    assert [(b["net"], b["rule"], b["offence"], b["seconds"]) for b in d["bans"]] == [
        ("203.0.113.5/32", "bruteforce", 1, 3600)
    ]
    text = _run("--config", str(cfg), str(p)).stdout
    assert "1 bans would be placed" in text and "203.0.113.5/32" in text
