"""Forward Email's HTTP API (https://forwardemail.net/email-api): ``POST /v1/emails``.

HTTP basic auth with the API key as the user name and an empty password; a JSON body with
``from``, ``to`` (a comma-separated string: the API takes Nodemailer's message fields, where
``to`` is a comma-separated list or an array), ``subject``, ``text``, ``html``, ``messageId``
(Nodemailer's field for the Message-ID header; the API passes it through, see
``helpers/get-nodemailer-message-from-request.js`` in forwardemail/forwardemail.net) and extra
``headers``. The Message-ID is the stable ``<ID@HOST>`` the SMTP channel uses, and the request
carries ``Idempotency-Key: ID``: a re-delivery after a crash is recognisable. Forward Email's
documentation promises nothing about either; the receiving mailbox can still tell.

Status handling is :class:`~.channels.HttpChannel`'s: 2xx delivered; 429, 5xx, timeouts and
connection errors transient (honouring ``Retry-After``); other 4xx permanent, with the API's
error message.
"""

from __future__ import annotations

from typing import Any

from .alert import Message
from .channels import HttpChannel, check_address, idempotency_key, msgid, msgid_domain

DEFAULT_BASE_URL = "https://api.forwardemail.net"


class ForwardEmailChannel(HttpChannel):
    type = "forwardemail"

    def __init__(
        self,
        *,
        api_key: str,
        sender: str,
        to: tuple[str, ...] | list[str],
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 15.0,
        hostname: str = "localhost",
        **kw: Any,
    ) -> None:
        super().__init__(timeout=timeout, **kw)
        if not api_key:
            raise ValueError("forwardemail: api_key is required")
        if not to:
            raise ValueError("forwardemail: at least one recipient (to) is required")
        self._api_key = api_key
        self.sender = check_address("sender", sender)
        self.to = tuple(check_address("to", t) for t in to)
        self.url = base_url.rstrip("/") + "/v1/emails"
        self.hostname = msgid_domain(hostname)

    def payload(self, message: Message) -> dict[str, Any]:
        return {
            "from": self.sender,
            "to": ", ".join(self.to),
            "subject": message.subject,
            "text": message.text,
            "html": message.html,
            "messageId": msgid(message, self.hostname),
            "headers": {
                "Auto-Submitted": "auto-generated",
                "X-Auto-Response-Suppress": "All",
                **(
                    {"X-Sshmonitor-Alert-Ids": " ".join(message.alert_ids)}
                    if message.alerts
                    else {}
                ),
            },
        }

    async def send(self, message: Message) -> str:
        import httpx

        return await self.post_json(
            self.url,
            self.payload(message),
            headers={"Idempotency-Key": idempotency_key(message)},
            auth=httpx.BasicAuth(self._api_key, ""),
        )

    def __repr__(self) -> str:
        return f"<ForwardEmailChannel {self.name!r} {self.url} to={list(self.to)}>"
