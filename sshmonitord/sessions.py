"""Compatibility shim: the audit trail moved to the :mod:`sshmonitord.audit` package (#12).

daemon.py and pipeline.py still import these three names from here; once they import from
``.audit``, delete this module.
"""

from .audit import SessionStage, SessionTracker, settings_from

__all__ = ["SessionStage", "SessionTracker", "settings_from"]
