"""Start-up memory (issue #17): stand-ins for standard-library helpers the daemon no longer
imports behave exactly like the originals; the malloc arena cap; what an alert mail loads."""

from __future__ import annotations

import html
from typing import Any

import mailservers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sshmonitord.notify.render import h, visible

smtp_servers = mailservers.smtp_servers  # fixture


@given(st.text())
def test_h_escapes_as_html_escape_does(text: str) -> None:
    assert h(text) == html.escape(visible(text), quote=True)


def test_h_on_the_characters_that_matter() -> None:
    assert h("<a href=\"x\" title='y'>&amp;</a>") == (
        "&lt;a href=&quot;x&quot; title=&#x27;y&#x27;&gt;&amp;amp;&lt;/a&gt;"
    )
    assert h(42) == "42"


def test_malloc_arenas_are_capped_unless_the_operator_chose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """limit_malloc_arenas: set through glibc's mallopt; MALLOC_ARENA_MAX in the environment
    wins; no mallopt (musl) or no ctypes changes nothing and raises nothing."""
    import ctypes
    import platform

    from sshmonitord.cli import daemon as cli_daemon

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    if platform.libc_ver()[0] == "glibc":
        assert cli_daemon.limit_malloc_arenas(8) is True  # 8: what glibc allows anyway here
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert cli_daemon.limit_malloc_arenas() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")

    def no_libc(*_a: object, **_k: object) -> None:
        raise OSError("no libc here")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert cli_daemon.limit_malloc_arenas() is False


def test_the_daemon_caps_its_malloc_arenas() -> None:
    """`sshmonitord` calls it before anything starts a thread (the store's writer)."""
    import inspect

    from sshmonitord.cli import daemon as cli_daemon

    src = inspect.getsource(cli_daemon.daemon_main)
    assert src.index("limit_malloc_arenas()") < src.index("daemon.run(")


def _modules_after(code: str) -> list[str]:
    """The modules a fresh interpreter has loaded after running ``code``."""
    import subprocess
    import sys

    code += "import sys\nprint(' '.join(sorted(sys.modules)))\n"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()


def test_the_daemon_loads_no_shutil_no_report_rendering_and_no_unused_source() -> None:
    """argparse imports shutil (and zlib, bz2, lzma) for every help formatter it makes; the
    report's queries and rendering are for the day a report is built; the journal and auditd
    sources load where they are followed (tests/test_journal_trust.py builds them): none
    loads with the daemon's modules and its parser (~1 MB of its memory, issue #17)."""
    out = _modules_after(
        "from sshmonitord.cli.daemon import daemon_parser\n"
        "import sshmonitord.daemon\n"
        "daemon_parser().parse_args(['--dry-run'])\n"
    )
    assert "sshmonitord.daemon" in out
    assert "sshmonitord.notify.report.schedule" in out
    for absent in (
        "shutil",
        "bz2",
        "lzma",
        "sshmonitord.notify.report.query",
        "sshmonitord.notify.report.render",
        "sshmonitord.notify.report.command",
        "sshmonitord.sources.journal",  # a daemon that follows files (the journal's: below)
        "sshmonitord.sources.auditd",
        "sshmonitord.parse.audit",  # with the first auditd event
    ):
        assert absent not in out, absent


@pytest.mark.parametrize("columns", [None, "50", "200", "0", "junk"])
def test_help_is_as_wide_as_argparse_would_make_it(
    monkeypatch: pytest.MonkeyPatch, columns: str | None
) -> None:
    import argparse

    from sshmonitord.cli import daemon as cli_daemon

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    ours = cli_daemon.daemon_parser()
    theirs = cli_daemon.daemon_parser()
    theirs.formatter_class = argparse.RawDescriptionHelpFormatter
    assert ours.format_help() == theirs.format_help()
    assert ours.format_usage() == theirs.format_usage()


# --------------------------------------------------------------------------- e-mail headers

# From and To as the daemon writes them without the email package (a bare address, or a
# list of them, on one line) must be the package's own bytes; anything else must go to it.
_ADDRESSES = [
    "s@example.org",
    "a@b",
    "root@localhost",
    "Ops.Team+alerts@mail.example.co.uk",
    "x!#$%&'*+/=?^_`{|}~-y@ex-ample.org",
    "o'brien@example.org",
    "a.b.c@d-e.f",
    "UPPER@EXAMPLE.ORG",
    "a" * 60 + "@example.org",  # just fits after "From: "
    "a" * 64 + "@example.org",  # does not: folded by the package
    # Not bare addresses: display names, quoting, comments, odd dots, non-ASCII, literals.
    "SSH Monitor <s@example.org>",
    '"Ops, Team" <ops@example.org>',
    "Ops.Team <ops@example.org>",
    "s@example.org (monitor)",
    '"a b"@example.org',
    ".a@example.org",
    "a..b@example.org",
    "a.@example.org",
    "a@[192.0.2.1]",
    "a@example..org",
    "Überwachung <s@example.org>",
    "jürgen@example.org",
    "s@exämple.org",
    " s@example.org",
    "s@example.org ",
    "",
    "@example.org",
    "s@",
    "<s@example.org>",
    # Refused by the config and the channels (config.address_problem): a mail reader, and the
    # email package, would decode an encoded word into another address (or list of them).
    "=?utf-8?q?a?=@c.org",
    "=?utf-8?q?admin=40evil.example=2C_x?=@example.org",
    "Ops <=?utf-8?q?admin=40evil.example?=@example.org>",
    "a\tb@example.org",
    "a\x7fb@example.org",
    "a\u202eb@example.org",
]


