"""Fleet mode's side of the store: PostgreSQL (docs/fleet.md).

Each host keeps its SQLite store; this package ships it to the fleet's PostgreSQL
(``replicator``), shares bans through the fleet's ban log (``bansync``), runs the fleet-wide
rules on the host that holds the leader lease (``leader``) and answers fleet-wide queries
(``queries``). Every SQL statement for PostgreSQL is in this package. psycopg is imported
only here, and only when a fleet is configured.
"""

from __future__ import annotations

import socket
from typing import Any

from ...config import FleetConfig

CONNECT_TIMEOUT = 5  # seconds: an unreachable database must not stall start-up or a reload


class FleetUnavailable(Exception):
    """psycopg is missing, or the fleet database cannot be reached (one line, for operators)."""


def host_name(cfg: FleetConfig) -> str:
    return cfg.host or socket.gethostname().split(".")[0]


def conninfo(cfg: FleetConfig, database: str | None = None, app: str = "sshmonitord") -> str:
    """The libpq connection string: the configured URI plus the password (never logged),
    a connect timeout and TCP keepalives so a dead peer is noticed in seconds."""
    try:
        from psycopg.conninfo import make_conninfo
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise FleetUnavailable(
            "fleet mode needs psycopg 3 and libpq (Debian: apt install python3-psycopg "
            f"libpq5; pip: pip install 'psycopg>=3.1.7'): {exc}"
        ) from exc
    extra: dict[str, Any] = {
        "application_name": app,
        "connect_timeout": CONNECT_TIMEOUT,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
    }
    if cfg.password:
        extra["password"] = str(cfg.password)
    return str(make_conninfo(database or cfg.database, **extra))


def redact(uri: str) -> str:
    """A database URI fit for a log line: no password, whatever the spelling."""
    try:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(uri)
        params.pop("password", None)
        return str(make_conninfo("", **params))
    except Exception:
        return "<fleet database>"
