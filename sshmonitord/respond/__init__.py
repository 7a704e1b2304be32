"""Responses: firewall backends (this package) and, on top of them, the BanManager.

``make_backend(kind, **options)`` builds one of "nftables", "ipset", "command", "none";
``backend_for(response_config, dry_run)`` the one the config asks for (respond/backends.py).
See respond/backend.py for the interface and docs/firewall.md for what each one does.
"""

from typing import TYPE_CHECKING

from ..lazy import exports

if TYPE_CHECKING:
    from .backend import Backend, BackendError, IPNetwork, NoneBackend, NotSetUp
    from .backends import KINDS, backend_for, make_backend

# The backends load with their first use (sshmonitord/lazy.py): replay needs the ban policy
# (respond/policy.py) only.
__getattr__ = exports(
    __name__,
    {
        "Backend": "backend",
        "BackendError": "backend",
        "IPNetwork": "backend",
        "NoneBackend": "backend",
        "NotSetUp": "backend",
        "KINDS": "backends",
        "backend_for": "backends",
        "make_backend": "backends",
    },
)

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
