"""Sending: replies, new conversations, notes, and the numbers a user may send from.

A send answers 202 with the queued message once it is committed; the `outbound` queue
sends it. Every refusal is a JSON error and leaves nothing behind.
"""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request

from gateway import number_sender, outbound
from gateway.api.errors import ApiError, bad_request
from gateway.api.serializers import message_json
from gateway.models import Message

bp = Blueprint("messages", __name__, url_prefix="/api/v1")

IDEMPOTENCY_HEADER = "Idempotency-Key"


def _runtime():
    return current_app.extensions["gateway"]


def _json_body() -> dict:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object")
    return data


def _idempotency(body: dict) -> outbound.Idempotency | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    return outbound.Idempotency.of(key, request.method, request.path, body)


def _refused(exc: outbound.SendRefused) -> ApiError:
    return ApiError(exc.status, exc.code, exc.message)


@bp.post("/conversations/<int:conversation_id>/messages")
def reply(conversation_id: int):
    data = _json_body()
    runtime = _runtime()
    try:
        created = outbound.reply(
            runtime.sessions, runtime.settings, g.user, conversation_id,
            data.get("body", ""), data.get("media_urls") or [], _idempotency(data),
        )
    except outbound.SendRefused as exc:
        raise _refused(exc) from None
    return _queued(created)


@bp.post("/messages")
def start():
    data = _json_body()
    for field in ("business_number", "to"):
        if not isinstance(data.get(field, ""), str):
            raise ApiError(422, f"invalid_{field}", f"'{field}' must be a phone number written as a string")
    runtime = _runtime()
    try:
        created = outbound.start(
            runtime.sessions, runtime.settings, g.user, data.get("business_number") or "",
            data.get("to") or "", data.get("body", ""), data.get("media_urls") or [],
            _idempotency(data),
        )
    except outbound.SendRefused as exc:
        raise _refused(exc) from None
    return _queued(created)


@bp.post("/conversations/<int:conversation_id>/notes")
def note(conversation_id: int):
    data = _json_body()
    try:
        created = outbound.add_note(
            _runtime().sessions, g.user, conversation_id, data.get("body", ""), _idempotency(data),
        )
    except outbound.SendRefused as exc:
        raise _refused(exc) from None
    return jsonify(_message(created.message_id)), 201


@bp.get("/business-numbers")
def business_numbers():
    numbers = outbound.sendable_numbers(_runtime().settings, g.user)
    return jsonify(data=[
        {"number": n.number, "name": n.name, "team": n.team, "appended_message": n.appended_message,
         "max_per_second": n.max_per_second}
        for n in numbers
    ])


def _queued(created: outbound.Created):
    runtime = _runtime()
    message = _message(created.message_id)
    if created.is_new:
        # Committed first: if the broker is down the sweeper wakes the number later.
        number_sender.wake(runtime, message["from"])
    return jsonify(message), 202


def _message(message_id: int) -> dict:
    with _runtime().sessions() as session:
        return outbound_message_json(session.get(Message, message_id))


def outbound_message_json(message: Message) -> dict:
    return message_json(message)
