"""bench/stages.py: per-stage timings of two trees side by side (issue #17).

Held here: the script runs, reports every stage for this tree, and times the *given* tree's
code for --baseline (not the package installed here). The figures are not asserted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import gen_authlog  # noqa: E402  (a script, not a package)


def test_stages_of_this_tree_and_of_a_baseline(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    gen_authlog.generate(
        str(log), 3000, 5, datetime(2026, 11, 16, tzinfo=UTC), 1, "web1", 0.3, quiet=True
    )
    # A baseline tree without replay's parse process: its hand-off stages must be missing,
    # which they are only if that tree's code is what ran.
    old = tmp_path / "old"
    shutil.copytree(ROOT / "sshmonitord", old / "sshmonitord")
    (old / "sshmonitord" / "parse_worker.py").unlink()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "stages.py"), "--file", str(log), "--lines",
         "3000", "--rounds", "1", "--runs", "1", "--baseline", str(old), "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    this = doc["trees"]["this"]["best_us_per_line"]
    base = doc["trees"]["baseline"]["best_us_per_line"]
    assert set(this) == {
        "parse", "detect", "pack", "pickle", "unpickle", "unpack", "row", "floor"
    }  # fmt: skip
    assert set(base) == {"parse", "detect", "row", "floor"}
    assert all(v > 0 for v in [*this.values(), *base.values()])
    assert doc["trees"]["baseline"]["path"] == str(old.resolve())
    # The ceilings are the stages' arithmetic; the hand-off's only where its stages ran.
    ceil = doc["trees"]["this"]["ceiling_lines_per_s"]
    assert set(ceil) == {
        "one process, parse", "one process, floor", "two processes, parse",
        "two processes, floor",
    }  # fmt: skip
    assert set(doc["trees"]["baseline"]["ceiling_lines_per_s"]) == {
        "one process, parse", "one process, floor"
    }  # fmt: skip
    child = this["parse"] + this["pack"] + this["pickle"]
    parent = this["unpickle"] + this["unpack"] + this["detect"]
    # From the best figures as printed (rounded to 0.001 µs): within 1 % of the script's own.
    assert abs(ceil["two processes, parse"] / (1e6 / max(child, parent)) - 1) < 1e-2
    assert abs(ceil["one process, floor"] / (1e6 / (this["floor"] + this["detect"])) - 1) < 1e-2


def test_stages_refuses_a_tree_that_is_not_one(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "stages.py"), "--file", str(log), "--baseline",
         str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "no sshmonitord/ in it" in proc.stderr
    assert "Traceback" not in proc.stderr
