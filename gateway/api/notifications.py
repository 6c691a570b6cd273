"""The signed-in user's notifications, badges, live stream and preferences."""

from __future__ import annotations

import logging
import re

import redis
from flask import Blueprint, Response, current_app, g, jsonify, request

from gateway.accounts import token_is_live
from gateway.api.auth import STREAM_PATH
from gateway.api.errors import ApiError, bad_request, not_found
from gateway.api.serializers import iso
from gateway.db import transaction
from gateway.live import HEARTBEAT_S, NotificationStream, shared_client
from gateway.models import Notification, User
from gateway.notifications import badges, latest_notification_id, list_notifications, mark_read
from gateway.pagination import CursorError, parse_limit
from gateway.stream_tickets import TICKET_TTL_S, issue_ticket

log = logging.getLogger(__name__)

bp = Blueprint("notifications", __name__, url_prefix="/api/v1")

ME_FIELDS = {"subscribe_all": bool}


def _runtime():
    return current_app.extensions["gateway"]


def notification_json(notification: Notification) -> dict:
    return {
        "id": notification.id,
        "kind": notification.kind,
        "conversation_id": notification.conversation_id,
        "message_id": notification.message_id,
        "created_at": iso(notification.created_at),
        "read_at": iso(notification.read_at),
    }


def me_json(user: User) -> dict:
    return {"id": user.id, "name": user.name, "role": str(user.role), "teams": user.team_names,
            "subscribe_all": user.subscribe_all}


@bp.get("/notifications")
def index():
    try:
        limit = parse_limit(request.args.get("limit"))
        with _runtime().sessions() as session:
            rows, next_cursor = list_notifications(session, g.user.id, request.args.get("cursor"), limit)
            data = [notification_json(n) for n in rows]
    except CursorError as exc:
        raise bad_request(str(exc)) from None
    return jsonify(data=data, next_cursor=next_cursor)


@bp.post("/notifications/<int:notification_id>/read")
def read_one(notification_id: int):
    with transaction(_runtime().sessions) as session:
        notification = session.get(Notification, notification_id)
        if notification is None or notification.user_id != g.user.id:
            raise not_found("notification")
        mark_read(session, g.user.id, notification_id)
        session.refresh(notification)
        return jsonify(notification_json(notification))


@bp.post("/notifications/read-all")
def read_all():
    with transaction(_runtime().sessions) as session:
        count = mark_read(session, g.user.id)
    return jsonify(marked_read=count)


@bp.post("/notifications/stream-tickets")
def create_stream_ticket():
    """A ticket that opens the caller's stream from a browser's EventSource, which cannot
    send the token (gateway/stream_tickets.py): `.../stream?ticket=<ticket>`."""
    try:
        ticket = issue_ticket(shared_client(_runtime().redis_url), g.token_hash)
    except redis.RedisError:
        log.warning("stream ticket not issued: Redis unreachable", exc_info=True)
        raise ApiError(503, "unavailable", "stream tickets are unavailable right now; retry") from None
    return jsonify(ticket=ticket, expires_in=TICKET_TTL_S,
                   stream_url=f"{STREAM_PATH}?ticket={ticket}"), 201


@bp.get("/notifications/stream")
def stream():
    """Server-Sent Events of the caller's new notifications; `Last-Event-ID` resumes."""
    runtime = _runtime()
    last_event_id = request.headers.get("Last-Event-ID", "").strip()
    if last_event_id and not re.fullmatch(r"[0-9]{1,18}", last_event_id):
        raise bad_request("Last-Event-ID must be the id of a notification this stream sent")
    with runtime.sessions() as session:
        after_id = int(last_event_id) if last_event_id else latest_notification_id(session, g.user.id)
    token_hash = g.token_hash

    def token_still_live() -> bool:
        with runtime.sessions() as session:
            return token_is_live(session, token_hash)

    live = NotificationStream(runtime.sessions, runtime.redis_url, g.user.id, after_id, notification_json,
                              heartbeat_s=current_app.config.get("SSE_HEARTBEAT_S", HEARTBEAT_S),
                              still_allowed=token_still_live)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering
    response = Response(live.events(), mimetype="text/event-stream", headers=headers)
    # A client gone before the first byte never starts the generator: close here too.
    response.call_on_close(live.close)
    return response


@bp.get("/badges")
def show_badges():
    with _runtime().sessions() as session:
        user = session.get(User, g.user.id)
        return jsonify(badges(session, user))


@bp.get("/me")
def show_me():
    with _runtime().sessions() as session:
        return jsonify(me_json(session.get(User, g.user.id)))


@bp.patch("/me")
def update_me():
    changes = _validated_me_changes(request.get_json(silent=True))
    with transaction(_runtime().sessions) as session:
        user = session.get(User, g.user.id)
        for field, value in changes.items():
            setattr(user, field, value)
        session.flush()
        return jsonify(me_json(user))


def _validated_me_changes(body) -> dict:
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_body", "send a JSON object, e.g. {\"subscribe_all\": true}")
    unknown = sorted(set(body) - set(ME_FIELDS))
    if unknown:
        raise ApiError(422, "invalid_field", f"field {unknown[0]!r} cannot be changed here")
    for field, kind in ME_FIELDS.items():
        if field in body and type(body[field]) is not kind:
            raise ApiError(422, "invalid_field", f"field {field!r} must be true or false")
    return body
