"""What `sshmonitor` and its replay load (issue #17, replay's memory).

Replay runs in two processes, the parse process forked from the first, so every module the
command loads is paid twice. asyncio (ssl with it), structlog and logging, and the store
package cost ~7 MB a process, and replay needs none of them: the packages that would bring
them in load those parts on first use (sshmonitord/lazy.py), and the modules that need them
import them where they run. Checked on real processes, with ``python -X importtime`` (every
module a process imports, the forked parse process's too).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sshmonitord.lazy import exports

ROOT = Path(__file__).resolve().parent.parent
# Loaded by the daemon, never by replay.
HEAVY = ("asyncio", "structlog", "logging", "ssl", "sshmonitord.store", "sshmonitord.log")
LOG = (
    "Nov 24 12:00:0{i} web1 sshd[{pid}]: Failed password for root from 203.0.113.9 port "
    "{port} ssh2\n"
)


def imported(args: list[str], cwd: Path) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """The modules a fresh ``python -X importtime ARGS`` imports (its children's too)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    assert names, proc.stderr[-2000:]
    return names, proc


def test_replay_in_two_processes_loads_no_daemon_machinery(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("".join(LOG.format(i=i, pid=100 + i, port=4000 + i) for i in range(6)))
    cfg = tmp_path / "sshmonitor.yaml"
    cfg.write_text("detection:\n  rules:\n    bruteforce:\n      threshold: 5\n")
    names, proc = imported(
        [
            "-m",
            "sshmonitord.cli",
            "replay",
            "--config",
            str(cfg),
            "--jobs",
            "2",
            "--summary",
            "--format",
            "json",
            "--timezone",
            "UTC",
            str(log),
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["lines"] == 6 and summary["kinds"]["auth_failure"] == 6
    assert summary["findings_by_rule"] == {"bruteforce": 1}  # replay did its whole job
    assert summary["bans_that_would_be_placed"] == 1
    assert "sshmonitord.parse_worker" in names  # the two-process path ran
    assert not names.intersection(HEAVY), sorted(names.intersection(HEAVY))


@pytest.mark.parametrize("command", ["--help", "replay --help", "report --help", "events --help"])
def test_the_command_line_parser_loads_no_daemon_machinery(tmp_path: Path, command: str) -> None:
    names, proc = imported(["-m", "sshmonitord.cli", *command.split()], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "usage: sshmonitor" in proc.stdout
    assert not names.intersection(HEAVY), sorted(names.intersection(HEAVY))


LAZY_PACKAGES = ("sshmonitord.notify", "sshmonitord.respond", "sshmonitord.notify.report")


def test_every_lazy_name_is_the_submodules_object() -> None:
    """In a fresh process, after replay loaded what it loads (render.py among it: a name that
    is also a submodule's would come back as the module), every name a lazy package exports
    is its submodule's own object, by both ways of asking."""
    code = (
        "import importlib, json, sshmonitord.replay\n"
        f"out = {{}}\nfor pkg in {LAZY_PACKAGES!r}:\n"
        "    m = importlib.import_module(pkg)\n"
        "    for name in m.__all__:\n"
        "        obj = getattr(m, name)\n"
        "        ns = {}\n"
        "        exec(f'from {pkg} import {name} as x', ns)\n"
        "        out[f'{pkg}.{name}'] = [obj is ns['x'], getattr(obj, '__module__', None),\n"
        "                                type(obj).__name__]\n"
        "print(json.dumps(out))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert len(got) > 30
    for name, (same, _module, kind) in got.items():
        assert same, name
        assert kind != "module", name  # never a submodule standing in for the name
    # And they are what the submodules define, in this process too.
    sub = importlib.import_module
    notify = sub("sshmonitord.notify")
    assert notify.render is sub("sshmonitord.notify.render").render
    assert notify.Channel is sub("sshmonitord.notify.channels").Channel
    respond = sub("sshmonitord.respond")
    assert respond.make_backend is sub("sshmonitord.respond.backends").make_backend


def test_an_unknown_name_is_an_attribute_error() -> None:
    getattr_ = exports("sshmonitord.notify", {"render": "render"})
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        getattr_("nope")
    import sshmonitord.notify

    with pytest.raises(AttributeError):
        sshmonitord.notify.does_not_exist  # noqa: B018
    with pytest.raises(ImportError):
        exec("from sshmonitord.respond import does_not_exist", {})
