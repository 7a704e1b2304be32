"""Start-up memory (issue #17): stand-ins for standard-library helpers the daemon no longer
imports behave exactly like the originals; the malloc arena cap."""

from __future__ import annotations

import html

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sshmonitord.notify.render import h, visible


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


def test_the_daemon_loads_no_shutil_no_report_rendering_and_no_unused_source() -> None:
    """argparse imports shutil (and zlib, bz2, lzma) for every help formatter it makes; the
    report's queries and rendering are for the day a report is built; the journal and auditd
    sources load where they are followed (tests/test_journal_trust.py builds them): none
    loads with the daemon's modules and its parser (~1 MB of its memory, issue #17)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from sshmonitord.cli.daemon import daemon_parser\n"
        "import sshmonitord.daemon\n"
        "daemon_parser().parse_args(['--dry-run'])\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
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
