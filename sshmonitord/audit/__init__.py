"""The audit trail: SSH sessions and the commands and file transfers done in them.

* :mod:`.tracker`: :class:`SessionTracker` joins a stream's Events into sessions (pure logic
  plus calls into ``store/sessions.py``, which holds all of its SQL);
* :mod:`.proc`: what /proc says about a session's sshd process;
* :mod:`.stage`: :class:`SessionStage` (lost-session sweeps and retention pruning in the
  daemon) and :func:`settings_from` (the config's ``sessions`` and ``store.retention*``).

The auditd record grouper is the auditd source's (``sources/audit_records.py``); the
``sshmonitor sessions/session/events`` commands are in ``sshmonitord/cli/audit.py``.
"""

from .stage import SessionSettings, SessionStage, settings_from
from .tracker import Session, SessionTracker

__all__ = ["Session", "SessionSettings", "SessionStage", "SessionTracker", "settings_from"]
