"""Responses: firewall backends (this package) and, on top of them, the BanManager.

``make_backend(kind, **options)`` builds one of "nftables", "ipset", "command", "none";
see respond/backend.py for the interface and docs/firewall.md for what each one does.
"""

from .backend import (
    Backend,
    BackendError,
    IPNetwork,
    NoneBackend,
    NotSetUp,
    make_backend,
)

__all__ = ["Backend", "BackendError", "IPNetwork", "NoneBackend", "NotSetUp", "make_backend"]
