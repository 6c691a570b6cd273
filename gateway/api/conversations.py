"""Conversations and their messages, as the signed-in user may see them."""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request

from gateway.api.errors import bad_request, not_found
from gateway.api.serializers import conversation_json, message_json
from gateway.inbox import (
    ConversationFilters,
    get_visible_conversation,
    list_conversations,
    list_messages,
)
from gateway.pagination import CursorError, parse_limit
from gateway.phone import NumberError, normalize_number

bp = Blueprint("conversations", __name__, url_prefix="/api/v1")


def _sessions():
    return current_app.extensions["gateway"].sessions


@bp.get("/conversations")
def index():
    settings = current_app.extensions["gateway"].settings
    business_number = request.args.get("business_number")
    try:
        if business_number:
            business_number = normalize_number(business_number, settings.default_region).value
        filters = ConversationFilters(
            status=request.args.get("status", "all"),
            folder_match=request.args.get("folder_match") or None,
            business_number=business_number,
        )
        limit = parse_limit(request.args.get("limit"))
        with _sessions()() as session:
            rows, next_cursor = list_conversations(session, g.user, filters, request.args.get("cursor"), limit)
            data = [conversation_json(c) for c in rows]
    except (CursorError, NumberError) as exc:
        raise bad_request(str(exc)) from None
    return jsonify(data=data, next_cursor=next_cursor)


@bp.get("/conversations/<int:conversation_id>")
def show(conversation_id: int):
    with _sessions()() as session:
        conversation = get_visible_conversation(session, g.user, conversation_id)
        if conversation is None:
            raise not_found("conversation")
        return jsonify(conversation_json(conversation))


@bp.get("/conversations/<int:conversation_id>/messages")
def messages(conversation_id: int):
    try:
        limit = parse_limit(request.args.get("limit"))
        with _sessions()() as session:
            conversation = get_visible_conversation(session, g.user, conversation_id)
            if conversation is None:
                raise not_found("conversation")
            rows, next_cursor = list_messages(session, conversation, request.args.get("before"), limit)
            data = [message_json(m) for m in rows]
    except CursorError as exc:
        raise bad_request(str(exc)) from None
    return jsonify(data=data, next_cursor=next_cursor)

