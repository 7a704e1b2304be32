"""Responses: firewall backends (this package) and, on top of them, the BanManager.

``make_backend(kind, **options)`` builds one of "nftables", "ipset", "command", "none";
``backend_for(response_config, dry_run)`` the one the config asks for (respond/backends.py).
See respond/backend.py for the interface and docs/firewall.md for what each one does.
"""

from .backend import Backend, BackendError, IPNetwork, NoneBackend, NotSetUp
from .backends import KINDS, backend_for, make_backend

__all__ = [
    "KINDS",
    "Backend",
    "BackendError",
    "IPNetwork",
    "NoneBackend",
    "NotSetUp",
    "backend_for",
    "make_backend",
]
