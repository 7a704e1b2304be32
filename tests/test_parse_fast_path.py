"""Parser.parse_text reads classic-prefix sshd lines in one frame (issue #17): the same lines
read the general way (split_syslog, then _finish) must give identical events and counters.

The reference below is parse_text with the shortcut taken out (its general route alone). Every catalogue example
(with attacker slots filled with hostile text), prefix variants around it (no pid, a forged
pid, a bad stamp, a repeated message, another program), a generated auth.log and random
messages go through both; events are compared field by field, counters as a whole.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sshmonitord.events import Event
from sshmonitord.parse import Parser, sshd

HERE = Path(__file__).resolve().parent
REF = datetime(2026, 11, 23, 12, tzinfo=UTC)


class GeneralParser(Parser):
    """parse_text without the one-frame shortcut: every line the general way."""

    def parse_text(self, text: str) -> Event | None:
        self.stats.lines += 1
        return self._parse_general(text)


def _both(lines: list[str]) -> None:
    fast, general = Parser(reference=REF), GeneralParser(reference=REF)
    for i, text in enumerate(lines):
        a, b = fast.parse_text(text), general.parse_text(text)
        assert (a is None) == (b is None), (i, text)
        if a is not None and b is not None:
            assert asdict(a) == asdict(b), (i, text)
            assert type(a.ip) is type(b.ip), (i, text)
    assert asdict(fast.stats) == asdict(general.stats)
    assert fast.connections.attributed == general.connections.attributed


HOSTILE = (
    "root",
    "x from 6.6.6.6 port 22 ssh2",
    "a b c",
    "",
    " [preauth]",
    "user evil from 1.1.1.1",
    "\u00e9\u200b\ufeff",
    "]: sshd[1]: Failed password for root from 7.7.7.7 port 1 ssh2",
)
PREFIXES = (
    "Nov 22 10:11:12 web1 sshd[4242]: ",
    "Nov 22 10:11:12 web1 sshd-session[4242]: ",
    "Nov 22 10:11:12 web1 sshd-auth[4242]: ",
    "Nov  2 10:11:12 web1 sshd[4242]: ",
    "Nov 22 10:11:12 web1 sshd: ",  # no pid
    "Nov 22 10:11:12 web1 sshd[]: ",
    "Nov 22 10:11:12 web1 sshd[99999999999999999999]: ",  # a forged pid: no process
    "Nov 22 10:11:12 web1 sshd[4242]:",  # no space after the tag
    "Nov 31 10:11:12 web1 sshd[4242]: ",  # no such day: malformed
    "Nov 22 10:61:12 web1 sshd[4242]: ",  # no such minute
    "Foo 22 10:11:12 web1 sshd[4242]: ",
    "Nov 22 10:11:12 web1 sshd[4242]: message repeated 3 times: [ ",
    "Nov 22 10:11:12 web1 sshd[4242]: [ID 800047 auth.info] ",
    "Nov 22 10:11:12 web1 CRON[4242]: ",
    "Nov 22 10:11:12 web1 sudo[4242]: ",
    "2026-11-22T10:11:12.5+01:00 web1 sshd[4242]: ",
)


def _examples() -> list[str]:
    out = []
    for entry in sshd.ENTRIES:
        for ex in entry.examples:
            for u in HOSTILE[:4]:
                out.append(
                    ex.replace("{u}", u)
                    .replace("{x}", HOSTILE[-1])
                    .replace("{a}", "203.0.113.9")
                    .replace("{p}", "4242")
                )
    return out


def test_every_catalogue_example_under_every_prefix_reads_the_same():
    msgs = _examples()
    lines = []
    for pre in PREFIXES:
        for msg in msgs:
            line = pre + msg
            if "message repeated" in pre:
                line += "]"
            lines.append(line)
            lines.append(line + " [preauth]")
    assert len(lines) > 2000
    _both(lines)


def test_a_generated_auth_log_reads_the_same(tmp_path):
    sys.path.insert(0, str(HERE.parent / "bench"))
    import gen_authlog  # a script, not a package

    out = tmp_path / "auth.log"
    gen_authlog.main(
        ["--lines", "20000", "--out", str(out), "--attack-share", "0.6",
         "--start", "2026-11-16", "--seed", "7"]
    )  # fmt: skip
    _both(out.read_text(encoding="utf-8").splitlines())


def test_one_connection_across_both_paths_keeps_its_address():
    # The connection memory is shared: a line read the general way (a repeated message)
    # between shortcut lines must see and teach the same connection.
    lines = [
        "Nov 22 10:11:12 web1 sshd[77]: Invalid user bob from 198.51.100.4 port 5000",
        "Nov 22 10:11:13 web1 sshd[77]: message repeated 2 times: [ pam_unix(sshd:auth): "
        "check pass; user unknown]",
        "Nov 22 10:11:14 web1 sshd[77]: Failed password for invalid user bob from "
        "198.51.100.4 port 5000 ssh2",
        "Nov 22 10:11:15 web1 sshd[77]: Connection closed by invalid user bob 198.51.100.4 "
        "port 5000 [preauth]",
    ]
    _both(lines)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pre=st.sampled_from(PREFIXES),
    msg=st.text(max_size=160).map(lambda s: s.replace("\n", " ")),
    head=st.sampled_from([m.split(" ", 1)[0] + " " for m in _examples()] + [""]),
)
def test_random_messages_read_the_same(pre, msg, head):
    _both([pre + head + msg, pre + head + msg + " [preauth]"])
