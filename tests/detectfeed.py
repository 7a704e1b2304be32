"""What the detection tests share: the real parser and a detection engine, fed sshd lines."""

from __future__ import annotations

from datetime import UTC, datetime

from sshmonitord.config import DetectionConfig
from sshmonitord.detect.engine import Engine, History
from sshmonitord.events import Finding
from sshmonitord.parse import Parser


class Stream:
    """Lines through ``Parser.parse_text`` into ``Engine.feed``; every finding kept in
    ``found``. ``reference`` places classic stamps in a year; ``clock``, when given, is set
    as the pipeline sets it (``Engine.set_clock``)."""

    def __init__(
        self,
        reference: datetime,
        clock: datetime | None = None,
        history: History | None = None,
        cfg: DetectionConfig | None = None,
    ) -> None:
        self.engine = Engine(cfg or DetectionConfig(), history or History(since=0.0), zone=UTC)
        if clock is not None:
            self.engine.set_clock(clock.timestamp())
        self.parser = Parser(zone=UTC, reference=reference)
        self.found: list[Finding] = []

    def feed(self, text: str) -> list[Finding]:
        ev = self.parser.parse_text(text)
        assert ev is not None, text
        out = self.engine.feed(ev)
        self.found += out
        return out

    def failures(self, ip: str) -> int:
        """What detection counted against IPv4 ``ip``: credential guesses and scanner visits."""
        key = int.from_bytes(bytes(int(x) for x in ip.split(".")))
        e = self.engine
        return e.by_ip.count(key, 0) + e.by_ip_scan.count(key, 0)


def address(i: int) -> str:
    """The i-th of a run of distinct IPv4 addresses in 10/8."""
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
