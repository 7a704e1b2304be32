"""Alerts: rendering (render.py) and delivery channels (channels.py, one module per channel
type, and build.py, which builds them from the config). The queue — spool, dedup/throttle,
digest, retries — builds on these.

The contract::

    Alert.from_finding(finding, host, ban=None) -> Alert      # to_dict()/from_dict() spool
    render(alerts, host, suppressed=0, now=None) -> Message   # worst first, escaped
    make_channel(cfg, hostname) -> Channel                    # from a config channel entry
    build_channels(cfgs, hostname) -> [Channel]               # notify.channels, unique names
    channel.accepts(alert) -> bool                            # severity + rule filters
    await channel.send(message) -> str                        # or raises DeliveryError
    await channel.close()
"""

from .alert import SEVERITIES, Alert, DeliveryError, Message, severity_rank
from .build import build_channels, make_channel
from .channels import BaseChannel, Channel, parse_retry_after
from .render import render, test_message

__all__ = [
    "SEVERITIES",
    "Alert",
    "BaseChannel",
    "Channel",
    "DeliveryError",
    "Message",
    "build_channels",
    "make_channel",
    "parse_retry_after",
    "render",
    "severity_rank",
    "test_message",
]
