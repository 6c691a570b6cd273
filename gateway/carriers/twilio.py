"""Twilio: webhook signatures, inbound SMS/MMS bodies, status callbacks and sending.

A real inbound body, as Twilio posts it (form-encoded; NumMedia=2 for an MMS)::

    ToCountry=US&SmsMessageSid=SMe287d7...&NumMedia=2&SmsSid=SMe287d7...&Body=Msg
    &To=%2B12028831111&MessageSid=SMe287d7...&AccountSid=AC...&From=%2B14133881111
    &MediaUrl0=https%3A%2F%2Fapi.twilio.com%2F...%2FMedia%2FME...&MediaContentType0=image%2Fjpeg
    &MessagingServiceSid=MG...&NumSegments=1&ApiVersion=2010-04-01

A status callback::

    MessageSid=SM0b6e...&MessageStatus=delivered&ErrorCode=30003&AccountSid=AC...

Signatures are Twilio's scheme (HMAC-SHA1 of the URL Twilio called plus the sorted
form fields, keyed with the account's auth token). `verify` accepts exactly what twilio's
own `RequestValidator.validate` accepts (tested against it), computing the second
signature only when the first does not match; `sign` is twilio's own.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hmac
import logging
import threading
from collections.abc import Mapping
from urllib.parse import urlparse

import requests
from requests.adapters import HTTPAdapter
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator, add_port, compare, remove_port
from twilio.rest import Client

from gateway.carriers.errors import SendError
from gateway.messaging import (
    InboundMessage,
    InvalidWebhook,
    MediaItem,
    OutboundMessage,
    SendResult,
    StatusUpdate,
)

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
    """True when `signature` is Twilio's signature of `url` and `form` with this token.

    Exactly what twilio's `RequestValidator.validate` accepts (tests/carriers/
    test_twilio_signature.py holds it to the library on the filed bodies, URLs with and
    without ports, wrong and altered signatures), for less CPU on the webhook's path
    (issue 6). `validate` parses the URL and computes both signatures it tries (the URL
    without its port, and with the scheme's default port) on every call, building each
    one's text field by field in Python. Here the two URLs come from twilio's own
    `remove_port`/`add_port` once per URL; the fields' text is built once for both, in
    twilio's order (names sorted, each name's distinct values sorted, concatenated after
    the URL); the HMAC-SHA1 is the one-shot `hmac.digest`; twilio's `compare` compares;
    and the second signature is computed only when the first does not match. A body
    Twilio signed over the URL as we know it (no explicit port) costs one HMAC, not two.
    A string body (twilio's JSON-body scheme) goes to `validate` itself.
    """
    if not signature:
        return False
    if form is None or isinstance(form, str):
        return RequestValidator(auth_token).validate(url, form, signature)
    key = auth_token.encode("utf-8")
    fields = _signed_fields(form)
    return any(compare(_hmac_sha1(key, candidate + fields), signature) for candidate in _signed_urls(url))


@functools.lru_cache(maxsize=256)
def _signed_urls(url: str) -> tuple[str, str]:
    """The URLs twilio's `validate` tries for `url`, in its order: without port, with it."""
    parsed = urlparse(url)
    return remove_port(parsed), add_port(parsed)


def _signed_fields(form: Mapping) -> str:
    """The text twilio's `compute_signature` appends to the URL: every field's name and
    value, names sorted, each name's distinct values sorted. Values are read as twilio's
    `get_values` reads them: `getall`, else `getlist` (werkzeug's MultiDict), else the one value."""
    if hasattr(form, "getall"):
        values = form.getall
    elif hasattr(form, "getlist"):
        values = form.getlist
    else:
        def values(name):
            return [form[name]]
    return "".join([name + value for name in sorted(set(form)) for value in sorted(set(values(name)))])


def _hmac_sha1(key: bytes, text: str) -> str:
    return base64.b64encode(hmac.digest(key, text.encode("utf-8"), "sha1")).decode("ascii")


def sign(url: str, form: Mapping, auth_token: str) -> str:
    """The signature Twilio would send; used by `gateway simulate` and the tests."""
    return RequestValidator(auth_token).compute_signature(url, form)


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


# --- sending ---------------------------------------------------------------------------

TWILIO_API_BASE = "https://api.twilio.com"
DEFAULT_CONNECT_TIMEOUT_S = 3.0
DEFAULT_READ_TIMEOUT_S = 10.0
# Connections kept per carrier account and process: at least the carrier calls a worker
# process makes at once (gateway/number_sender.py, CARRIER_CALLS). twilio's own client
# keeps 32 at most, and under a batch of 64 calls urllib3 discarded half its connections
# after every call, each next call paying a new TCP (and TLS) handshake.
HTTP_POOL_SIZE = 200

# twilio's client logs every request at INFO; keep it to warnings.
_quiet_logger = logging.getLogger("gateway.carriers.twilio.http")
_quiet_logger.setLevel(logging.WARNING)


class ApiBaseHttpClient(TwilioHttpClient):
    """twilio's own HTTP client, pointed at `api_base` (a stand-in in tests) with
    explicit (connect, read) timeouts: a hung carrier must never hang a worker."""

    def __init__(self, api_base: str | None, connect_timeout: float, read_timeout: float):
        api_base = (api_base or TWILIO_API_BASE).rstrip("/")
        # Proxy variables (HTTPS_PROXY, NO_PROXY) are read once here rather than on every
        # request: requests walks the whole environment per call, ~2 ms of CPU a send.
        super().__init__(logger=_quiet_logger, proxy=requests.utils.get_environ_proxies(api_base))
        self.session.trust_env = False
        for scheme in ("https://", "http://"):   # http: a local stand-in
            self.session.mount(scheme, HTTPAdapter(pool_maxsize=HTTP_POOL_SIZE))
        self.api_base = api_base
        self.timeouts = (connect_timeout, read_timeout)

    def request(self, method, url, params=None, data=None, headers=None, auth=None,
                timeout=None, allow_redirects=False):
        if url.startswith(TWILIO_API_BASE):
            url = self.api_base + url[len(TWILIO_API_BASE):]
        self.timeout = self.timeouts  # requests takes the pair; twilio passes it through
        return super().request(method, url, params=params, data=data, headers=headers, auth=auth,
                               timeout=None, allow_redirects=allow_redirects)


_clients: dict[tuple, Client] = {}
_clients_lock = threading.Lock()


def rest_client(carrier) -> Client:
    """One client (and connection pool) per carrier account and process."""
    timeout = getattr(carrier, "send_timeout_seconds", None) or DEFAULT_READ_TIMEOUT_S
    token = carrier.auth_token.get_secret_value()
    key = (carrier.account_sid, token, carrier.api_base, timeout)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            http = ApiBaseHttpClient(carrier.api_base, DEFAULT_CONNECT_TIMEOUT_S, timeout)
            client = Client(carrier.account_sid, token, http_client=http)
            _clients[key] = client
        return client


def warm(carrier) -> None:
    """Build the client and import its Messages API now: twilio loads it on first use,
    a few hundred ms that must not fall between the rate gate and the request."""
    rest_client(carrier).messages  # noqa: B018 - the property import is the point


def send(message: OutboundMessage, carrier) -> SendResult:
    """Create the message at Twilio; raises SendError saying whether a retry is safe."""
    params = {"to": message.to_number, "from_": message.from_number, "body": message.body}
    if message.media_urls:
        params["media_url"] = list(message.media_urls)
    if message.status_callback:
        params["status_callback"] = message.status_callback
    with _send_errors():
        created = rest_client(carrier).messages.create(**params)
    return _result(created)


def lookup(carrier_message_id: str, carrier) -> SendResult | None:
    """The message as Twilio has it now, or None when Twilio does not know the SID."""
    try:
        with _send_errors():
            return _result(rest_client(carrier).messages(carrier_message_id).fetch())
    except SendError as exc:
        if exc.code == ERROR_NOT_FOUND:
            return None
        raise


def find_sent(message: OutboundMessage, since: dt.datetime, carrier, taken=frozenset()) -> SendResult | None:
    """A message Twilio took for `message` since `since`, when our answer was lost.

    Twilio has no client reference on a message, so the match is the same sender,
    recipient and exact body created after the attempt began, and not one of the SIDs in
    `taken` (those the gateway already holds for other texts: an identical text sent just
    before is not this one).
    """
    with _send_errors():
        found = rest_client(carrier).messages.list(
            to=message.to_number, from_=message.from_number,
            date_sent_after=since - dt.timedelta(seconds=1), limit=50,
        )
    for candidate in found:
        if (candidate.body or "") == message.body and candidate.sid not in taken:
            return _result(candidate)
    return None


ERROR_NOT_FOUND = "20404"


def _result(resource) -> SendResult:
    carrier_status = (resource.status or "").lower()
    return SendResult(
        carrier_message_id=resource.sid,
        status=STATUS_MAP.get(carrier_status, "unknown"),
        carrier_status=carrier_status,
        error_code=str(resource.error_code) if resource.error_code else None,
        error_message=resource.error_message,
    )


class _send_errors:
    """Turns what the twilio client raises into SendError (see gateway/carriers/errors.py)."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, SendError):
            return False
        if isinstance(exc, TwilioRestException):
            code = str(exc.code) if exc.code else None
            text = _rest_error_text(exc)
            if code == ERROR_OPTED_OUT:
                raise SendError(False, code, text, opted_out=True) from exc
            retryable = exc.status == 429 or exc.status >= 500
            raise SendError(retryable, code or str(exc.status), text) from exc
        if isinstance(exc, requests.exceptions.ConnectTimeout) or _never_connected(exc):
            raise SendError(True, None, f"could not connect to Twilio: {type(exc).__name__}") from exc
        if isinstance(exc, requests.RequestException):
            # The request may have gone out; only a lookup can tell.
            raise SendError(False, None, f"no answer from Twilio: {type(exc).__name__}",
                            unknown_outcome=True) from exc
        return False


def _never_connected(exc: BaseException) -> bool:
    """A refused or unresolvable connection: nothing was sent."""
    from urllib3.exceptions import NameResolutionError, NewConnectionError

    if not isinstance(exc, requests.exceptions.ConnectionError):
        return False
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)
    return isinstance(reason, NewConnectionError | NameResolutionError)


def _rest_error_text(exc: TwilioRestException) -> str:
    # TwilioRestException's str() is a multi-line, coloured report; keep Twilio's message.
    return (exc.msg or f"HTTP {exc.status}").strip()


# --- media -----------------------------------------------------------------------------

# Where Twilio serves MMS media. A MediaUrl is on the API host, which answers it with a
# redirect to the media CDN: mms.twiliocdn.com when HTTP auth is enforced on media,
# s3-external-1.amazonaws.com for older public media (Twilio support article 223183748,
# "Protect Media Access with HTTP Basic Authentication for Programmable Messaging").
MEDIA_HOSTS = ("api.twilio.com", "*.twiliocdn.com", "s3-external-1.amazonaws.com")


def media_access(carrier):
    """How to fetch this account's media: HTTP Basic with the account SID and auth token,
    sent to the API host only; the CDN it redirects to gets no credentials."""
    from gateway.media import MediaAccess

    return MediaAccess(
        api_base=(carrier.api_base or TWILIO_API_BASE).rstrip("/"),
        username=carrier.account_sid,
        password=carrier.auth_token.get_secret_value(),
        hosts=tuple(carrier.media_hosts or MEDIA_HOSTS),
    )


def delete_media(media_url: str, carrier, timeouts: tuple[float, float]) -> None:
    """Delete a stored media item at Twilio (DELETE on the Media resource, 204 expected).

    `media_url` must be on the account's API host: credentials never go anywhere else.
    Raises requests.HTTPError (or a connection error) when Twilio does not confirm.
    """
    access = media_access(carrier)
    if not access.is_api_url(media_url):
        raise ValueError(f"not a media URL on {access.api_base}: refusing to send credentials")
    resource_url = media_url if media_url.endswith(".json") else media_url + ".json"
    response = requests.delete(
        resource_url, auth=(access.username, access.password), timeout=timeouts, allow_redirects=False
    )
    if response.status_code not in (200, 204, 404):  # 404: already gone, which is what we want
        response.raise_for_status()
        raise requests.HTTPError(f"unexpected answer {response.status_code}", response=response)
