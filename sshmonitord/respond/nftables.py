"""nftables backend: our own table, two interval sets with kernel timeouts, one drop chain.

The ruleset (defaults; ``setup()`` creates it in one ``nft -f -`` transaction)::

    table inet sshmonitor {
        set banned4 { type ipv4_addr; flags interval, timeout; }
        set banned6 { type ipv6_addr; flags interval, timeout; }
        chain input {
            type filter hook input priority filter - 10; policy accept;
            ip saddr @banned4 drop
            ip6 saddr @banned6 drop
        }
    }

Behaviour of nft 1.0.6 this code is built on (see docs/firewall.md, tested in
tests/test_backends.py):

* ``add element`` on an element that exists updates its timeout only on Linux >= 6.12; up to
  6.11 it is silently ignored. So on older kernels a re-ban is written as ``add {x}; delete
  {x}; add {x timeout Ns}`` in one transaction: atomic, safe even if ``x`` expired since we
  listed the set (the first ``add`` makes the ``delete`` safe), and it sets the new timeout.
  New elements are a plain ``add``: ``delete`` is slow in an interval set (O(k*n) in nft
  1.0.6: deleting 2000 of 2000 elements takes ~1.5 s), adding 3000 takes ~30 ms.
* ``delete element`` of a missing element fails the whole transaction; ``add; delete`` is the
  "destroy" that 1.0.6 lacks.
* An interval set holds no overlapping elements: adding ``10.0.0.5`` while ``10.0.0.0/24`` is
  in the set (or the reverse) fails with "interval overlaps with an existing one" — and the
  check ignores deletes earlier in the same transaction. :func:`plan_ban` therefore merges
  overlapping bans (the widest network wins, with the longest remaining time, so no address
  is released early as a side effect) and removes absorbed elements in a first transaction.

Commands go through one long-lived ``nft -j -i`` process (:class:`NftSession`) rather than a
new ``nft`` per command: starting nft (and forking it from the daemon) cost ~3 ms of nft's
CPU and ~2 ms of ours per call, two calls per ban batch, which under a real attack was more
than the parsing and detection together. Interactive nft runs each input line as one
transaction, exactly as ``nft -f`` runs a file, and writes a line's output before it reads
the next; see :class:`NftSession` for how an answer is delimited and what happens when the
process dies or hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .. import log
from .backend import (
    _ENV,
    BackendError,
    IPNetwork,
    NotSetUp,
    check_items,
    check_nets,
    check_wrapper,
    host_text,
    kill_group,
    run_command,
)

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_PRIORITY = re.compile(
    r"^(?:(?P<name>raw|mangle|dstnat|filter|security|srcnat)(?:\s*(?P<sign>[+-])\s*(?P<off>\d+))?"
    r"|(?P<num>-?\d+))$"
)
_NAMED_PRIORITY = {
    "raw": -300,
    "mangle": -150,
    "dstnat": -100,
    "filter": 0,
    "security": 50,
    "srcnat": 100,
}
_MISSING = "Error: No such file or directory"
# nft 1.0.6 refuses "timeout 100000000s" ("value too large"); 99999999 s is about 1157 days.
NFT_MAX_SECONDS = 99_999_999

# Deleting k elements from an interval set of n costs O(k*n) in nft 1.0.6 (2000 of 2000: ~1.5 s).
NFT_TIMEOUT = 30.0

Remaining = float | None

# One answer line can be the whole set as JSON (~65 bytes per element): room for millions.
SESSION_LINE_LIMIT = 256 * 1024 * 1024
# nft -i keeps every input line in its (libedit) history, unbounded: a session is replaced
# after this much input so the process stays small over months of bans.
SESSION_MAX_INPUT = 4 * 1024 * 1024
# An answer ends at this line: a syntax error nft echoes back (``#`` would be a comment and
# print nothing). No command of ours, no JSON and no nft message can be this line.
_SENTINEL = "sshmonitor-end-of-answer-{}"


def kernel_at_least(major: int, minor: int, release: str | None = None) -> bool:
    m = re.match(r"(\d+)\.(\d+)", release if release is not None else os.uname().release)
    return m is not None and (int(m[1]), int(m[2])) >= (major, minor)


Timeout = int | None


def parse_priority(text: str) -> int:
    m = _PRIORITY.match(text.strip())
    if not m:
        raise ValueError(f"bad nftables chain priority {text!r} (e.g. 'filter - 10' or '-10')")
    if m["num"] is not None:
        return int(m["num"])
    off = int(m["off"] or 0)
    return _NAMED_PRIORITY[m["name"]] + (-off if m["sign"] == "-" else off)


def plan_ban(
    current: dict[IPNetwork, Remaining], want: dict[IPNetwork, int]
) -> tuple[set[IPNetwork], dict[IPNetwork, Timeout]]:
    """Merge new bans into the elements of one interval set (which must stay disjoint).

    Returns ``(remove, upsert)``: existing elements to delete first (absorbed by a wider new
    ban), and elements to (re)write with their timeout (None: no timeout). Rules:

    * the same network again: its timeout becomes the new one (longer or shorter);
    * inside a banned wider network: nothing to do if that one lasts long enough, else the
      wider network's timeout is raised to the new ban's;
    * wider than banned networks: those are absorbed; the new element gets the longest of the
      remaining times, so a long ban inside is never shortened by a short wide one.
    """
    state: dict[IPNetwork, Remaining] = dict(current)
    lengths = Counter(e.prefixlen for e in state)
    remove: set[IPNetwork] = set()
    upsert: dict[IPNetwork, Timeout] = {}
    for net, seconds in want.items():
        if net in state:
            state[net] = seconds
            upsert[net] = seconds
            continue
        wider = None
        for plen in sorted(p for p in lengths if p < net.prefixlen):
            candidate = net.supernet(new_prefix=plen)
            if candidate in state:
                wider = candidate
                break
        if wider is not None:
            left = state[wider]
            if left is None or left >= seconds:
                continue  # already covered for at least as long
            state[wider] = seconds
            upsert[wider] = seconds
            continue
        timeout: Timeout = seconds
        if any(p > net.prefixlen for p in lengths):
            inside = [e for e in state if e.prefixlen > net.prefixlen and e.subnet_of(net)]  # type: ignore[arg-type]
            for inner in inside:
                left = state.pop(inner)
                lengths[inner.prefixlen] -= 1
                if not lengths[inner.prefixlen]:
                    del lengths[inner.prefixlen]
                upsert.pop(inner, None)
                if inner in current:
                    remove.add(inner)
                timeout = None if left is None or timeout is None else max(timeout, math.ceil(left))
        state[net] = timeout
        lengths[net.prefixlen] += 1
        upsert[net] = timeout
    return remove, upsert


@functools.lru_cache(maxsize=4096)
def _network(text: str) -> IPNetwork:
    # Every ban lists the set first, so the same elements are read again and again; parsing
    # one costs ~15 µs, a cache hit ~0.1 µs. Networks are immutable, so sharing one is safe.
    return ipaddress.ip_network(text, strict=False)


def _parse_value(val: Any) -> list[IPNetwork]:
    if isinstance(val, str):
        return [_network(val)]
    if isinstance(val, dict) and "prefix" in val:
        p = val["prefix"]
        return [_network(f"{p['addr']}/{p['len']}")]
    if isinstance(val, dict) and "range" in val:
        lo, hi = (ipaddress.ip_address(x) for x in val["range"])
        return list(ipaddress.summarize_address_range(lo, hi))
    raise ValueError(f"unexpected set element {val!r}")


def parse_elements(elems: list[Any]) -> dict[IPNetwork, Remaining]:
    """Elements of ``nft -j list set``: ``"1.2.3.4"``, ``{"prefix": ...}``, ``{"range": ...}``
    or ``{"elem": {"val": ..., "timeout": 600, "expires": 599}}`` (seconds)."""
    out: dict[IPNetwork, Remaining] = {}
    for e in elems:
        remaining: Remaining = None
        if isinstance(e, dict) and "elem" in e:
            inner = e["elem"]
            val = inner["val"]
            if inner.get("expires") is not None:
                remaining = float(inner["expires"])
            elif inner.get("timeout") is not None:
                remaining = float(inner["timeout"])
        else:
            val = e
        for net in _parse_value(val):
            out[net] = remaining
    return out


class NftSession:
    """One ``nft -j -i`` process, fed one request at a time.

    A request is our script joined into one line (one transaction, as with ``nft -f``),
    followed by a sentinel line that nft answers with a syntax error echoing it. stderr is
    merged into stdout and nft flushes each line's output before reading the next, so the
    answer is every line before the sentinel's three (``Error: syntax error ...``, the echo,
    the caret). An ``Error:`` line in the answer means the transaction failed (nothing of it
    applied), and becomes a BackendError with exit status 1, as ``nft -f`` would exit.

    Faults: a request that takes longer than ``timeout`` kills the process group (it may be
    stuck in the kernel) and fails with "timed out", like a one-shot command. A process that
    died (killed, OOM, nft crashed) is noticed on the next request by EOF or a broken pipe;
    it is reaped, one warning is logged and the request is sent again to a new process —
    every script we send is safe to apply twice (adds, ``add; delete`` pairs, an idempotent
    setup, reads). A process that dies during a fresh session's request is an error (a
    missing binary, a wrapper that cannot enter the namespace): no retry loop. A cancelled
    request kills the process too, since its answer would arrive for the next request.
    """

    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        self.argv = [*argv, "-j", "-i"]
        self.timeout = timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._seq = 0
        self._input = 0
        self._lock = asyncio.Lock()
        self.started = 0  # processes started (a metric for tests and status)
        self.log = log.get("nftables")

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    async def _start(self) -> asyncio.subprocess.Process:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                # nft -i reads and writes $HOME/.nft.history: point it nowhere.
                env={**_ENV, "HOME": "/nonexistent"},
                limit=SESSION_LINE_LIMIT,
            )
        except OSError as e:
            raise BackendError(
                self.argv, None, f"{e.strerror or e} ({self.argv[0]})", "cannot run"
            ) from e
        self._proc, self._input = proc, 0
        self.started += 1
        return proc

    async def _end(self) -> int | None:
        """Kill and reap the process (always: a dead one must not stay a zombie)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.returncode is None:
            kill_group(proc)
        if proc.stdin is not None:
            proc.stdin.close()  # else its transport outlives the process (and the loop)
        with contextlib.suppress(Exception):
            await asyncio.shield(proc.wait())
        return proc.returncode

    async def close(self) -> None:
        async with self._lock:
            await self._end()

    async def run(self, script: str) -> str:
        """Run ``script`` (statements one per line) as one transaction; its output."""
        line = "; ".join(x.strip() for x in script.splitlines() if x.strip())
        async with self._lock:
            fresh = self._proc is None or self._proc.returncode is not None
            if not fresh and self._input > SESSION_MAX_INPUT:
                await self._end()
                fresh = True
            try:
                return await self._request(line, fresh)
            except _Ended as ended:
                if fresh:
                    raise ended.error from None
                self.log.warning(
                    "nft session ended; starting a new one",
                    pid=ended.pid,
                    status=ended.error.returncode,
                    output=ended.error.stderr[:300],
                )
                try:
                    return await self._request(line, True)
                except _Ended as again:  # the new one died at once: that is the error
                    raise again.error from None

    async def _request(self, line: str, fresh: bool) -> str:
        if fresh:
            await self._end()
            proc = await self._start()
        else:
            assert self._proc is not None
            proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        self._seq += 1
        sentinel = _SENTINEL.format(self._seq)
        data = f"{line}\n{sentinel}\n".encode()
        self._input += len(data)
        lines: list[str] = []
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    proc.stdin.write(data)
                    await proc.stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # it died: its EOF (and exit status) follow on stdout
                while True:
                    raw = await proc.stdout.readline()
                    if not raw:
                        pid = proc.pid
                        status = await self._end()
                        out = "\n".join(lines).strip() or "nft exited"
                        raise _Ended(pid, BackendError(self.argv, status, out, "nft failed"))
                    text = raw.decode(errors="replace").rstrip("\n")
                    if text == sentinel:
                        await proc.stdout.readline()  # the caret under it
                        break
                    lines.append(text)
        except TimeoutError:
            await self._end()
            raise BackendError(
                self.argv, None, f"killed after {self.timeout:g} s", "timed out"
            ) from None
        except _Ended:
            raise
        except BaseException:
            await self._end()  # cancelled or broken mid-answer: out of step, start afresh
            raise
        if lines and lines[-1].startswith("Error:"):
            lines.pop()  # the sentinel's own "Error: syntax error ..."
        if any(x.startswith("Error:") for x in lines):
            raise BackendError([*self.argv, line], 1, "\n".join(lines), "nft failed")
        return "\n".join(lines)


