"""The gateway's own message values: what every carrier module turns its requests into.

Everything after the webhook speaks only these types, so a second carrier is one module
in `gateway/carriers/` and one table of test cases. Nothing here knows any carrier.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


class InvalidWebhook(ValueError):
    """A carrier request we refuse: `field` names what is wrong, for a precise 400."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class MediaItem:
    url: str
    content_type: str | None = None


@dataclass(frozen=True)
class InboundMessage:
    carrier_kind: str
    account_id: str
    carrier_message_id: str
    from_number: str
    to_number: str
    body: str = ""
    media: tuple[MediaItem, ...] = ()
    channel: str = "sms"
    messaging_service_id: str | None = None
    segments: int = 1
    raw: dict[str, Any] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        # Not dataclasses.asdict, which deep-copies `raw` value by value: this runs in
        # every webhook request, and every value here is already a JSON scalar.
        payload = {f.name: getattr(self, f.name) for f in fields(self)}
        payload["media"] = tuple({"url": m.url, "content_type": m.content_type} for m in self.media)
        payload["raw"] = dict(self.raw)
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> InboundMessage:
        values = dict(payload)
        values["media"] = tuple(MediaItem(**m) for m in values.get("media", ()))
        return cls(**values)


@dataclass(frozen=True)
class StatusUpdate:
    carrier_kind: str
    account_id: str
    carrier_message_id: str
    status: str
    carrier_status: str
    error_code: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboundMessage:
    """One text to send: the final body (appended message included) and its media."""

    message_id: int
    from_number: str
    to_number: str
    body: str
    media_urls: tuple[str, ...] = ()
    status_callback: str | None = None


@dataclass(frozen=True)
class SendResult:
    """What the carrier answered when it took a message (or what a lookup found)."""

    carrier_message_id: str
    status: str               # the gateway's own status word (queued, sent, ...)
    carrier_status: str = ""
    error_code: str | None = None
    error_message: str | None = None
