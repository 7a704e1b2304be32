"""The firewall backend interface, the pieces every backend shares, and the "none" backend.

A backend is one small class with five verbs, in the spirit of sshguard's ``sshg-fw-*``
programs (init, block, release, flush, fin):

* ``setup()``     idempotent: create our table/sets/rules if they are missing, fix them if they
                  are damaged, do nothing if they are in place (the daemon re-runs it
                  periodically, e.g. after ``systemctl reload nftables`` flushed the ruleset);
* ``ban(items)``  ``[(net, seconds), ...]`` in one batch; re-banning updates the timeout;
* ``unban(nets)`` missing elements are not an error;
* ``list()``      ``{net: remaining seconds or None}`` as the firewall sees it now;
* ``teardown()``  remove everything we created (idempotent).

Two attributes tell the BanManager how the backend behaves:

* ``expires``: True when the firewall itself removes a ban when its time is up (kernel
  timeouts: bans end even while the daemon is dead). False for the command backend unless
  its script says otherwise: then the BanManager must call ``unban()`` when a ban ends.
* ``max_seconds``: the longest timeout the firewall accepts; longer bans are clamped to it,
  so the BanManager must re-ban a longer ban before it runs out.

Every command is an argv list run with ``asyncio.create_subprocess_exec`` — never a shell —
with ``wrapper`` prepended (tests pass ``["ip", "netns", "exec", NAME]``) and a time limit
(the process group is killed when it is exceeded). The only values from the outside world
that reach an argv or an ``nft -f`` script are ``ipaddress`` objects formatted by us.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import os
import shlex
import signal
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_TIMEOUT = 10.0
_STDERR_SHOWN = 2000


class BackendError(Exception):
    """A firewall command failed: which command, its exit status and what it said."""

    def __init__(
        self,
        command: Sequence[str],
        returncode: int | None,
        stderr: str,
        message: str = "firewall command failed",
    ) -> None:
        self.command = list(command)
        self.returncode = returncode
        self.stderr = stderr
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        status = "no exit status" if self.returncode is None else f"exit status {self.returncode}"
        err = self.stderr.strip()
        if len(err) > _STDERR_SHOWN:
            err = err[:_STDERR_SHOWN] + " [...]"
        return f"{self.message}: {shlex.join(self.command)} ({status}): {err or '(no stderr)'}"


class NotSetUp(BackendError):
    """Our table, set or rule is missing (never created, or flushed by someone else, e.g.
    ``systemctl reload nftables``). The cure: ``setup()``, then re-apply the active bans."""


@runtime_checkable
class Backend(Protocol):
    name: str
    expires: bool
    max_seconds: int | None

    async def setup(self) -> None: ...

    async def ban(self, items: list[tuple[IPNetwork, int]]) -> None: ...

    async def unban(self, nets: list[IPNetwork]) -> None: ...

    async def list(self) -> dict[IPNetwork, float | None]: ...

    async def teardown(self) -> None: ...


# --------------------------------------------------------------------------- validation


def as_network(value: Any) -> IPNetwork:
    """An ``ipaddress`` address or network as a network; IPv4-mapped IPv6 becomes IPv4.

    Strings are refused on purpose: callers hand us parsed objects, so text from a log line
    can never reach a command line. A /0 is refused too: banning the whole Internet (or
    locking everybody out) is never what a ban means.
    """
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        value = ipaddress.ip_network(value)
    if not isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        raise TypeError(f"expected an ipaddress network or address, got {type(value).__name__}")
    # Rebuild from integers with the base classes. This drops an IPv6 scope id: ipaddress
    # accepts ANY text after "%" ("fe80::1%x }\nflush ruleset" is a valid IPv6Address and
    # str() gives it back), which would otherwise reach an argv or an nft script verbatim.
    # It also ignores whatever __str__ a subclass might have.
    if value.version == 4:
        value = ipaddress.IPv4Network((int(value.network_address), int(value.prefixlen)))
    else:
        value = ipaddress.IPv6Network((int(value.network_address), int(value.prefixlen)))
    if isinstance(value, ipaddress.IPv6Network) and value.prefixlen >= 96:
        mapped = value.network_address.ipv4_mapped
        if mapped is not None:
            value = ipaddress.IPv4Network((mapped, value.prefixlen - 96))
    if value.prefixlen == 0:
        raise ValueError(f"refusing to ban {value}: that is every address")
    return value


def check_seconds(seconds: Any, max_seconds: int | None = None) -> int:
    """A ban duration: a positive whole number of seconds, clamped to ``max_seconds``."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"ban duration must be a number of seconds, got {seconds!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"ban duration must be > 0 seconds, got {seconds!r}")
    whole = max(1, math.ceil(seconds))
    return whole if max_seconds is None else min(whole, max_seconds)