class _Ended(Exception):
    def __init__(self, pid: int, error: BackendError) -> None:
        super().__init__(str(error))
        self.pid, self.error = pid, error


class NftBackend:
    name = "nftables"
    expires = True
    max_seconds: int | None = NFT_MAX_SECONDS

    def __init__(
        self,
        table: str = "sshmonitor",
        family: str = "inet",
        nft: str = "nft",
        wrapper: Sequence[str] = (),
        set4: str = "banned4",
        set6: str = "banned6",
        chain: str = "input",
        priority: str = "filter - 10",
        timeout: float = NFT_TIMEOUT,
    ) -> None:
        for what, value in (("table", table), ("set4", set4), ("set6", set6), ("chain", chain)):
            if not _NAME.match(value):
                raise ValueError(f"bad nftables {what} name {value!r}")
        if family not in ("inet", "ip", "ip6"):
            raise ValueError(f"nftables family must be inet, ip or ip6, not {family!r}")
        self.table, self.family, self.chain = table, family, chain
        self.priority = priority.strip()
        self._prio = parse_priority(self.priority)
        self._argv0 = (*check_wrapper(wrapper), nft)
        self.timeout = timeout
        self.sets: dict[int, str] = {}
        if family in ("inet", "ip"):
            self.sets[4] = set4
        if family in ("inet", "ip6"):
            self.sets[6] = set6
        self._lock = asyncio.Lock()
        self.session = NftSession(self._argv0, timeout)
        # Linux 6.12 made "add element" update the timeout of an element that exists (up to
        # 6.11 it is silently ignored). The kernel is the same in every namespace/container.
        self.update_in_place = kernel_at_least(6, 12)

    # ------------------------------------------------------------------ plumbing

    @property
    def _where(self) -> str:
        return f"{self.family} {self.table}"

    async def _nft(self, *args: str, script: str | None = None) -> str:
        """A one-shot ``nft ARGS`` (reading ``script`` on stdin); its output."""
        try:
            result = await run_command(
                [*self._argv0, *args], stdin=script, timeout=self.timeout, message="nft failed"
            )
        except BackendError as e:
            raise self._not_set_up(e) from None
        return result.stdout

    async def _run(self, script: str) -> str:
        """``script`` as one transaction through the long-lived session; its output."""
        try:
            return await self.session.run(script)
        except BackendError as e:
            raise self._not_set_up(e) from None

    def _not_set_up(self, e: BackendError) -> BackendError:
        if e.returncode is not None and _MISSING in e.stderr:
            return NotSetUp(
                e.command, e.returncode, e.stderr, f"nftables table {self._where} is not set up"
            )
        return e

    async def _table_json(self, terse: bool) -> list[dict[str, Any]]:
        if terse:
            # Without the elements (a session is -j only, not -t): run every 30 s by
            # maintenance, where a big set would cost a lot to print and parse.
            out = await self._nft("-j", "-t", "list", "table", self.family, self.table)
        else:
            out = await self._run(f"list table {self._where}")
        docs = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        return [x for d in docs for x in d.get("nftables", []) if isinstance(x, dict)]

    def _rule_line(self, version: int) -> str:
        proto = "ip" if version == 4 else "ip6"
        return f"{proto} saddr @{self.sets[version]} drop"

    def _expected_rules(self) -> list[list[dict[str, Any]]]:
        return [
            [
                {
                    "match": {
                        "op": "==",
                        "left": {
                            "payload": {"protocol": "ip" if v == 4 else "ip6", "field": "saddr"}
                        },
                        "right": f"@{self.sets[v]}",
                    }
                },
                {"drop": None},
            ]
            for v in self.sets
        ]

    def _setup_script(self, objects: list[dict[str, Any]]) -> str | None:
        """The transaction that makes the table right, or None when it already is.

        ``objects`` is ``nft -j -t list table`` (empty when the table is missing). A set or the
        chain that exists with another definition (an older version, a changed priority) is
        deleted and recreated: ``add`` would fail with "File exists" / "Operation not
        supported". The chain is flushed and refilled in the same transaction, so there is
        no moment without the drop rules.
        """
        sets = {o["set"]["name"]: o["set"] for o in objects if "set" in o}
        chains = [o["chain"] for o in objects if o.get("chain", {}).get("name") == self.chain]
        rules = [o["rule"]["expr"] for o in objects if o.get("rule", {}).get("chain") == self.chain]
        bad_sets = []
        for version, name in self.sets.items():
            kind = "ipv4_addr" if version == 4 else "ipv6_addr"
            s = sets.get(name)
            if s is not None and (
                s.get("type") != kind or not {"interval", "timeout"} <= set(s.get("flags", []))
            ):
                bad_sets.append(name)
        chain_ok = len(chains) == 1 and (
            chains[0].get("type"),
            chains[0].get("hook"),
            chains[0].get("prio"),
            chains[0].get("policy"),
        ) == ("filter", "input", self._prio, "accept")
        if (
            chain_ok
            and not bad_sets
            and all(n in sets for n in self.sets.values())
            and rules == self._expected_rules()
        ):
            return None
        lines = [f"add table {self._where}"]
        if chains:
            lines.append(f"flush chain {self._where} {self.chain}")
            if not chain_ok:
                lines.append(f"delete chain {self._where} {self.chain}")
        lines += [f"delete set {self._where} {name}" for name in bad_sets]
        for version, name in self.sets.items():
            kind = "ipv4_addr" if version == 4 else "ipv6_addr"
            lines.append(
                f"add set {self._where} {name} {{ type {kind}; flags interval, timeout; }}"
            )
        lines += [
            f"add chain {self._where} {self.chain} {{ type filter hook input priority "
            f"{self.priority}; policy accept; }}",
            f"flush chain {self._where} {self.chain}",
        ]
        lines += [f"add rule {self._where} {self.chain} {self._rule_line(v)}" for v in self.sets]
        return "\n".join(lines) + "\n"

    async def _current(self) -> dict[int, dict[IPNetwork, float | None]]:
        objects = await self._table_json(terse=False)
        found = {o["set"]["name"]: o["set"] for o in objects if "set" in o}
        out: dict[int, dict[IPNetwork, float | None]] = {}
        for version, name in self.sets.items():
            if name not in found:
                raise NotSetUp(
                    [*self._argv0, "-j", "list", "table", self.family, self.table],
                    0,
                    "",
                    f"nftables set {self._where} {name} is missing",
                )
            out[version] = parse_elements(found[name].get("elem", []))
        return out

    def _family_of(self, net: IPNetwork) -> int:
        if net.version not in self.sets:
            raise ValueError(
                f"cannot ban {net}: nftables family {self.family} has no IPv{net.version} set"
            )
        return net.version

    def _element_stmts(self, verb: str, version: int, entries: list[str]) -> list[str]:
        return [f"{verb} element {self._where} {self.sets[version]} {{ {', '.join(entries)} }}"]

    def _destroy_script(self, nets: dict[int, list[IPNetwork]]) -> str:
        """Delete elements that may or may not still exist (``add`` first makes it safe)."""
        lines: list[str] = []
        for version, group in nets.items():
            if group:
                names = [host_text(n) for n in group]
                lines += self._element_stmts("add", version, names)
                lines += self._element_stmts("delete", version, names)
        return "\n".join(lines) + "\n" if lines else ""

    def _upsert_script(
        self, upserts: dict[int, dict[IPNetwork, int | None]], existing: dict[int, set[IPNetwork]]
    ) -> str:
        """Write elements with their timeouts. New ones are a plain ``add``. Existing ones
        need ``add; delete; add`` unless the kernel updates a timeout on re-add (>= 6.12):
        ``delete`` is the slow part in nft 1.0.6 (it recomputes the set's intervals)."""
        lines: list[str] = []
        for version, group in upserts.items():
            if not group:
                continue
            old = [host_text(n) for n in group if n in existing.get(version, ())]
            if old and not self.update_in_place:
                lines += self._element_stmts("add", version, old)
                lines += self._element_stmts("delete", version, old)
            timed = [
                host_text(n) + ("" if t is None else f" timeout {t}s") for n, t in group.items()
            ]
            lines += self._element_stmts("add", version, timed)
        return "\n".join(lines) + "\n" if lines else ""

    # ------------------------------------------------------------------ the five verbs

    async def setup(self) -> None:
        async with self._lock:
            try:
                objects = await self._table_json(terse=True)
            except NotSetUp:
                objects = []
            if (script := self._setup_script(objects)) is not None:
                await self._run(script)

    async def ban(self, items: list[tuple[IPNetwork, int]]) -> None:
        want = check_items(items, self.max_seconds)
        if not want:
            return
        by_family: dict[int, dict[IPNetwork, int]] = {}
        for net, seconds in want.items():
            by_family.setdefault(self._family_of(net), {})[net] = seconds
        async with self._lock:
            for attempt in (1, 2):
                current = await self._current()
                removes: dict[int, list[IPNetwork]] = {}
                upserts: dict[int, dict[IPNetwork, int | None]] = {}
                for version, group in by_family.items():
                    remove, upsert = plan_ban(current[version], group)
                    removes[version] = sorted(remove)
                    upserts[version] = upsert
                try:
                    # Absorbed elements go first, in their own transaction: nft checks
                    # overlaps against the set as it was before the transaction.
                    if script := self._destroy_script(removes):
                        await self._run(script)
                    existing = {v: set(current[v]) for v in current}
                    if script := self._upsert_script(upserts, existing):
                        await self._run(script)
                    return
                except NotSetUp:
                    raise
                except BackendError:
                    if attempt == 2:
                        raise
                    # The set changed under us (an element expired between list and write,
                    # or someone else edited it): look again, once.

    async def unban(self, nets: list[IPNetwork]) -> None:
        wanted = check_nets(nets)
        if not wanted:
            return
        for net in wanted:
            self._family_of(net)
        async with self._lock:
            current = await self._current()
            victims: dict[int, dict[IPNetwork, None]] = {}  # ordered, no duplicates
            for net in wanted:
                found = victims.setdefault(net.version, {})
                elements = current[net.version]
                if net in elements:
                    found[net] = None
                if net.prefixlen < net.max_prefixlen:  # elements inside a network go too
                    for element in elements:
                        if element.prefixlen > net.prefixlen and element.subnet_of(net):  # type: ignore[arg-type]
                            found[element] = None
            if script := self._destroy_script({v: list(f) for v, f in victims.items()}):
                await self._run(script)

    async def list(self) -> dict[IPNetwork, float | None]:
        async with self._lock:
            current = await self._current()
        out: dict[IPNetwork, float | None] = {}
        for group in current.values():
            out.update(group)
        return out

    async def teardown(self) -> None:
        async with self._lock:
            try:
                await self._run(f"add table {self._where}\ndelete table {self._where}\n")
            finally:
                await self.session.close()

    async def close(self) -> None:
        """End the nft session (the daemon stops; the kernel keeps the bans)."""
        await self.session.close()
