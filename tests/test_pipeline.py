"""The running daemon: lines appended to a followed file become stored events."""

from __future__ import annotations

import json
import sqlite3
import time


def _events(db) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(
            "SELECT kind, user, ip, port, method, count FROM events ORDER BY id"
        ).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def test_appended_lines_become_events(tmp_path, daemon_factory):
    log = tmp_path / "auth.log"
    log.write_text(
        "Nov 24 01:00:00 web1 sshd[1]: Failed password for old from 192.0.2.1 port 1 ssh2\n"
    )
    d = daemon_factory(f"sources: {{mode: file, files: [{log}], poll_interval: 200ms}}\n")
    d.wait_log("sshmonitord started")
    with open(log, "a") as fh:
        fh.write(
            "Nov 24 21:45:48 web1 sshd[7]: Failed password for root from 203.0.113.5 "
            "port 4000 ssh2\n"
            "Nov 24 21:45:49 web1 CRON[8]: pam_unix(cron:session): session opened\n"
            "Nov 24 21:45:50 web1 sshd[7]: message repeated 2 times: [ Failed password "
            "for root from 203.0.113.5 port 4000 ssh2]\n"
            "Nov 24 21:45:51 web1 sshd[9]: Server listening on :: port 22.\n"
            "Nov 24 21:45:52 web1 sshd[9]: Accepted password for alice from 2001:db8::1 "
            "port 5000 ssh2\n"
        )
    db = d.state_dir / "sshmonitor.db"
    deadline = time.monotonic() + 10
    while len(_events(db)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    # start_at: end — the old line is history and not read; ignored lines are not stored.
    assert _events(db) == [
        ("auth_failure", "root", "203.0.113.5", 4000, "password", 1),
        ("auth_failure", "root", "203.0.113.5", 4000, "password", 2),
        ("auth_success", "alice", "2001:db8::1", 5000, "password", 1),
    ]
    st = json.loads(d.cli("status", "--socket", str(d.socket_path), "--json").stdout)
    assert st["counters"]["events.auth_failure"] == 2
    pipe = next(s for s in st["stages"] if s["name"] == "pipeline")
    assert pipe["stats"]["other_programs"] == 1
    assert st["status"].startswith(f"following {log}")
