"""Admin views of what the gateway received but could not route."""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request

from gateway.api.errors import ApiError, bad_request
from gateway.api.serializers import unroutable_json
from gateway.inbox import list_unroutable_events
from gateway.models import Role
from gateway.pagination import CursorError, parse_limit

bp = Blueprint("events", __name__, url_prefix="/api/v1")


@bp.get("/unroutable")
def unroutable():
    if g.user.role != Role.admin:
        raise ApiError(403, "forbidden", "only admins can see unroutable messages")
    try:
        limit = parse_limit(request.args.get("limit"))
        with current_app.extensions["gateway"].sessions() as session:
            rows, next_cursor = list_unroutable_events(session, request.args.get("cursor"), limit)
            data = [unroutable_json(e) for e in rows]
    except CursorError as exc:
        raise bad_request(str(exc)) from None
    return jsonify(data=data, next_cursor=next_cursor)
