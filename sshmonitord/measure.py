"""What the stages measure about themselves, as plain data: samples and histograms.

Each stage's ``metrics()`` returns :class:`Sample` s — a metric name from ``metrics.SPEC``,
its labels and a number (or a :class:`Histogram`). The daemon gathers them; the Prometheus
endpoint (metrics.py) and ``sshmonitor status`` both show that one gathering, so they can
never disagree. Nothing here imports prometheus_client: a daemon without an endpoint pays
only for a few integer additions.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# Seconds: from a millisecond (a store commit on an idle disk) to a minute (a stuck one).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class Histogram:
    """A cumulative-on-read histogram with fixed upper bounds (``le``), as Prometheus has."""

    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)  # per bucket, +Inf last; not cumulative
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float, n: int = 1) -> None:
        """``n`` observations of ``value`` (a batch of lines that waited alike)."""
        if n <= 0 or value != value:  # NaN: a clock gone wrong, not a measurement
            return
        value = max(0.0, value)
        self.counts[bisect_left(self.buckets, value)] += n
        self.sum += value * n
        self.count += n

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, observations ≤ le) for each bound and ``+Inf``."""
        out: list[tuple[str, int]] = []
        total = 0
        for le, c in zip((*(repr(float(b)) for b in self.buckets), "+Inf"), self.counts,
                         strict=True):
            total += c
            out.append((le, total))
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "sum": round(self.sum, 6), "buckets": dict(self.cumulative())}


Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sample:
    name: str
    value: float | Histogram
    labels: Labels = ()


def sample(name: str, value: float | Histogram, **labels: str) -> Sample:
    return Sample(name, value, tuple(sorted(labels.items())))


def as_json(samples: Iterable[Sample]) -> list[dict[str, Any]]:
    """The samples as ``status --json`` shows them (histograms: count, sum, buckets)."""
    out: list[dict[str, Any]] = []
    for s in samples:
        value: Any = s.value.as_dict() if isinstance(s.value, Histogram) else s.value
        out.append({"name": s.name, "labels": dict(s.labels), "value": value})
    return out
