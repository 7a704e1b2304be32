"""Stand-ins for standard-library helpers the daemon no longer imports at start (issue #17)
behave exactly like the originals."""

from __future__ import annotations

import html

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
