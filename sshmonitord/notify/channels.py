"""Delivery channels: the common base and the HTTP plumbing two of them share (the factory that
builds them from the config is notify/build.py).

A channel delivers one rendered :class:`~.alert.Message` and either returns what the server
said or raises :class:`~.alert.DeliveryError` (``permanent`` or not, ``retry_after`` when the
server asked for a pause). Channels never retry by themselves and never sleep: the queue
owns retries, backoff and the spool. ``accepts()`` applies the channel's filters (minimum
severity, include/exclude rules) so the queue can build a per-channel digest.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Mapping
from datetime import UTC
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from .. import __version__
from ..config import address_problem
from .alert import Alert, DeliveryError, Message, is_id, make_id, severity_rank
from .render import one_line

if TYPE_CHECKING:
    import httpx

__all__ = [
    "BaseChannel",
    "Channel",
    "DeliveryError",
    "HttpChannel",
    "idempotency_key",
    "msgid",
    "msgid_domain",
    "parse_retry_after",
]

USER_AGENT = f"sshmonitord/{__version__}"
# How much of a server's answer ends up in a return value or an error.
MAX_ANSWER = 500


@runtime_checkable
class Channel(Protocol):
    name: str
    type: str
    min_severity: str
    include_rules: tuple[str, ...]
    exclude_rules: tuple[str, ...]

    def accepts(self, alert: Alert) -> bool: ...

    async def send(self, message: Message) -> str: ...

    async def close(self) -> None: ...


class BaseChannel:
    """Name, filters and ``accepts()``; subclasses implement ``send()`` (and ``close()``)."""

    type: ClassVar[str] = "base"

    def __init__(
        self,
        *,
        name: str | None = None,
        min_severity: str = "warning",
        include_rules: tuple[str, ...] | list[str] = (),
        exclude_rules: tuple[str, ...] | list[str] = (),
    ) -> None:
        self.name = name or self.type
        self.min_severity = min_severity
        self.include_rules = tuple(include_rules)
        self.exclude_rules = tuple(exclude_rules)

    def accepts(self, alert: Alert) -> bool:
        """Does this channel want ``alert``? (severity floor, then include/exclude rules)"""
        if severity_rank(alert.severity) < severity_rank(self.min_severity):
            return False
        if self.include_rules and alert.rule not in self.include_rules:
            return False
        return alert.rule not in self.exclude_rules

    async def send(self, message: Message) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    async def close(self) -> None:
        return None

    def __repr__(self) -> str:  # never shows secrets: subclasses keep them out of here
        return f"<{type(self).__name__} {self.name!r}>"


def answer(text: str | bytes, limit: int = MAX_ANSWER) -> str:
    """A server's answer made printable and short enough for a log line."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return one_line(text, limit)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """HTTP ``Retry-After``: delay-seconds or an HTTP-date → seconds from now (≥ 0)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    from email.utils import parsedate_to_datetime  # late: the email package is ~2 MB

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:  # pragma: no cover - older Pythons returned None
        return None
    if when.tzinfo is None:  # "-0000": no zone given; HTTP-dates are GMT
        when = when.replace(tzinfo=UTC)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


# A host name as RFC 5322's dot-atom allows right of the @ in a msg-id: labels of letters,
# digits and inner hyphens, joined by single dots.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def msgid_domain(hostname: str) -> str:
    """``hostname`` if it can stand right of the @ in a Message-ID, else ``localhost``."""
    ok = len(hostname or "") <= 253 and _HOSTNAME_RE.fullmatch(hostname or "")
    return hostname if ok else "localhost"


def idempotency_key(message: Message) -> str:
    """The message's stable id, checked: hex (a hash, never log text), so it fits any header
    whatever the message was built with. ``Idempotency-Key`` and the JSON ``id``."""
    return message.id if is_id(message.id) else make_id("message/given", message.id)


def msgid(message: Message, hostname: str) -> str:
    """The RFC 5322 Message-ID for ``message``: ``<ID@HOST>``, the same for every delivery of
    the same alerts, so a duplicate after a crash is recognisable; the host a plain dot-atom."""
    return f"<{idempotency_key(message)}@{msgid_domain(hostname)}>"