def check_items(
    items: Iterable[tuple[Any, Any]], max_seconds: int | None = None
) -> dict[IPNetwork, int]:
    """Validate a ban batch; a net given twice keeps the last duration (as two bans would)."""
    out: dict[IPNetwork, int] = {}
    for net, seconds in items:
        n = as_network(net)
        out.pop(n, None)
        out[n] = check_seconds(seconds, max_seconds)
    return out


def check_nets(nets: Iterable[Any]) -> list[IPNetwork]:
    return list(dict.fromkeys(as_network(n) for n in nets))


def host_text(net: IPNetwork) -> str:
    """``203.0.113.5`` for a single address, ``198.51.100.0/24`` for a network."""
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return str(net)


def check_wrapper(wrapper: Sequence[str]) -> tuple[str, ...]:
    if isinstance(wrapper, str | bytes) or not all(isinstance(w, str) for w in wrapper):
        raise TypeError(
            "wrapper must be a sequence of argv strings, e.g. ['ip', 'netns', 'exec', 'NAME']"
        )
    return tuple(wrapper)


# --------------------------------------------------------------------------- running commands


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


_ENV = {**os.environ, "LC_ALL": "C", "LANG": "C"}


def kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


async def run_command(
    argv: Sequence[str],
    *,
    stdin: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    message: str = "firewall command failed",
) -> Result:
    """Run one argv (no shell) in its own process group; kill the group after ``timeout``.

    Raises BackendError when the program cannot be started, times out, or (with ``check``)
    exits non-zero. The child is always reaped, also when the caller is cancelled.
    """
    argv = list(argv)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            env=_ENV,
        )
    except OSError as e:
        raise BackendError(argv, None, f"{e.strerror or e} ({argv[0]})", "cannot run") from e
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), timeout
        )
    except TimeoutError:
        kill_group(proc)
        await proc.wait()
        raise BackendError(argv, None, f"killed after {timeout:g} s", "timed out") from None
    finally:
        if proc.returncode is None:  # cancelled: never leave a child behind
            kill_group(proc)
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.wait())
    result = Result(
        argv, proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")
    )
    if check and result.returncode != 0:
        raise BackendError(argv, result.returncode, result.stderr or result.stdout, message)
    return result


# --------------------------------------------------------------------------- "none"


class MemoryBans:
    """What we banned, kept in memory (for backends that cannot ask the firewall)."""

    def __init__(self) -> None:
        self._until: dict[IPNetwork, float] = {}

    def add(self, net: IPNetwork, seconds: int) -> None:
        self._until[net] = time.monotonic() + seconds

    def remove(self, net: IPNetwork) -> None:
        self._until.pop(net, None)

    def clear(self) -> None:
        self._until.clear()

    def snapshot(self, prune: bool) -> dict[IPNetwork, float | None]:
        now = time.monotonic()
        if prune:
            self._until = {n: t for n, t in self._until.items() if t > now}
        return {n: max(0.0, t - now) for n, t in self._until.items()}


class NoneBackend:
    """Touches nothing; remembers bans so that ``list()`` looks right (dry runs, tests)."""

    name = "none"
    expires = True
    max_seconds: int | None = None

    def __init__(self, wrapper: Sequence[str] = (), timeout: float = DEFAULT_TIMEOUT) -> None:
        self._bans = MemoryBans()

    async def setup(self) -> None:
        return None

    async def ban(self, items: list[tuple[IPNetwork, int]]) -> None:
        for net, seconds in check_items(items).items():
            self._bans.add(net, seconds)

    async def unban(self, nets: list[IPNetwork]) -> None:
        for net in check_nets(nets):
            self._bans.remove(net)

    async def list(self) -> dict[IPNetwork, float | None]:
        return self._bans.snapshot(prune=True)

    async def teardown(self) -> None:
        self._bans.clear()
