"""Conversations and their messages, as the signed-in user may see them."""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request

from gateway import conversation_actions as actions
from gateway.api.errors import ApiError, bad_request, not_found
from gateway.api.serializers import conversation_json, message_json
from gateway.conversation_actions import ActionRefused, Actor
from gateway.db import transaction
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
            cursor = request.args.get("cursor")
            rows, next_cursor = list_conversations(session, g.user, filters, cursor, limit)
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



def _act(action, conversation_id: int, *args):
    """Run a conversation action in one transaction and answer with the conversation."""
    try:
        with transaction(_sessions()) as session:
            conversation = action(session, Actor(g.user), conversation_id, *args)
            return jsonify(conversation_json(conversation))
    except ActionRefused as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None


@bp.post("/conversations/<int:conversation_id>/claim")
def claim(conversation_id: int):
    return _act(actions.claim, conversation_id)


@bp.post("/conversations/<int:conversation_id>/assign")
def assign(conversation_id: int):
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or "assignee_id" not in body:
        raise ApiError(422, "invalid_body", 'expected {"assignee_id": <user id or null>}')
    assignee_id = body["assignee_id"]
    if assignee_id is not None and (not isinstance(assignee_id, int) or isinstance(assignee_id, bool)):
        raise ApiError(422, "invalid_body", "assignee_id must be a user id or null")
    return _act(actions.assign, conversation_id, assignee_id)


@bp.post("/conversations/<int:conversation_id>/close")
def close(conversation_id: int):
    return _act(actions.close, conversation_id)


@bp.post("/conversations/<int:conversation_id>/read")
def read(conversation_id: int):
    return _act(actions.mark_read, conversation_id, False)


@bp.post("/conversations/<int:conversation_id>/unread")
def unread(conversation_id: int):
    return _act(actions.mark_read, conversation_id, True)