def check_header_value(what: str, value: str) -> str:
    """Refuse configured header values (addresses, tokens) that could break a header."""
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"{what} must not contain line breaks or NUL")
    return value


def check_address(what: str, value: str) -> str:
    """Refuse a sender or recipient that could break, add or disguise a header (the config
    refuses it first, naming the key: config.address_problem)."""
    problem = address_problem(value)
    if problem:
        raise ValueError(f"{what} {problem}")
    return value


class HttpChannel(BaseChannel):
    """POST JSON with httpx; map the outcome onto DeliveryError.

    2xx → success (returns ``HTTP 200: <body snippet>``); 408, 425, 429 and 5xx, timeouts and
    connection errors → transient, with ``retry_after`` from ``Retry-After``; any other
    status → permanent, with the response body in the error.
    """

    TRANSIENT_STATUS: ClassVar[frozenset[int]] = frozenset({408, 425, 429})

    def __init__(self, *, timeout: float = 15.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.timeout = float(timeout)
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def _make_client(self) -> httpx.AsyncClient:
        import httpx

        return httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout),
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
        )

    async def post_json(
        self,
        url: str,
        payload: Any,
        *,
        headers: Mapping[str, str] | None = None,
        auth: Any = None,
    ) -> str:
        import httpx

        loop = asyncio.get_running_loop()
        if self._client is not None and self._client_loop is not loop:
            # Used from another event loop before (e.g. one asyncio.run() per CLI call): its
            # connections belong to that loop and cannot be reused or closed from here.
            self._client = None
        if self._client is None:
            self._client, self._client_loop = self._make_client(), loop
        shown = _safe_url(url)
        try:
            # httpx's timeout is per operation; this bounds the whole exchange, so a server
            # trickling one byte a second cannot hold a delivery for ever.
            async with asyncio.timeout(self.timeout):
                # The request runs in a task of its own, not in ours. anyio < 4 (under httpx
                # 0.23: Debian 12 has anyio 3.6.2) cancels the task that opens a connection
                # (connect_tcp's task group cancels its host task once connected) and never
                # uncancel()s it. In our task, that stray request made asyncio.timeout take
                # its own expiry for someone else's cancellation: a server that did not answer
                # on a new connection raised CancelledError instead of TimeoutError, and
                # through the queue's wait (aio.bounded) the delivery task died as if
                # cancelled.
                # Cancelling us (the timeout, a shutdown) still cancels the request.
                resp = await asyncio.create_task(
                    self._client.post(url, json=payload, headers=headers, auth=auth),
                    name="http-post",
                )
        except (TimeoutError, httpx.TimeoutException):
            raise DeliveryError(
                f"{shown}: no answer within {self.timeout:g}s", permanent=False
            ) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise DeliveryError(f"{shown}: {answer(str(exc))}", permanent=True) from None
        except httpx.HTTPError as exc:  # connection refused, reset, DNS, TLS...
            reason = answer(str(exc) or type(exc).__name__)
            raise DeliveryError(f"{shown}: {reason}", permanent=False) from None
        body = answer(resp.content)
        status = resp.status_code
        if 200 <= status < 300:
            return f"HTTP {status}: {body}" if body else f"HTTP {status}"
        detail = f"{shown}: HTTP {status} {resp.reason_phrase}".rstrip()
        if 300 <= status < 400 and resp.headers.get("location"):
            detail += f" (redirect to {answer(resp.headers['location'], 200)})"
        if body:
            detail += f": {body}"
        retry_after = parse_retry_after(resp.headers.get("retry-after"))
        transient = status >= 500 or status in self.TRANSIENT_STATUS
        raise DeliveryError(detail, permanent=not transient, retry_after=retry_after)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._client_loop is asyncio.get_running_loop():
            await client.aclose()


def _safe_url(url: str) -> str:
    """The URL for messages: no user:password, no query string (tokens live there)."""
    try:
        import httpx

        u = httpx.URL(url)
        return str(u.copy_with(username=None, password=None, query=None, fragment=None))
    except Exception:
        return "<invalid URL>"
