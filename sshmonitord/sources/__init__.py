"""Log sources: they produce Lines and nothing else (files: tailer.py; journal: journal.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .. import log
from ..config import Config
from ..events import FilePosition
from .auditd import AuditSource
from .journal import JournalSource, journalctl_available
from .tailer import Tailer


def choose(cfg: Config) -> tuple[str, list[str]]:
    """Resolve ``sources.mode``: ("file", paths) or ("journal", [])."""
    s = cfg.sources
    if s.mode == "file":
        return "file", list(s.files)
    if s.mode == "journal":
        return "journal", []
    present = [p for p in s.files if os.path.exists(p)]
    readable = [p for p in present if os.access(p, os.R_OK)]
    for p in present:
        if p not in readable:
            log.get("sources").error(
                "log file exists but is not readable by this user; skipping it",
                path=p,
                uid=os.getuid(),
                hint="add the service user to the file's group, or grant CAP_DAC_READ_SEARCH "
                "(see docs/systemd.md)",
            )
    if readable:
        return "file", readable
    if s.journal.files or s.journal.directory or journalctl_available(s.journal.journalctl):
        return "journal", []
    # Neither: wait for the files (rsyslog may not have created them yet).
    return "file", list(s.files)


def build(
    cfg: Config,
    emit: Callable[[list[Any]], Any],
    saved_files: dict[str, list[FilePosition]],
    saved_cursor: str | None,
) -> list[Any]:
    """The source stages for this config."""
    mode, paths = choose(cfg)
    s = cfg.sources
    log.get("sources").info("sources chosen", mode=mode, configured=s.mode, paths=paths or None)
    stages: list[Any]
    if mode == "journal":
        stages = [
            JournalSource(
                emit,
                s.journal.journalctl,
                s.journal.matches,
                saved_cursor,
                s.start_at,
                s.journal.directory,
                s.journal.files,
            )
        ]
    else:
        paths = [p for p in paths if not (s.audit.enabled and p == s.audit.path)]
        stages = [
            Tailer(paths, emit, saved_files, s.start_at, float(s.poll_interval), s.max_line_length)
        ]
    if s.audit.enabled:
        # auditd's log beside sshd's: commands run in each session (docs/auditd.md).
        stages.append(
            AuditSource(
                s.audit.path,
                emit,
                saved_files,
                s.start_at,
                float(s.poll_interval),
                s.max_line_length,
                end_of_event_timeout=float(s.audit.end_of_event_timeout),
            )
        )
    return stages
