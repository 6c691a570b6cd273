"""Twilio's webhooks: inbound SMS/MMS at /webhooks/twilio/sms, delivery statuses at /status.

Each is one function from what was posted to its `Answer`: `accept_sms`, `accept_status`.
Twilio's own requests (form-encoded POSTs) reach them through the direct door
(gateway/webhooks/direct.py); anything else on these paths (another encoding, a body
over the limit, another method) goes through Flask, whose views call the same functions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from flask import Blueprint, Response, current_app, request
from sqlalchemy.exc import InterfaceError, OperationalError

from gateway.carriers import twilio
from gateway.delivery import record_status
from gateway.group_commit import committer_for
from gateway.inbound import event_values
from gateway.messaging import InvalidWebhook
from gateway.metrics import webhook_ack_seconds, webhook_outcome
from gateway.phone import NumberError, normalize_number
from gateway.webhooks.direct import Answer, error_answer

log = logging.getLogger(__name__)

bp = Blueprint("twilio_webhooks", __name__, url_prefix="/webhooks/twilio")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


class Rejected(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


TWIML_ANSWER = Answer(200, EMPTY_TWIML.encode(), "text/xml; charset=utf-8")


def accept_sms(app, form: Mapping, headers: Mapping, path: str, query: str) -> Answer:
    """An inbound SMS/MMS: verified, parsed, committed (with the other requests of the
    moment, gateway/group_commit.py), then answered with empty TwiML."""
    started = time.perf_counter()
    runtime = app.extensions["gateway"]
    settings = runtime.settings
    try:
        carrier = _verified_carrier(settings, form, headers, signed_url(settings.public_url, path, query))
        try:
            message = twilio.parse_inbound(form)
            sender = normalize_number(message.from_number, settings.default_region)
            recipient = normalize_number(message.to_number, settings.default_region)
        except InvalidWebhook as exc:
            raise Rejected(400, f"missing_{exc.field}", str(exc)) from None
        except NumberError as exc:
            raise Rejected(400, "invalid_number", str(exc)) from None
        routable = settings.business_number(recipient.value) is not None
        committer = committer_for(app.extensions, runtime)
        stored = committer.store(event_values(carrier.name, message, sender, recipient, routable))
    except Rejected as exc:
        return _rejected(exc, path, form)
    except (OperationalError, InterfaceError) as exc:
        return _database_unavailable(exc, path, form)
    outcome = "duplicate" if not stored.is_new else ("stored" if routable else "unroutable")
    webhook_outcome("twilio", "sms", outcome).inc()
    webhook_ack_seconds("twilio", "sms").observe(time.perf_counter() - started)
    return TWIML_ANSWER


def accept_status(app, form: Mapping, headers: Mapping, path: str, query: str) -> Answer:
    """A delivery status callback: stored (and applied, forward only) before the 200."""
    started = time.perf_counter()
    runtime = app.extensions["gateway"]
    try:
        carrier = _verified_carrier(runtime.settings, form, headers,
                                    signed_url(runtime.settings.public_url, path, query))
        try:
            update = twilio.parse_status(form)
        except InvalidWebhook as exc:
            raise Rejected(400, f"missing_{exc.field}", str(exc)) from None
        event = record_status(runtime.sessions, carrier.name, update)
    except Rejected as exc:
        return _rejected(exc, path, form)
    except (OperationalError, InterfaceError) as exc:
        return _database_unavailable(exc, path, form)
    outcome = "unknown_status" if update.status == "unknown" else (
        "applied" if event.applied else ("unknown_message" if event.message_id is None else "stale"))
    webhook_outcome("twilio", "status", outcome).inc()
    webhook_ack_seconds("twilio", "status").observe(time.perf_counter() - started)
    return TWIML_ANSWER


# The webhooks the direct door answers (gateway/webhooks/direct.py), by path.
DIRECT_ROUTES = {f"{bp.url_prefix}/sms": accept_sms, f"{bp.url_prefix}/status": accept_status}


@bp.post("/sms")
def receive_sms():
    """The Flask door: what the direct one leaves (another encoding, say); the same answers."""
    return _flask_response(accept_sms(current_app, request.form, request.headers, request.path,
                                      request.query_string.decode("latin-1")))


@bp.post("/status")
def receive_status():
    return _flask_response(accept_status(current_app, request.form, request.headers, request.path,
                                         request.query_string.decode("latin-1")))


def _flask_response(answer: Answer) -> Response:
    return Response(answer.body, status=answer.status, content_type=answer.content_type)


def _rejected(exc: Rejected, path: str, form: Mapping) -> Answer:
    webhook_outcome("twilio", _endpoint(path), exc.code).inc()
    log.info("twilio webhook rejected", extra={"reason": exc.code, "path": path,
                                               "message_sid": form.get("MessageSid")})
    return error_answer(exc.status, exc.code, exc.message)


def _database_unavailable(exc: Exception, path: str, form: Mapping) -> Answer:
    """Still unreachable after the webhook's hold (gateway/inbound.py): nothing is stored,
    and a 503 tells the carrier to try again; the repeat is stored once."""
    webhook_outcome("twilio", _endpoint(path), "database_unavailable").inc()
    log.error("twilio webhook not stored: database unavailable", exc_info=exc,
              extra={"path": path, "message_sid": form.get("MessageSid")})
    return error_answer(503, "database_unavailable", "database unavailable; retry")


def _endpoint(path: str) -> str:
    """`sms` or `status`: the same label the stored outcomes use."""
    return path.rstrip("/").rsplit("/", 1)[-1]


def _verified_carrier(settings, form: Mapping, headers: Mapping, url: str):
    """The configured Twilio account that signed this request, or a 403."""
    signature = headers.get(twilio.SIGNATURE_HEADER)
    if not signature:
        raise Rejected(403, "missing_signature", f"missing {twilio.SIGNATURE_HEADER} header")
    account_sid = (form.get("AccountSid") or "").strip()
    if account_sid:
        carrier = settings.carrier_for_account(twilio.KIND, account_sid)
        if carrier is None:
            raise Rejected(403, "unknown_account", f"AccountSid {account_sid} is not a configured carrier")
        candidates = [carrier]
    else:
        # No AccountSid to choose the token by: the signature of any of our Twilio
        # accounts will do, and parsing then rejects the body for the missing field.
        candidates = [c for c in settings.config.carriers if c.kind == twilio.KIND]
    for carrier in candidates:
        if twilio.verify(url, form, signature, carrier.auth_token.get_secret_value()):
            return carrier
    raise Rejected(403, "invalid_signature", "invalid request signature")


def signed_url(public_url: str, path: str, query: str) -> str:
    """The URL Twilio signed: our public base plus the path and query it called.

    Never the Host header: behind a proxy that is the proxy's idea of us, not Twilio's.
    """
    return public_url + path + (f"?{query}" if query else "")
