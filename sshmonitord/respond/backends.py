"""Which firewall backend: by name (``make_backend``) or from the config (``backend_for``).

Its own module, above the backends: the factory names every backend and every backend
imports the shared pieces of backend.py, so a factory in backend.py was an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config import ResponseConfig
from .backend import Backend, NoneBackend

__all__ = ["KINDS", "backend_for", "make_backend"]

KINDS = ("nftables", "ipset", "command", "none")


def _nftables() -> Callable[..., Backend]:
    from .nftables import NftBackend

    return NftBackend


def _ipset() -> Callable[..., Backend]:
    from .ipset import IpsetBackend

    return IpsetBackend


def _command() -> Callable[..., Backend]:
    from .command import CommandBackend

    return CommandBackend


# Each backend's constructor takes its own options; what they share is the Protocol. Each
# module is imported when its backend is built: a host loads the one it uses (issue #17).
_CLASSES: dict[str, Callable[[], Callable[..., Backend]]] = {
    "nftables": _nftables,
    "ipset": _ipset,
    "command": _command,
    "none": lambda: NoneBackend,
}


def make_backend(kind: str, **options: Any) -> Backend:
    """Build a backend by name: "nftables", "ipset", "command" or "none"."""
    load = _CLASSES.get(kind)
    if load is None:
        raise ValueError(f"unknown firewall backend {kind!r} (choose from {', '.join(KINDS)})")
    cls = load()
    try:
        return cls(**options)
    except TypeError as e:
        raise ValueError(f"backend {kind}: {e}") from e


def backend_for(response: ResponseConfig, dry_run: bool = False) -> Backend:
    """The backend ``response`` configures. A dry run (``--dry-run`` or ``response.dry_run``)
    and disabled responses touch no firewall: the "none" backend, which only remembers."""
    r = response
    if dry_run or r.dry_run or not r.enabled:
        return make_backend("none")
    if r.backend == "nftables":
        return make_backend("nftables", table=r.nft_table)
    if r.backend == "ipset":
        return make_backend("ipset", set4=r.ipset_names[0], set6=r.ipset_names[-1])
    if r.backend == "command":
        return make_backend("command", ban=list(r.ban_command), unban=list(r.unban_command))
    return make_backend("none")
