"""ipset + iptables backend: two ``hash:net`` sets with kernel timeouts, one DROP rule each.

``setup()``::

    ipset create sshmonitor4 hash:net family inet  timeout 0 -exist
    ipset create sshmonitor6 hash:net family inet6 timeout 0 -exist
    iptables  -w -C INPUT -m set --match-set sshmonitor4 src -j DROP || iptables  -w -I INPUT ...
    ip6tables -w -C INPUT -m set --match-set sshmonitor6 src -j DROP || ip6tables -w -I INPUT ...

Bans and unbans are one ``ipset -exist restore`` each (``add NAME NET timeout N`` updates the
timeout of an element that exists; ``del`` of a missing one is ignored). Unlike an nftables
interval set, a ``hash:net`` set may hold overlapping networks (10.0.0.5 and 10.0.0.0/24 are
two elements; both match). Limits: ipset accepts at most 2147483 s (~24.8 days) per timeout
(longer bans are clamped: the BanManager re-bans them), no /0, and ``timeout 0`` means
"permanent", so ``list()`` reports those as None.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
from collections.abc import Sequence

from .backend import (
    DEFAULT_TIMEOUT,
    BackendError,
    IPNetwork,
    NotSetUp,
    check_items,
    check_nets,
    check_wrapper,
    host_text,
    run_command,
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,30}$")
_MISSING = "set with the given name does not exist"
IPSET_MAX_SECONDS = 2_147_483


class IpsetBackend:
    name = "ipset"
    expires = True
    max_seconds: int | None = IPSET_MAX_SECONDS

    def __init__(
        self,
        set4: str = "sshmonitor4",
        set6: str = "sshmonitor6",
        wrapper: Sequence[str] = (),
        iptables: str = "iptables",
        ip6tables: str = "ip6tables",
        ipset: str = "ipset",
        chain: str = "INPUT",
        maxelem: int = 65536,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        for what, value in (("set4", set4), ("set6", set6)):
            if not _NAME.match(value):
                raise ValueError(f"bad ipset {what} name {value!r} (at most 31 characters)")
        if set4 == set6:
            raise ValueError("set4 and set6 must differ")
        if not re.match(r"^[A-Za-z][A-Za-z0-9_-]{0,28}$", chain):
            raise ValueError(f"bad iptables chain name {chain!r}")
        if isinstance(maxelem, bool) or not isinstance(maxelem, int) or maxelem < 1:
            raise ValueError(f"maxelem must be a positive integer, not {maxelem!r}")
        wrap = check_wrapper(wrapper)
        self.sets = {4: set4, 6: set6}
        self.chain = chain
        self.maxelem = maxelem
        self.timeout = timeout
        self._ipset = (*wrap, ipset)
        self._tables = {4: (*wrap, iptables), 6: (*wrap, ip6tables)}
        self._lock = asyncio.Lock()

    async def _run(
        self, argv: list[str], script: str | None = None, check: bool = True
    ) -> tuple[int, str, str]:
        tool = "ipset" if argv[: len(self._ipset)] == list(self._ipset) else "iptables"
        try:
            r = await run_command(
                argv, stdin=script, timeout=self.timeout, check=check, message=f"{tool} failed"
            )
        except BackendError as e:
            if e.returncode is not None and _MISSING in e.stderr:
                raise NotSetUp(
                    e.command,
                    e.returncode,
                    e.stderr,
                    f"ipset sets {self.sets[4]}, {self.sets[6]} are not set up",
                ) from None
            raise
        return r.returncode, r.stdout, r.stderr

    def _rule(self, version: int) -> list[str]:
        return [self.chain, "-m", "set", "--match-set", self.sets[version], "src", "-j", "DROP"]

    async def _has_rule(self, version: int) -> bool:
        argv = [*self._tables[version], "-w", "-C", *self._rule(version)]
        rc, _out, err = await self._run(argv, check=False)
        if rc == 0:
            return True
        if rc == 1:  # "Bad rule (does a matching rule exist in that chain?)"
            return False
        raise BackendError(argv, rc, err, "iptables check failed")

    # ------------------------------------------------------------------ the five verbs

    async def setup(self) -> None:
        async with self._lock:
            for version, name in self.sets.items():
                family = "inet" if version == 4 else "inet6"
                await self._run(
                    [
                        *self._ipset,
                        "create",
                        name,
                        "hash:net",
                        "family",
                        family,
                        "timeout",
                        "0",
                        "maxelem",
                        str(self.maxelem),
                        "-exist",
                    ]
                )
            for version in self.sets:
                if not await self._has_rule(version):
                    await self._run([*self._tables[version], "-w", "-I", *self._rule(version)])

    async def ban(self, items: list[tuple[IPNetwork, int]]) -> None:
        want = check_items(items, self.max_seconds)
        if not want:
            return
        script = "".join(
            f"add {self.sets[net.version]} {host_text(net)} timeout {seconds}\n"
            for net, seconds in want.items()
        )
        async with self._lock:
            await self._run([*self._ipset, "-exist", "restore"], script=script)

    async def unban(self, nets: list[IPNetwork]) -> None:
        wanted = check_nets(nets)
        if not wanted:
            return
        script = "".join(f"del {self.sets[n.version]} {host_text(n)}\n" for n in wanted)
        async with self._lock:
            await self._run([*self._ipset, "-exist", "restore"], script=script)

    async def list(self) -> dict[IPNetwork, float | None]:
        out: dict[IPNetwork, float | None] = {}
        async with self._lock:
            for name in self.sets.values():
                _rc, text, _err = await self._run([*self._ipset, "list", name, "-output", "save"])
                for line in text.splitlines():
                    words = line.split()
                    if len(words) < 3 or words[0] != "add" or words[1] != name:
                        continue
                    net = ipaddress.ip_network(words[2], strict=False)
                    left: float | None = None
                    if "timeout" in words[3:]:
                        value = int(words[words.index("timeout", 3) + 1])
                        left = float(value) if value > 0 else None  # 0: permanent
                    out[net] = left
        return out

    async def teardown(self) -> None:
        async with self._lock:
            for version in self.sets:
                for _ in range(16):  # bounded: someone may have inserted the rule twice
                    try:
                        present = await self._has_rule(version)
                    except BackendError:
                        break  # no set, so no rule can use it
                    if not present:
                        break
                    await self._run([*self._tables[version], "-w", "-D", *self._rule(version)])
            for name in self.sets.values():
                with contextlib.suppress(NotSetUp):
                    await self._run([*self._ipset, "destroy", name])
