"""Alerts: rendering (render.py) and delivery channels (channels.py and one module per
channel type). The queue — spool, dedup/throttle, digest, retries — builds on these.

The contract::

    Alert.from_finding(finding, host, ban=None) -> Alert      # to_dict()/from_dict() spool
    render(alerts, host, suppressed=0, now=None) -> Message   # worst first, escaped
    make_channel(cfg, hostname) -> Channel                    # from a config channel entry
    channel.accepts(alert) -> bool                            # severity + rule filters
    await channel.send(message) -> str                        # or raises DeliveryError
    await channel.close()
"""

from .alert import SEVERITIES, Alert, DeliveryError, Message, severity_rank
from .channels import BaseChannel, Channel, make_channel, parse_retry_after
from .render import render, test_message

__all__ = [
    "SEVERITIES",
    "Alert",
    "BaseChannel",
    "Channel",
    "DeliveryError",
    "Message",
    "make_channel",
    "parse_retry_after",
    "render",
    "severity_rank",
    "test_message",
]
