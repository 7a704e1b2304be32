"""Command backend: run your own program to ban and unban (a cloud firewall API, a router...).

Templates are argv lists; placeholders are replaced inside single argv elements, never by a
shell::

    ban:   ["/usr/local/bin/myban", "--add", "{ip}", "--for", "{seconds}"]
    unban: ["/usr/local/bin/myban", "--del", "{prefix}"]

* ``{ip}``      the address without a prefix for a single host (``203.0.113.5``, ``2001:db8::1``),
                the network in CIDR form otherwise (``2001:db8:1:2::/64``);
* ``{prefix}``  always CIDR (``203.0.113.5/32``);
* ``{seconds}`` the ban duration (ban only);
* ``{family}``  ``4`` or ``6``.

Values are formatted by us from ``ipaddress`` objects (digits, dots, colons, hex, a slash), so
they can never start with ``-`` or carry a space. The program name (``argv[0]``) cannot hold a
placeholder. The backend cannot ask your firewall what is banned: ``list()`` answers from
memory (empty after a restart) with the time left until each ban is due to end — 0 means "due:
call unban()". Set ``expires=True`` if your program expires bans itself; then ``list()`` drops
ended bans by itself and the BanManager need not call ``unban()`` for them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .backend import (
    BackendError,
    IPNetwork,
    MemoryBans,
    check_items,
    check_nets,
    check_wrapper,
    host_text,
    run_command,
)

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
BAN_FIELDS = frozenset({"ip", "prefix", "seconds", "family"})
UNBAN_FIELDS = frozenset({"ip", "prefix", "family"})


def check_template(argv: Sequence[str], allowed: frozenset[str], what: str) -> tuple[str, ...]:
    if isinstance(argv, str | bytes) or not all(isinstance(a, str) for a in argv):
        raise TypeError(f"{what} command must be a list of argv strings")
    argv = tuple(argv)
    if not argv or not argv[0]:
        return ()
    if _PLACEHOLDER.search(argv[0]):
        raise ValueError(f"{what} command: the program name cannot contain a placeholder")
    for arg in argv[1:]:
        for name in _PLACEHOLDER.findall(arg):
            if name not in allowed:
                raise ValueError(
                    f"{what} command: unknown placeholder {{{name}}} in {arg!r} "
                    f"(allowed: {', '.join('{' + a + '}' for a in sorted(allowed))})"
                )
    return argv


def expand(template: Sequence[str], net: IPNetwork, seconds: int | None = None) -> list[str]:
    values = {"ip": host_text(net), "prefix": str(net), "family": str(net.version)}
    if seconds is not None:
        values["seconds"] = str(seconds)
    return [template[0], *(_PLACEHOLDER.sub(lambda m: values[m[1]], a) for a in template[1:])]


class CommandBackend:
    name = "command"
    max_seconds: int | None = None

    def __init__(
        self,
        ban: Sequence[str],
        unban: Sequence[str] = (),
        wrapper: Sequence[str] = (),
        setup: Sequence[str] = (),
        teardown: Sequence[str] = (),
        expires: bool = False,
        timeout: float = 30.0,
    ) -> None:
        self._ban = check_template(ban, BAN_FIELDS, "ban")
        if not self._ban:
            raise ValueError("command backend: a ban command is required")
        self._unban = check_template(unban, UNBAN_FIELDS, "unban")
        self._setup = check_template(setup, frozenset(), "setup")
        self._teardown = check_template(teardown, frozenset(), "teardown")
        self._wrapper = check_wrapper(wrapper)
        self.expires = bool(expires)
        self.timeout = timeout
        self._bans = MemoryBans()

    async def _run(self, argv: list[str], what: str) -> None:
        await run_command(
            [*self._wrapper, *argv], timeout=self.timeout, message=f"{what} command failed"
        )

    async def setup(self) -> None:
        if self._setup:
            await self._run(list(self._setup), "setup")

    async def ban(self, items: list[tuple[IPNetwork, int]]) -> None:
        """One run per address; all are tried, the first failure is raised afterwards."""
        first: BackendError | None = None
        for net, seconds in check_items(items, self.max_seconds).items():
            try:
                await self._run(expand(self._ban, net, seconds), "ban")
            except BackendError as e:
                first = first or e
                continue
            self._bans.add(net, seconds)
        if first is not None:
            raise first

    async def unban(self, nets: list[IPNetwork]) -> None:
        first: BackendError | None = None
        for net in check_nets(nets):
            if self._unban:
                try:
                    await self._run(expand(self._unban, net), "unban")
                except BackendError as e:
                    first = first or e
                    continue
            self._bans.remove(net)
        if first is not None:
            raise first

    async def list(self) -> dict[IPNetwork, float | None]:
        return self._bans.snapshot(prune=self.expires)

    async def teardown(self) -> None:
        if self._teardown:
            await self._run(list(self._teardown), "teardown")
        self._bans.clear()
