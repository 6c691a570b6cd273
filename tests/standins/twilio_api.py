"""A local stand-in for Twilio's Messages API (2010-04-01), for tests and benchmarks.

A real HTTP server on 127.0.0.1, faithful to `twilio_api_v2010.json` for the three calls
the gateway makes:

    POST /2010-04-01/Accounts/{AccountSid}/Messages.json        create (form-encoded)
    GET  /2010-04-01/Accounts/{AccountSid}/Messages.json        list (To, From, DateSent>, PageSize)
    GET  /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json  fetch

It checks HTTP Basic auth against the account SID and token (20003), answers Twilio's
error shape `{"code", "message", "more_info", "status"}` with Twilio's codes (21211,
21602, 21604, 21610, 20429, 20404), gives every message a unique `SM` + 32 hex SID and
records every accepted message, so tests assert exactly what the carrier received.

Knobs for tests: `fail_next(n, status)` answers the next n creates with 500 or 429,
`latency` delays every answer, `stall_next(n)` records the message and then holds the
answer past the client's timeout (an unknown outcome), `opt_out(number)` makes a
recipient answer 21610. `send_status(sid, status)` posts a status callback signed as
Twilio signs it, over the message's StatusCallback URL; `auto_callbacks` sends
queued/sent/delivered after each accepted message.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit, urlunsplit

import phonenumbers
import requests
from twilio.request_validator import RequestValidator

log = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
MAX_BODY = 1600
_MESSAGES = re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>[^/]+)/Messages\.json$")
_MESSAGE = re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>[^/]+)/Messages/(?P<sid>[^/]+)\.json$")


class TwilioError(Exception):
    def __init__(self, status: int, code: int, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


@dataclass
class Accepted:
    """One message the stand-in accepted: its resource and the raw form it came with."""

    sid: str
    form: dict[str, list[str]]
    received_at: float                    # time.time() when the create was accepted
    resource: dict = field(default_factory=dict)

    def field(self, name: str) -> str | None:
        values = self.form.get(name)
        return values[0] if values else None

    @property
    def media_urls(self) -> list[str]:
        return list(self.form.get("MediaUrl", []))


class TwilioStandIn:
    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        latency: float = 0.0,
        callback_target: str | Callable | None = None,
        auto_callbacks: bool = False,
    ):
        self.account_sid, self.auth_token = account_sid, auth_token
        self.latency = latency
        self.callback_target = callback_target
        self.auto_callbacks = auto_callbacks
        self.stall_seconds = 5.0
        self.accepted: list[Accepted] = []
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status answered)
        self.opted_out: set[str] = set()
        self.callbacks_sent: list[dict] = []
        self._failures: list[tuple[int, int | None, str]] = []
        self._stalls = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> TwilioStandIn:
        handler = type("Handler", (_Handler,), {"standin": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="twilio-standin", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> TwilioStandIn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The `api_base` to configure the carrier with."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- knobs -------------------------------------------------------------------------

    def fail_next(self, count: int, status: int = 500, code: int | None = None, message: str = "") -> None:
        """The next `count` creates are answered `status` (500, 429, or a 400 with a
        Twilio `code` such as 21211 or 21614) and not accepted."""
        with self._lock:
            self._failures.extend([(status, code, message)] * count)

    def stall_next(self, count: int = 1) -> None:
        """The next `count` creates are accepted, then answered only after `stall_seconds`."""
        with self._lock:
            self._stalls += count

    def opt_out(self, number: str) -> None:
        self.opted_out.add(number)

    def message(self, sid: str) -> Accepted:
        with self._lock:
            return next(m for m in self.accepted if m.sid == sid)

    def send_status(self, sid: str, status: str, error_code: str | None = None):
        """Post a status callback for `sid`, signed over its StatusCallback URL."""
        message = self.message(sid)
        url = message.field("StatusCallback")
        if not url:
            raise ValueError(f"message {sid} was created without a StatusCallback")
        form = {
            "AccountSid": self.account_sid, "MessageSid": sid, "SmsSid": sid, "SmsStatus": status,
            "MessageStatus": status, "From": message.resource["from"], "To": message.resource["to"],
            "ApiVersion": API_VERSION,
        }
        if error_code:
            form["ErrorCode"] = error_code
        with self._lock:
            message.resource["status"] = status
            self.callbacks_sent.append(form)
        signature = RequestValidator(self.auth_token).compute_signature(url, form)
        headers = {"X-Twilio-Signature": signature}
        if callable(self.callback_target):
            return self.callback_target(url, form, headers)
        target = url
        if self.callback_target:
            base = urlsplit(self.callback_target)
            parts = urlsplit(url)
            target = urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))
        return requests.post(target, data=form, headers=headers, timeout=10)

    # --- the API -----------------------------------------------------------------------

    def handle(self, method: str, path: str, query: str, form: dict, auth: str | None) -> tuple[int, dict]:
        arrived = time.time()  # rate limits are judged on arrival, before the answer's latency
        if self.latency:
            time.sleep(self.latency)
        try:
            self._check_auth(auth, path)
            if method == "POST" and (match := _MESSAGES.match(path)):
                return 201, self._create(form, arrived)
            if method == "GET" and (match := _MESSAGES.match(path)):
                return 200, self._list(parse_qs(query), match["account"])
            if method == "GET" and (match := _MESSAGE.match(path)):
                return 200, self._fetch(match["sid"])
            raise TwilioError(404, 20404, f"The requested resource {path} was not found")
        except TwilioError as exc:
            return exc.status, exc.body()

    def _check_auth(self, auth: str | None, path: str) -> None:
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        account_in_path = path.split("/")[3] if path.count("/") >= 3 else ""
        if auth != expected or account_in_path != self.account_sid:
            raise TwilioError(401, 20003, "Authenticate")

    def _create(self, form: dict[str, list[str]], arrived: float) -> dict:
        def one(name):
            values = form.get(name)
            return values[0] if values else None

        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            status, code, message = failure
            if status == 429:
                raise TwilioError(429, code or 20429, message or "Too Many Requests")
            raise TwilioError(status, code or 20500, message or "An internal server error has occurred")
        to, body, media = one("To"), one("Body") or "", form.get("MediaUrl", [])
        if not to:
            raise TwilioError(400, 21604, "A 'To' phone number is required.")
        if not (one("From") or one("MessagingServiceSid")):
            raise TwilioError(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required")
        if not _valid_phone(to):
            raise TwilioError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not body and not media:
            raise TwilioError(400, 21602, "Message body is required.")
        if len(body) > MAX_BODY:
            raise TwilioError(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        if to in self.opted_out:
            raise TwilioError(400, 21610, "Attempt to send to unsubscribed recipient")
        sid = "SM" + uuid.uuid4().hex
        resource = self._resource(sid, one("From"), to, body, len(media), one("MessagingServiceSid"))
        with self._lock:
            self.accepted.append(Accepted(sid, form, arrived, resource))
            stall = self._stalls > 0
            self._stalls -= 1 if stall else 0
        if stall:
            time.sleep(self.stall_seconds)
        if self.auto_callbacks and one("StatusCallback"):
            threading.Thread(target=self._progress, args=(sid,), daemon=True).start()
        return dict(resource)

    def _progress(self, sid: str) -> None:
        for status in ("queued", "sent", "delivered"):
            try:
                self.send_status(sid, status)
            except Exception:
                log.exception("stand-in status callback failed", extra={"sid": sid})
                return

    def _resource(self, sid, from_, to, body, num_media, service_sid) -> dict:
        now = email.utils.format_datetime(dt.datetime.now(dt.UTC), usegmt=True)
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}.json"
        return {
            "account_sid": self.account_sid, "api_version": API_VERSION, "body": body,
            "date_created": now, "date_sent": None, "date_updated": now, "direction": "outbound-api",
            "error_code": None, "error_message": None, "from": from_, "messaging_service_sid": service_sid,
            "num_media": str(num_media), "num_segments": "1", "price": None, "price_unit": "USD",
            "sid": sid, "status": "queued", "to": to, "uri": uri,
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
        }

    def _fetch(self, sid: str) -> dict:
        try:
            return dict(self.message(sid).resource)
        except StopIteration:
            raise TwilioError(404, 20404, f"The requested resource {sid} was not found") from None

    def _list(self, query: dict[str, list[str]], account: str) -> dict:
        def one(name):
            values = query.get(name)
            return values[0] if values else None

        with self._lock:
            rows = list(reversed(self.accepted))   # Twilio lists newest first
        to, from_, sent_after = one("To"), one("From"), one("DateSent>")
        if to:
            rows = [m for m in rows if m.resource["to"] == to]
        if from_:
            rows = [m for m in rows if m.resource["from"] == from_]
        if sent_after:
            floor = dt.datetime.fromisoformat(sent_after.replace("Z", "+00:00")).timestamp()
            rows = [m for m in rows if m.received_at >= floor]
        page_size = int(one("PageSize") or 50)
        uri = f"/{API_VERSION}/Accounts/{account}/Messages.json?PageSize={page_size}&Page=0"
        return {
            "messages": [dict(m.resource) for m in rows[:page_size]], "end": min(len(rows), page_size) - 1,
            "first_page_uri": uri, "next_page_uri": None, "page": 0, "page_size": page_size,
            "previous_page_uri": None, "start": 0, "uri": uri,
        }


def _valid_phone(number: str) -> bool:
    try:
        return phonenumbers.is_possible_number(phonenumbers.parse(number, None))
    except phonenumbers.NumberParseException:
        return False


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # a benchmark opens dozens of connections at once

    def handle_error(self, request, client_address):
        # A client that hangs up on a kept-alive connection (a stopped worker) is routine.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    standin: TwilioStandIn
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode() if length else ""
        form = parse_qs(raw, keep_blank_values=True)
        auth = self.headers.get("Authorization")
        status, body = self.standin.handle(method, parts.path, parts.query, form, auth)
        with self.standin._lock:
            self.standin.requests.append((method, parts.path, status))
        payload = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a stalled answer): that is the point

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
        pass
