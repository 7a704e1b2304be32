"""The hand-written corpus (tests/data/parse, see its README) against the parser."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from sshmonitord.events import Line
from sshmonitord.parse import Parser

DATA = Path(__file__).resolve().parent / "data" / "parse"
NOW = datetime(2026, 11, 25, tzinfo=UTC)
NULLABLE = ("user", "ip", "port", "method", "key_fp")


def _cases() -> list[tuple[str, dict]]:
    out = []
    for f in sorted(DATA.glob("*.yaml")):
        for i, case in enumerate(yaml.safe_load(f.read_text()) or [], 1):
            out.append((f"{f.stem}#{i}", case))
    return out


CASES = _cases()


def test_corpus_is_there():
    assert len(CASES) >= 200


@pytest.mark.parametrize(("name", "case"), CASES, ids=[c[0] for c in CASES])
def test_case(name, case):
    p = Parser(zone=UTC, reference=NOW)
    if "journal" in case:
        fields = {k: str(v) for k, v in case["journal"].items()}
        ev = p.parse_line(Line(text=fields.get("MESSAGE", ""), source="journal", fields=fields))
    else:
        ev = p.parse_line(Line(text=case["line"], source="test"))
    assert p.stats.errors == 0, p.stats.error_samples
    want = case["event"]
    if want is None:
        assert ev is None, f"expected no event, got {ev}"
        return
    assert ev is not None, "expected an event, got none"
    got = {
        "kind": str(ev.kind),
        "host": ev.host,
        "program": ev.program,
        "pid": ev.pid,
        "user": ev.user,
        "ip": None if ev.ip is None else str(ev.ip),
        "port": ev.port,
        "method": ev.method,
        "key_fp": ev.key_fp,
        "count": ev.count,
    }
    expect = {k: want[k] for k in ("kind", "host", "program", "pid")}
    for k in NULLABLE:
        expect[k] = want.get(k)
    if expect["ip"] is not None:
        expect["ip"] = str(ipaddress.ip_address(expect["ip"]))
    expect["count"] = want.get("count", 1)
    assert got == expect
    for k, v in (want.get("detail") or {}).items():
        assert k in ev.detail, f"detail.{k} missing: {ev.detail}"
        if isinstance(v, int | float) and not isinstance(v, bool):
            assert float(ev.detail[k]) == float(v), f"detail.{k}"
        else:
            assert ev.detail[k] == v, f"detail.{k}"
    if "ts" in want:
        assert ev.ts == datetime.fromisoformat(want["ts"])
