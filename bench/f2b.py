"""fail2ban as a peer in a benchmark: a private copy of the system's configuration and the
server's command line, everything it writes kept in one work directory. Shared by
bench/attack and bench/tail.py (``--peers fail2ban``)."""

from __future__ import annotations

import shutil
from pathlib import Path


def private_conf(work: Path, jail_local: str) -> Path:
    """``work/f2b``: a copy of /etc/fail2ban with jail.d emptied (Debian's
    defaults-debian.conf sets backend systemd), ``jail_local`` as jail.local, and log,
    socket, pid file and database in ``work``."""
    conf = work / "f2b"
    shutil.copytree("/etc/fail2ban", conf)
    for p in (conf / "jail.d").iterdir():
        p.unlink()
    (conf / "fail2ban.local").write_text(
        "[Definition]\n"
        "loglevel = INFO\n"
        f"logtarget = {work / 'fail2ban.log'}\n"
        f"socket = {work / 'f2b.sock'}\n"
        f"pidfile = {work / 'f2b.pid'}\n"
        f"dbfile = {work / 'f2b.sqlite3'}\n"
    )
    (conf / "jail.local").write_text(jail_local)
    return conf


def server_argv(work: Path, conf: Path) -> list[str]:
    """The server in the foreground (-f), its socket and pid file in ``work``."""
    return ["fail2ban-server", "-f", "-x", "-c", str(conf), "-s", str(work / "f2b.sock"),
            "-p", str(work / "f2b.pid")]  # fmt: skip
