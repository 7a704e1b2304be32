"""bench/tail.py idle --peers: other processes measured the same way, in the same run.

Held here: the floor peer (a bare asyncio loop on a 1 s timer) is really started and
measured over the same windows as the daemon, its figures are its own (it has one thread and
wakes about once a second; the daemon has more), the side-by-side table is printed, and a
bad --peers gets one clear line. The figures themselves are not asserted. fail2ban as a peer
needs fail2ban installed, which CI does not do (its package starts a service that bans on
this machine's firewall); it is run by hand, as bench/attack is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAIL = str(ROOT / "bench" / "tail.py")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, TAIL, *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_floor_peer_measured_like_the_daemon() -> None:
    common = ["idle", "--seconds", "2.5", "--settle", "0.5", "--noise-styles", "held"]
    proc = run(*common, "--noise-rate", "20", "--peers", "floor", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["engine"] == "sshmonitord"
    assert [p["engine"] for p in doc["peers"]] == ["floor"]
    floor = doc["peers"][0]
    assert "sleep(1)" in " ".join(floor["command"])
    windows = [r["window"] for r in doc["results"]]
    assert windows == [r["window"] for r in floor["results"]] == ["quiet", "sibling held 20/s"]
    for r in floor["results"]:
        assert r["threads"] == 1
        assert r["wakeups_per_s"] < 3  # its timer, not the sibling's writes
        assert r["cpu_s_clock"] is not None
    assert [r["threads"] for r in doc["results"]] != [1, 1]  # the daemon's, not the floor's
    text = run(*common, "--peers", "floor")
    assert text.returncode == 0, text.stderr
    assert "## floor:" in text.stdout
    assert "sshmonitord % core" in text.stdout and "floor % core" in text.stdout


def test_unknown_peer_is_one_clear_line() -> None:
    proc = run("idle", "--peers", "sshguard")
    assert proc.returncode == 2
    assert "--peers: unknown sshguard; choose from fail2ban, floor" in proc.stderr
    assert "Traceback" not in proc.stderr
