"""Twilio's webhooks: inbound SMS/MMS at /webhooks/twilio/sms, delivery statuses at /status."""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy.exc import InterfaceError, OperationalError

from gateway.carriers import twilio
from gateway.delivery import record_status
from gateway.group_commit import committer_for
from gateway.inbound import event_values
from gateway.messaging import InvalidWebhook
from gateway.metrics import WEBHOOK_ACK_SECONDS, WEBHOOKS
from gateway.phone import NumberError, normalize_number

log = logging.getLogger(__name__)

bp = Blueprint("twilio_webhooks", __name__, url_prefix="/webhooks/twilio")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


class Rejected(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@bp.errorhandler(Rejected)
def _rejected(exc: Rejected):
    WEBHOOKS.labels("twilio", _endpoint(), exc.code).inc()
    log.info("twilio webhook rejected", extra={"reason": exc.code, "path": request.path,
                                               "message_sid": request.form.get("MessageSid")})
    return jsonify(error={"code": exc.code, "message": exc.message}), exc.status


@bp.errorhandler(OperationalError)
@bp.errorhandler(InterfaceError)
def _database_unavailable(exc):
    """Still unreachable after the webhook's hold (gateway/inbound.py): nothing is stored,
    and a 503 tells the carrier to try again; the repeat is stored once."""
    WEBHOOKS.labels("twilio", _endpoint(), "database_unavailable").inc()
    log.error("twilio webhook not stored: database unavailable", exc_info=exc,
              extra={"path": request.path, "message_sid": request.form.get("MessageSid")})
    return jsonify(error={"code": "database_unavailable", "message": "database unavailable; retry"}), 503


def _endpoint() -> str:
    """`sms` or `status`: the same label the stored outcomes use."""
    return request.path.rstrip("/").rsplit("/", 1)[-1]


@bp.post("/sms")
def receive_sms():
    started = time.perf_counter()
    runtime = current_app.extensions["gateway"]
    settings = runtime.settings
    form = request.form  # read through Flask's request proxy once: it is on every webhook's path
    carrier = _verified_carrier(settings, form)
    try:
        message = twilio.parse_inbound(form)
        sender = normalize_number(message.from_number, settings.default_region)
        recipient = normalize_number(message.to_number, settings.default_region)
    except InvalidWebhook as exc:
        raise Rejected(400, f"missing_{exc.field}", str(exc)) from None
    except NumberError as exc:
        raise Rejected(400, "invalid_number", str(exc)) from None
    routable = settings.business_number(recipient.value) is not None
    # Committed (and handed to the workers) with the other requests of the moment: one
    # INSERT and one COMMIT for all of them, before any is answered (gateway/group_commit.py).
    committer = committer_for(current_app.extensions, runtime)
    stored = committer.store(event_values(carrier.name, message, sender, recipient, routable))
    outcome = "duplicate" if not stored.is_new else ("stored" if routable else "unroutable")
    WEBHOOKS.labels("twilio", "sms", outcome).inc()
    WEBHOOK_ACK_SECONDS.labels("twilio", "sms").observe(time.perf_counter() - started)
    return Response(EMPTY_TWIML, status=200, mimetype="text/xml")


@bp.post("/status")
def receive_status():
    """A delivery status callback: stored (and applied, forward only) before the 200."""
    started = time.perf_counter()
    runtime = current_app.extensions["gateway"]
    form = request.form
    carrier = _verified_carrier(runtime.settings, form)
    try:
        update = twilio.parse_status(form)
    except InvalidWebhook as exc:
        raise Rejected(400, f"missing_{exc.field}", str(exc)) from None
    event = record_status(runtime.sessions, carrier.name, update)
    outcome = "unknown_status" if update.status == "unknown" else (
        "applied" if event.applied else ("unknown_message" if event.message_id is None else "stale"))
    WEBHOOKS.labels("twilio", "status", outcome).inc()
    WEBHOOK_ACK_SECONDS.labels("twilio", "status").observe(time.perf_counter() - started)
    return Response(EMPTY_TWIML, status=200, mimetype="text/xml")


def _verified_carrier(settings, form):
    """The configured Twilio account that signed this request, or a 403."""
    signature = request.headers.get(twilio.SIGNATURE_HEADER)
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
    url = signed_url(settings.public_url)
    for carrier in candidates:
        if twilio.verify(url, form, signature, carrier.auth_token.get_secret_value()):
            return carrier
    raise Rejected(403, "invalid_signature", "invalid request signature")


def signed_url(public_url: str) -> str:
    """The URL Twilio signed: our public base plus the path and query it called.

    Never the Host header: behind a proxy that is the proxy's idea of us, not Twilio's.
    """
    query = request.query_string.decode("latin-1")
    return public_url + request.path + (f"?{query}" if query else "")
