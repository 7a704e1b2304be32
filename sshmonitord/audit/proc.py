"""What /proc says about the sshd processes of the sessions (this host only).

The tracker closes a session as lost when its monitor pid is provably gone; "provably" needs
other users' processes to be visible here, which :func:`proc_visible` tells.
"""

from __future__ import annotations

import os

# Programs whose pid we may check in /proc.
_SSHD_COMMS = ("sshd", "sshd-session")


def proc_visible() -> bool:
    """Whether this process sees other users' processes in /proc (PID 1 is root's).

    False under systemd's ``ProtectProc=invisible`` (the shipped unit), ``hidepid=``, or
    without /proc at all: then a missing /proc/PID proves nothing.
    """
    try:
        os.stat("/proc/1/stat")
        return True
    except OSError:
        return False


def pid_gone(pid: int) -> bool | None:
    """True if no sshd process has this pid any more (gone, a zombie, or reused by a
    program that is not sshd); False if one still does; None if we cannot tell."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except FileNotFoundError:
        return True
    except OSError:
        return None
    comm = stat[stat.find("(") + 1 : stat.rfind(")")]
    state = stat[stat.rfind(")") + 2 :].split(" ", 1)[0]
    if state in ("Z", "X"):
        return True
    return not comm.startswith(_SSHD_COMMS)
