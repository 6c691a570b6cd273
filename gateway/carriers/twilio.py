"""Twilio: webhook signatures, inbound SMS/MMS bodies and status callbacks.

A real inbound body, as Twilio posts it (form-encoded; NumMedia=2 for an MMS)::

    ToCountry=US&SmsMessageSid=SMe287d7...&NumMedia=2&SmsSid=SMe287d7...&Body=Msg
    &To=%2B12028831111&MessageSid=SMe287d7...&AccountSid=AC...&From=%2B14133881111
    &MediaUrl0=https%3A%2F%2Fapi.twilio.com%2F...%2FMedia%2FME...&MediaContentType0=image%2Fjpeg
    &MessagingServiceSid=MG...&NumSegments=1&ApiVersion=2010-04-01

A status callback::

    MessageSid=SM0b6e...&MessageStatus=delivered&ErrorCode=30003&AccountSid=AC...

Signatures are Twilio's scheme (HMAC-SHA1 of the URL Twilio called plus the sorted
form fields, keyed with the account's auth token), checked with twilio's own
`RequestValidator` rather than re-implemented.
"""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator

from gateway.messaging import InboundMessage, InvalidWebhook, MediaItem, StatusUpdate

KIND = "twilio"
SIGNATURE_HEADER = "X-Twilio-Signature"
REQUIRED_INBOUND_FIELDS = ("MessageSid", "From", "To", "AccountSid")
MAX_MEDIA = 10  # Twilio delivers at most ten media items per MMS
WHATSAPP_PREFIX = "whatsapp:"

# Twilio's message statuses, mapped to the gateway's own. Anything else is kept as
# "unknown" with the carrier's word recorded beside it.
STATUS_MAP = {
    "accepted": "queued",
    "scheduled": "queued",
    "queued": "queued",
    "sending": "sending",
    "sent": "sent",
    "delivered": "delivered",
    "undelivered": "undelivered",
    "failed": "failed",
    "canceled": "failed",
    "read": "read",
    "receiving": "received",
    "received": "received",
}

# Twilio error codes the gateway acts on.
ERROR_OPTED_OUT = "21610"         # the recipient replied STOP
ERROR_INVALID_TO = "21211"        # 'To' is not a valid phone number
ERROR_NOT_MOBILE = "21614"        # 'To' is not a mobile number
ERROR_TOO_MANY_REQUESTS = "20429"


def verify(url: str, form: Mapping, signature: str | None, auth_token: str) -> bool:
    """True when `signature` is Twilio's signature of `url` and `form` with this token."""
    if not signature:
        return False
    return RequestValidator(auth_token).validate(url, form, signature)


def sign(url: str, form: Mapping, auth_token: str) -> str:
    """The signature Twilio would send; used by `gateway simulate` and the tests."""
    return RequestValidator(auth_token).compute_signature(url, form)


def redact(carrier) -> list[str]:
    """The secrets of a carrier's settings that must never reach a log line."""
    return [carrier.auth_token.get_secret_value()]


def parse_inbound(form: Mapping) -> InboundMessage:
    for name in REQUIRED_INBOUND_FIELDS:
        if not (form.get(name) or "").strip():
            raise InvalidWebhook(name, f"field '{name}' is required")
    from_number, channel = _strip_channel(form["From"])
    to_number, _ = _strip_channel(form["To"])
    return InboundMessage(
        carrier_kind=KIND,
        account_id=form["AccountSid"].strip(),
        carrier_message_id=form["MessageSid"].strip(),
        from_number=from_number,
        to_number=to_number,
        body=form.get("Body") or "",
        media=_media_items(form),
        channel=channel,
        messaging_service_id=form.get("MessagingServiceSid") or None,
        segments=_int_field(form, "NumSegments", default=1),
        raw=dict(form.items()),
    )


def parse_status(form: Mapping) -> StatusUpdate:
    for name in ("MessageSid", "AccountSid"):
        if not (form.get(name) or "").strip():
            raise InvalidWebhook(name, f"field '{name}' is required")
    # Only MessageStatus is authoritative; SmsStatus is a legacy duplicate.
    carrier_status = (form.get("MessageStatus") or form.get("SmsStatus") or "").strip().lower()
    return StatusUpdate(
        carrier_kind=KIND,
        account_id=form["AccountSid"].strip(),
        carrier_message_id=form["MessageSid"].strip(),
        status=STATUS_MAP.get(carrier_status, "unknown"),
        carrier_status=carrier_status,
        error_code=(form.get("ErrorCode") or "").strip() or None,
        raw=dict(form.items()),
    )


def _strip_channel(address: str) -> tuple[str, str]:
    address = address.strip()
    if address.lower().startswith(WHATSAPP_PREFIX):
        return address[len(WHATSAPP_PREFIX):], "whatsapp"
    return address, "sms"


def _media_items(form: Mapping) -> tuple[MediaItem, ...]:
    count = _int_field(form, "NumMedia", default=0)
    if count < 0 or count > MAX_MEDIA:
        raise InvalidWebhook("NumMedia", f"field 'NumMedia' must be between 0 and {MAX_MEDIA}")
    items = []
    for index in range(count):
        url = (form.get(f"MediaUrl{index}") or "").strip()
        if not url:
            raise InvalidWebhook(f"MediaUrl{index}", f"field 'MediaUrl{index}' is required")
        items.append(MediaItem(url=url, content_type=form.get(f"MediaContentType{index}") or None))
    return tuple(items)


def _int_field(form: Mapping, name: str, default: int) -> int:
    text = (form.get(name) or "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise InvalidWebhook(name, f"field '{name}' must be a whole number") from None
