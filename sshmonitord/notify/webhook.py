"""Webhooks: POST the alerts as JSON to a URL.

``format: json`` (generic)::

    {"id": "<message id>", "host": "web1", "subject": "[sshmonitor] ...", "text": "...",
     "alert_ids": ["<alert id>", ...], "alerts": [Alert.to_dict(), ...], "suppressed": 0}

``format: slack`` — Slack and Mattermost incoming webhooks: ``{"text": subject + body}``,
with ``&``, ``<`` and ``>`` escaped as Slack requires, so a user name like ``<!channel>``
cannot ping anyone or forge a link (the body's last line names the message id). ``token`` is
sent as ``Authorization: Bearer``; extra ``headers`` are sent as given. Every POST carries
``Idempotency-Key: <message id>``: the same alerts sent again (a retry, or a re-delivery after
a crash) carry the same key. Retry semantics are :class:`~.channels.HttpChannel`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from .alert import Message
from .channels import HttpChannel, check_header_value, idempotency_key

# Slack cuts messages at 40,000 characters; stay well inside.
MAX_SLACK_TEXT = 35_000


def slack_escape(text: str) -> str:
    """Slack's three control characters as HTML entities (https://api.slack.com/reference/surfaces/formatting)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class WebhookChannel(HttpChannel):
    type = "webhook"

    def __init__(
        self,
        *,
        url: str,
        format: Literal["json", "slack"] = "json",
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 15.0,
        hostname: str = "",
        **kw: Any,
    ) -> None:
        super().__init__(timeout=timeout, **kw)
        if not url:
            raise ValueError("webhook: url is required")
        if format not in ("json", "slack"):
            raise ValueError(f"webhook: format must be json or slack, not {format!r}")
        self.url = url
        self.format = format
        self.hostname = hostname
        self._headers = {
            check_header_value("header name", k): check_header_value(f"header {k}", str(v))
            for k, v in (headers or {}).items()
        }
        if token:
            self._headers["Authorization"] = "Bearer " + check_header_value("token", token)

    def payload(self, message: Message) -> dict[str, Any]:
        if self.format == "slack":
            text = f"{message.subject}\n\n{message.text}"
            if len(text) > MAX_SLACK_TEXT:
                text = text[:MAX_SLACK_TEXT] + "\n… (truncated)"
            return {"text": slack_escape(text)}
        return {
            "id": idempotency_key(message),
            "host": message.host or self.hostname,
            "subject": message.subject,
            "text": message.text,
            "alert_ids": message.alert_ids,
            "alerts": [a.to_dict() for a in message.alerts],
            "suppressed": message.suppressed,
        }

    def headers(self, message: Message) -> dict[str, str]:
        # The key is ours: a configured header of that name (any case) must not replace it
        # with a constant, nor be sent beside it.
        out = {k: v for k, v in self._headers.items() if k.lower() != "idempotency-key"}
        out["Idempotency-Key"] = idempotency_key(message)
        return out

    async def send(self, message: Message) -> str:
        return await self.post_json(self.url, self.payload(message), headers=self.headers(message))

    def __repr__(self) -> str:
        from .channels import _safe_url

        return f"<WebhookChannel {self.name!r} {_safe_url(self.url)} format={self.format}>"
