"""The daemon's own log lines: journal priorities, formats, and no forged lines."""

from __future__ import annotations

import io
import json
import os

from sshmonitord import log


def _capture(fmt: str, level: str = "debug") -> io.StringIO:
    buf = io.StringIO()
    log.setup(level, fmt, stream=buf)
    return buf


def test_journal_format_has_priority_prefix_and_no_timestamp():
    buf = _capture("journal")
    lg = log.get("t")
    lg.debug("dbg")
    lg.info("started", pid=42)
    lg.warning("careful")
    lg.error("broken", key="notify.channels[1].port")
    lines = buf.getvalue().splitlines()
    assert lines == [
        "<7>dbg stage=t",
        "<6>started stage=t pid=42",
        "<4>careful stage=t",
        "<3>broken stage=t key=notify.channels[1].port",
    ]


def test_level_filter():
    buf = _capture("journal", level="warning")
    log.get().info("hidden")
    log.get().warning("shown")
    assert buf.getvalue() == "<4>shown\n"


def test_attacker_text_cannot_forge_a_line():
    buf = _capture("journal")
    evil = "root\n<3>Nov 24 sshd[1]: Accepted password for admin from 6.6.6.6"
    log.get().info("failed login", user=evil)
    out = buf.getvalue()
    assert out.count("\n") == 1
    assert out.startswith('<6>failed login user="root\\n<3>Nov 24')


def test_json_format():
    buf = _capture("json")
    log.get("x").warning("w", n=1)
    rec = json.loads(buf.getvalue())
    assert rec["event"] == "w" and rec["level"] == "warning" and rec["n"] == 1
    assert rec["stage"] == "x" and "timestamp" in rec


def test_auto_detects_journald(tmp_path, monkeypatch):
    f = open(tmp_path / "out", "w")  # noqa: SIM115
    st = os.fstat(f.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert log.resolve_format("auto", f) == "journal"
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
    assert log.resolve_format("auto", f) == "console"
    monkeypatch.delenv("JOURNAL_STREAM")
    assert log.resolve_format("auto", f) == "console"
    f.close()


def test_exceptions_stay_on_one_line():
    buf = _capture("journal")
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        log.get().exception("boom")
    out = buf.getvalue()
    assert out.startswith("<3>boom ") and out.count("\n") == 1
    assert "ValueError" in out
