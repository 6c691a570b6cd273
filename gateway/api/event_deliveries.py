"""Admins' view of the events pushed to other systems: what is failing, and why."""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request

from gateway.api.errors import ApiError, bad_request
from gateway.api.serializers import iso
from gateway.events import list_deliveries
from gateway.models import EventDelivery, Role
from gateway.pagination import CursorError, parse_limit

bp = Blueprint("event_deliveries", __name__, url_prefix="/api/v1/admin")


def delivery_json(delivery: EventDelivery) -> dict:
    return {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "type": delivery.type,
        "url": delivery.url,
        "attempts": delivery.attempts,
        "last_error": delivery.last_error,
        "next_attempt_at": None if delivery.delivered_at or delivery.abandoned_at
        else iso(delivery.next_attempt_at),
        "delivered_at": iso(delivery.delivered_at),
        "abandoned_at": iso(delivery.abandoned_at),
        "created_at": iso(delivery.created_at),
    }


@bp.get("/event-deliveries")
def index():
    if g.user.role != Role.admin:
        raise ApiError(403, "forbidden", "only admins can see event deliveries")
    try:
        limit = parse_limit(request.args.get("limit"))
        with current_app.extensions["gateway"].sessions() as session:
            rows, next_cursor = list_deliveries(
                session, request.args.get("status", "all"), request.args.get("cursor"), limit
            )
            data = [delivery_json(d) for d in rows]
    except CursorError as exc:
        raise bad_request(str(exc)) from None
    return jsonify(data=data, next_cursor=next_cursor)
