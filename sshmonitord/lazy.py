"""A package's names loaded on first use (PEP 562), so that importing one of its modules does
not load all of them.

The daemon needs everything; ``sshmonitor`` and its replay need a few helpers of ``notify``
and ``respond``, and those packages' channels, backends and report scheduler bring asyncio
(ssl with it), structlog and the store: ~7 MB in each of replay's two processes (issue #17).
A package lists where its lazy names live and assigns ``__getattr__ = exports(__name__,
{name: submodule})``; what a type checker sees it imports under ``TYPE_CHECKING``.

A name must not be a submodule's name too: importing the submodule binds the module under
that name in the package, and the module would then be what ``from package import name``
gets. Such a name is imported eagerly instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def exports(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` giving ``package``'s name ``n`` from its submodule
    ``where[n]``, imported then (and kept in the package, so looked up once)."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f"{package}.{module}"), name)
        setattr(import_module(package), name, value)
        return value

    return __getattr__
