"""Sliding-window counters in event time: exact, O(1) amortised, bounded in memory.

A rule asks one question of a counter: "did this key see at least N events in the last W
seconds?" Keeping the most recent ``keep`` timestamps of a key (``keep`` = the largest
threshold asked) answers it exactly for every N <= keep and every W: the N-th most recent
timestamp is inside the window or it is not. Nothing is approximated, so pacing attempts
just under a threshold never slips through a rounding error.

Memory is what a botnet attacks. A key seen once costs one float (no list), keys idle for
longer than the longest window are swept, and a hard cap evicts the least recently seen keys
first (counted). Keys are ints: an IPv4 address, or an IPv6 prefix (see :func:`addr_key`).

A sweep runs at the time of the event that sets it off, but never later than
``clock_limit`` (the engine's :meth:`~sshmonitord.detect.engine.Engine.set_clock`): a forged
line stamped in the future must not make every genuine key look idle.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import math
from bisect import insort
from collections.abc import Callable, Hashable
from typing import Any

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
_V6_TAG = 1 << 200  # keeps IPv6 prefix keys apart from IPv4 ints


def drop_oldest(d: dict[Any, Any], n: int) -> int:
    """Delete the first ``n`` keys of an insertion-ordered dict (the least recently
    (re-)inserted); return how many went. Callers evict a tenth at once: amortised O(1)."""
    victims = list(itertools.islice(d, n))
    for k in victims:
        del d[k]
    return len(victims)


def drop_older(
    d: dict[Any, Any],
    horizon: float,
    when: Callable[[Any], float] | None = None,
    until: float = math.inf,
) -> int:
    """Delete the first keys of an insertion-ordered dict while their time (the value, or
    ``when(value)``) is before ``horizon`` or after ``until``, up to the first that is
    neither; return how many went. For dicts filled roughly in time order, where a late
    entry may hold up a few (and a forged future one, without ``until``, all behind it)."""
    gone = 0
    for v in d.values():
        if horizon <= (v if when is None else when(v)) <= until:
            break
        gone += 1
    return drop_oldest(d, gone) if gone else 0


def addr_key(ip: IPAddr, v6_prefix: int = 64) -> int:
    """The counting key of an address: IPv4 as is, IPv6 aggregated to its /v6_prefix."""
    if ip.version == 4:
        return int(ip)
    return _V6_TAG | (int(ip) >> (128 - v6_prefix))


def key_network(key: int, v6_prefix: int = 64) -> IPNet:
    """The network a key stands for: the /32 of an IPv4 key, the /v6_prefix of an IPv6 key."""
    if key & _V6_TAG:
        base = (key & ~_V6_TAG) << (128 - v6_prefix)
        return ipaddress.IPv6Network((base, v6_prefix))
    return ipaddress.IPv4Network((key, 32))


class WindowCounter:
    """Per key, the most recent ``keep`` event timestamps (epoch seconds)."""

    def __init__(self, keep: int, horizon: float, max_keys: int = 1_000_000) -> None:
        self.keep = max(1, keep)
        self.horizon = horizon  # the longest window anyone asks about: older is garbage
        self.max_keys = max_keys
        self.data: dict[Hashable, float | list[float]] = {}
        self.evicted = 0
        self.expired = 0
        self._ops = 0
        self.clock_limit = math.inf  # sweeps never run at a later time (module docstring)

    def add(self, key: Hashable, ts: float, n: int = 1) -> None:
        d = self.data
        cur = d.pop(key, None)  # re-inserting moves the key to the recent end
        if cur is None and n == 1:
            d[key] = ts
        else:
            if cur is None:
                lst: list[float] = []
            elif isinstance(cur, float):
                lst = [cur]
            else:
                lst = cur
            for _ in range(min(n, self.keep)):
                if not lst or ts >= lst[-1]:
                    lst.append(ts)
                else:
                    insort(lst, ts)  # a late line from another source
            if len(lst) > self.keep:
                del lst[: len(lst) - self.keep]
            d[key] = lst
        self._ops += 1
        if len(d) > self.max_keys:
            self._evict()
        elif self._ops >= 65536:
            self.sweep(min(ts, self.clock_limit))

    def count(self, key: Hashable, since: float) -> int:
        """Events of ``key`` at or after ``since`` (exact up to ``keep``)."""
        cur = self.data.get(key)
        if cur is None:
            return 0
        if isinstance(cur, float):
            return 1 if cur >= since else 0
        n = 0
        for t in reversed(cur):
            if t < since:
                break
            n += 1
        return n

    def forget(self, key: Hashable) -> None:
        self.data.pop(key, None)

    def pop(self, key: Hashable) -> list[float]:
        """Forget ``key`` and return its timestamps (oldest first)."""
        cur = self.data.pop(key, None)
        if cur is None:
            return []
        return [cur] if isinstance(cur, float) else cur

    def remove(self, key: Hashable, stamps: list[float]) -> None:
        """Take these timestamps (one occurrence each) out of ``key``'s history: events
        that turned out to mean something else (a user's own typos, then their login)."""
        cur = self.data.get(key)
        if cur is None or not stamps:
            return
        if isinstance(cur, float):
            if cur in stamps:
                del self.data[key]
            return
        for t in stamps:
            with contextlib.suppress(ValueError):  # already trimmed past ``keep``
                cur.remove(t)
        if not cur:
            del self.data[key]

    def sweep(self, now: float) -> int:
        """Drop keys whose newest event is older than the horizon; return how many."""
        self._ops = 0
        limit = now - self.horizon
        dead = [k for k, v in self.data.items() if (v if isinstance(v, float) else v[-1]) < limit]
        for k in dead:
            del self.data[k]
        self.expired += len(dead)
        return len(dead)

    def _evict(self) -> None:
        # add() re-inserts on every event, so the front holds the least recently seen keys.
        self.evicted += drop_oldest(self.data, max(1, self.max_keys // 10))

    def __len__(self) -> int:
        return len(self.data)


class DistinctCounter:
    """Per key, the distinct items seen with their last time (e.g. user names per address).

    A key with one item (most botnet addresses try one name) is stored as an ``(item, ts)``
    tuple, not a dict: a third of the memory.
    """

    def __init__(self, keep: int, horizon: float, max_keys: int = 200_000) -> None:
        self.keep = max(1, keep)
        self.horizon = horizon
        self.max_keys = max_keys
        self.data: dict[Hashable, tuple[Hashable, float] | dict[Hashable, float]] = {}
        self.evicted = 0
        self._ops = 0
        # While every add came in time order, each key's items are in time order too
        # (re-inserted at the end on every add), so count() may stop at the first one
        # outside the window. One late line (another source) turns that off for good.
        self.ordered = True
        self._latest = float("-inf")
        self.clock_limit = math.inf  # sweeps never run at a later time (module docstring)

    def add(self, key: Hashable, item: Hashable, ts: float) -> None:
        if ts >= self._latest:
            self._latest = ts
        else:
            self.ordered = False
        d = self.data
        cur = d.pop(key, None)
        if cur is None or (isinstance(cur, tuple) and cur[0] == item):
            d[key] = (item, ts)
        else:
            items = {cur[0]: cur[1]} if isinstance(cur, tuple) else cur
            items.pop(item, None)
            items[item] = ts
            if len(items) > self.keep:
                # Drop the least recently seen item; the keep most recent ones decide.
                del items[next(iter(items))]
            d[key] = items
        self._ops += 1
        if len(d) > self.max_keys:
            self.evicted += drop_oldest(d, max(1, self.max_keys // 10))
        elif self._ops >= 65536:
            self.sweep(min(ts, self.clock_limit))

    def _items(self, key: Hashable) -> dict[Hashable, float]:
        cur = self.data.get(key)
        if cur is None:
            return {}
        return {cur[0]: cur[1]} if isinstance(cur, tuple) else cur

    def count(self, key: Hashable, since: float, limit: int = 0) -> int:
        """Distinct items of ``key`` seen at or after ``since``; with ``limit``, stop counting
        there (a rule asking "at least N?" of a name a botnet sprays need not sum 100)."""
        cur = self.data.get(key)
        if cur is None:
            return 0
        if isinstance(cur, tuple):
            return 1 if cur[1] >= since else 0
        n = 0
        # Most recently seen last: the ones inside the window come first, reversed.
        if self.ordered:
            for t in reversed(cur.values()):
                if t < since:
                    break
                n += 1
                if n == limit:
                    break
            return n
        for t in reversed(cur.values()):
            if t >= since:
                n += 1
                if n == limit:
                    break
        return n

    def items(self, key: Hashable, since: float) -> list[Hashable]:
        return [i for i, t in self._items(key).items() if t >= since]

    def seen(self, key: Hashable, item: Hashable, since: float) -> bool:
        """Was ``item`` seen with ``key`` at or after ``since``?"""
        t = self._items(key).get(item)
        return t is not None and t >= since

    def discard(self, key: Hashable, item: Hashable) -> None:
        cur = self.data.get(key)
        if cur is None:
            return
        if isinstance(cur, tuple):
            if cur[0] == item:
                del self.data[key]
            return
        cur.pop(item, None)
        if not cur:
            del self.data[key]

    def forget(self, key: Hashable) -> None:
        self.data.pop(key, None)

    def sweep(self, now: float) -> int:
        self._ops = 0
        limit = now - self.horizon

        def newest(v: tuple[Hashable, float] | dict[Hashable, float]) -> float:
            return v[1] if isinstance(v, tuple) else max(v.values(), default=0.0)

        dead = [k for k, v in self.data.items() if newest(v) < limit]
        for k in dead:
            del self.data[k]
        return len(dead)

    def __len__(self) -> int:
        return len(self.data)
