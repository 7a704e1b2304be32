"""One way to read and write times and durations (sshmonitord/timefmt.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from sshmonitord.timefmt import fmt_duration, fmt_local, iso_utc, parse_duration, parse_when

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0, "0s"), (4.4, "4s"), (184, "3m 4s"), (7384, "2h 3m 4s"), (93784, "1d 2h 3m")],
)
def test_fmt_duration(seconds, text):
    assert fmt_duration(seconds) == text


def test_parse_when_forms():
    assert parse_when("now", NOW) == NOW
    assert parse_when("90m", NOW) == NOW - timedelta(minutes=90)
    assert parse_when("1h30m", NOW) == NOW - timedelta(seconds=5400)
    plus2 = timezone(timedelta(hours=2))
    assert parse_when("2026-11-24T07:00", NOW, zone=plus2) == datetime(
        2026, 11, 24, 7, 0, tzinfo=plus2
    )
    assert parse_when("2026-11-24T07:00Z", NOW).tzinfo is not None
    naive_local = parse_when("2026-11-24T07:00", NOW)
    assert naive_local.tzinfo is not None  # the machine's local zone, never naive
    with pytest.raises(ValueError, match="neither a duration"):
        parse_when("yesterday-ish", NOW)


def test_parse_duration_rejects_junk():
    assert parse_duration("1w") == 604800
    for bad in ("", "5x", "m", True, None, "1h junk"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_fmt_local_and_iso():
    assert fmt_local(None) == "-" and fmt_local(None, missing="?") == "?"
    assert len(fmt_local(0)) == len("1970-01-01 00:00:00")
    assert iso_utc(0) == "1970-01-01T00:00:00Z" and iso_utc(None) is None
