"""Is journald here, and a journalctl to read it? (``sources.mode: auto`` asks; so does the
daemon's advice when the log files stay quiet.) Apart from journal.py so that a daemon
following files does not load the journal source (issue #17: memory)."""

from __future__ import annotations

import os
import stat

# journald's socket: present wherever journald runs (sources.mode: auto prefers the journal).
JOURNALD_SOCKET = "/run/systemd/journal/socket"


def journald_running(socket_path: str = JOURNALD_SOCKET) -> bool:
    """Does journald run here? Its socket exists wherever it does (and nowhere else)."""
    try:
        return stat.S_ISSOCK(os.stat(socket_path).st_mode)
    except OSError:
        return False


def journalctl_available(journalctl: str = "journalctl") -> bool:
    """Is there a journalctl to run (for ``sources.mode: auto``)?"""
    if os.sep in journalctl:
        return os.access(journalctl, os.X_OK)
    return any(
        os.access(os.path.join(d, journalctl), os.X_OK)
        for d in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
    )
