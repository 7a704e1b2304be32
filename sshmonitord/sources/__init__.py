"""Log sources: they produce Lines and nothing else (files: tailer.py; journal: journal.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .. import log
from ..config import Config
from ..events import FilePosition
from .journald import JOURNALD_SOCKET, journalctl_available, journald_running
from .tailer import Tailer


def choose(cfg: Config, journald_socket: str = JOURNALD_SOCKET) -> tuple[str, list[str]]:
    """Resolve ``sources.mode``: ("file", paths) or ("journal", []).

    ``auto`` prefers the journal wherever journald runs: in a text log file, a line written
    with ``logger -t sshd`` by any local user looks exactly like sshd's own, while the
    journal records who really sent each line (docs/security.md)."""
    s = cfg.sources
    if s.mode == "file":
        return "file", list(s.files)
    if s.mode == "journal":
        return "journal", []
    j = s.journal
    if j.files or j.directory:
        return "journal", []
    if journald_running(journald_socket) and journalctl_available(j.journalctl):
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
    # Every readable file, and every one that does not exist yet: the tailer waits for those
    # and reads them from their first line when they appear (rsyslog installed, or its first
    # line written, after we started). Only files we cannot read are left out.
    follow = [p for p in s.files if p in readable or p not in present]
    return "file", follow or list(s.files)


def journal_start_time(
    saved_times: dict[tuple[str, int, int], float] | None, exclude: set[str]
) -> float | None:
    """Where the journal takes over from files: the newest time a file position was saved.
    What sshd logged after it was never read from the files; what came before was."""
    times = [t for (path, _dev, _ino), t in (saved_times or {}).items() if path not in exclude]
    return max(times) if times else None


def build(
    cfg: Config,
    emit: Callable[[list[Any]], Any],
    saved_files: dict[str, list[FilePosition]],
    saved_cursor: str | None,
    saved_times: dict[tuple[str, int, int], float] | None = None,
    journald_socket: str = JOURNALD_SOCKET,
) -> list[Any]:
    """The source stages for this config.

    ``saved_times``: when each saved file position was written (Store.file_position_times).
    A host that followed files and now follows the journal, with no journal cursor yet,
    starts the journal there: no gap, and no history read (and alerted on) twice."""
    mode, paths = choose(cfg, journald_socket)
    s = cfg.sources
    logger = log.get("sources")
    logger.info("sources chosen", mode=mode, configured=s.mode, paths=paths or None)
    stages: list[Any]
    if mode == "journal":
        from .journal import JournalSource  # only where the journal is followed (memory)

        since = None
        if saved_cursor is None:
            # auditd's log is followed in journal mode too: its position says nothing of
            # where sshd's lines were read to.
            since = journal_start_time(saved_times, {s.audit.path})
            if since is not None:
                logger.info(
                    "switching from log files to the journal: starting where the files left off",
                    since=datetime.fromtimestamp(since, UTC).isoformat(),
                )
        stages = [
            JournalSource(
                emit,
                s.journal.journalctl,
                s.journal.matches,
                saved_cursor,
                s.start_at,
                s.journal.directory,
                s.journal.files,
                trust=s.journal.trusted,
                since=since,
            )
        ]
    else:
        # Said loudly where the journal was there to use; without journald there is no choice.
        say = logger.warning if journald_running(journald_socket) else logger.info
        say(
            "following text log files: any local user can write lines that look like sshd's "
            "(logger -t sshd) and get an address banned; the journal is not forgeable so "
            "(docs/security.md)"
        )
        paths = [p for p in paths if not (s.audit.enabled and p == s.audit.path)]
        stages = [
            Tailer(
                paths,
                emit,
                saved_files,
                s.start_at,
                float(s.poll_interval),
                s.max_line_length,
                saved_times=saved_times,
                # The pipeline stores a batch's last position per file: the others are waste.
                # auditd's source groups records by position, so it keeps one on every Line.
                each_position=False,
            )
        ]
    if s.audit.enabled:
        from .auditd import AuditSource  # only where auditd's log is followed (memory)

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