def _package_line(name: str, value: str, linesep: str) -> str:
    import email.policy

    policy = email.policy.SMTP if linesep == "\r\n" else email.policy.default
    return str(policy.header_factory(name, value).fold(policy=policy))


@pytest.mark.parametrize("linesep", ["\r\n", "\n"])
@pytest.mark.parametrize("value", _ADDRESSES)
def test_address_headers_are_the_email_packages_bytes(value: str, linesep: str) -> None:
    from sshmonitord.config import address_problem
    from sshmonitord.notify.channels import check_address
    from sshmonitord.notify.smtp import _header_line

    if address_problem(value):
        with pytest.raises(ValueError, match="must not contain"):
            check_address("to", value)
        return
    for name, v in (("From", value), ("To", value), ("To", f"{value}, admin@example.org")):
        try:
            expected = _package_line(name, v, linesep)
        except Exception as exc:  # the package refuses it: so must we, the same way
            with pytest.raises(type(exc)):
                _header_line(name, v, linesep)
            continue
        assert _header_line(name, v, linesep) == expected, (name, v)


@pytest.mark.parametrize("linesep", ["\r\n", "\n"])
def test_address_lists_fold_as_the_package_folds_them(linesep: str) -> None:
    from sshmonitord.notify.smtp import _header_line

    for n in range(1, 9):
        to = ", ".join(f"admin{i}@example.org" for i in range(n))
        assert _header_line("To", to, linesep) == _package_line("To", to, linesep), n


@given(
    st.lists(
        st.text(
            st.sampled_from("ab.@-+_ \"'<>(),:;[]\\üZ9=?!#$%&*/^{|}~`\t"), min_size=1, max_size=30
        ).filter(lambda t: "\r" not in t and "\n" not in t),
        min_size=1,
        max_size=3,
    )
)
def test_any_address_header_is_the_email_packages_bytes(parts: list[str]) -> None:
    """What the config lets through is written as the package writes it; what it refuses
    (an encoded word, a control character) the channels refuse too."""
    from sshmonitord.config import address_problem
    from sshmonitord.notify.channels import check_address
    from sshmonitord.notify.smtp import _header_line

    if any(address_problem(p) for p in parts):
        with pytest.raises(ValueError, match="must not contain"):
            for p in parts:
                check_address("to", p)
        return
    to = ", ".join(parts)
    try:
        expected = _package_line("To", to, "\r\n")
    except Exception as exc:
        with pytest.raises(type(exc)):
            _header_line("To", to, "\r\n")
        return
    assert _header_line("To", to, "\r\n") == expected


def test_an_alert_mail_loads_neither_email_policy_nor_idna(smtp_servers: Any) -> None:
    """An alert to bare addresses over plain SMTP (a local relay on 127.0.0.1 or by name)
    loads neither the email package's policy and header parser nor the "idna" codec that
    socket.getaddrinfo() would run a str host name through (~1 MB together, issue #17)."""
    srv = smtp_servers()
    out = _modules_after(
        "import asyncio, sys\n"
        "from sshmonitord.notify.alert import Message\n"
        "from sshmonitord.notify.smtp import SmtpChannel\n"
        f"for host in ('127.0.0.1', 'localhost'):\n"
        f"    ch = SmtpChannel(host=host, port={srv.port}, tls='none',\n"
        "                     sender='sshmonitor@example.org',\n"
        "                     to=['admin@example.org', 'ops@example.org'], hostname='web1')\n"
        "    subject = '[sshmonitor] WARNING web1: user jürgen \\u202eevil ' + 'x ' * 40\n"
        "    m = Message(subject, 'text', '<p>html</p>', [], 0, 'web1')\n"
        "    print(asyncio.run(ch.send(m)), file=sys.stderr)\n"
    )
    assert "smtplib" in out and "sshmonitord.notify.smtp" in out
    for absent in (
        "email.policy",
        "email.headerregistry",
        "email._header_value_parser",
        "email.contentmanager",
        "encodings.idna",
        "stringprep",
    ):
        assert absent not in out, absent
    got = srv.wait_for(2)
    for g in got:
        assert g.rcpt_tos == ["admin@example.org", "ops@example.org"]
        msg = g.msg
        assert msg["From"] == "sshmonitor@example.org"
        assert msg["To"] == "admin@example.org, ops@example.org"
        assert str(msg["Subject"]).startswith("[sshmonitor] WARNING web1: user jürgen \u202eevil")
