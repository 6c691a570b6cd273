"""GET /api/v1/openapi.json: the inbox API's OpenAPI 3.1 document.

Written by hand, next to the code, and kept honest by a test: every /api/v1 route the app
serves is in the document with the same methods, and nothing else is.
"""

from __future__ import annotations

from flask import Blueprint, jsonify

bp = Blueprint("openapi", __name__, url_prefix="/api/v1")


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _page(item: str) -> dict:
    return {
        "type": "object",
        "required": ["data", "next_cursor"],
        "properties": {
            "data": {"type": "array", "items": _ref(item)},
            "next_cursor": {"type": ["string", "null"]},
        },
    }


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    code: {"$ref": "#/components/responses/Error"} for code in ("400", "401", "403", "404", "409", "422")
}
_PAGING = [{"$ref": "#/components/parameters/limit"}, {"$ref": "#/components/parameters/cursor"}]
_ID = {"type": "integer"}
_STRING_OR_NULL = {"type": ["string", "null"]}

SCHEMAS = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "Contact": {
        "type": "object",
        "properties": {
            "id": _ID,
            "number": {"type": "string"},
            "name": _STRING_OR_NULL,
            "opted_out": {"type": "boolean"},
        },
    },
    "Conversation": {
        "type": "object",
        "required": [
            "id",
            "status",
            "business_number",
            "contact",
            "folder",
            "folder_match",
            "candidate_folder_ids",
            "assignee",
            "team",
            "unread",
            "last_message_at",
            "created_at",
        ],
        "properties": {
            "id": _ID,
            "status": {"enum": ["unassigned", "assigned", "closed"]},
            "business_number": {"type": "string", "description": "E.164"},
            "contact": _ref("Contact"),
            "folder": {
                "oneOf": [
                    {"type": "null"},
                    {"type": "object", "properties": {"id": _ID, "name": {"type": "string"}}},
                ]
            },
            "folder_match": {"enum": ["matched", "none", "ambiguous"]},
            "candidate_folder_ids": {"type": "array", "items": _ID},
            "assignee": {"type": ["integer", "null"]},
            "team": {"type": "string"},
            "unread": {"type": "boolean"},
            "last_message_at": {"type": "string", "format": "date-time"},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "Attachment": {
        "type": "object",
        "properties": {
            "id": _ID,
            "content_type": _STRING_OR_NULL,
            "size": {"type": ["integer", "null"]},
            "status": {"enum": ["pending", "stored", "failed"]},
            "url": {"type": "string"},
            "error": _STRING_OR_NULL,
        },
    },
    "Message": {
        "type": "object",
        "required": [
            "id",
            "conversation_id",
            "direction",
            "body",
            "from",
            "to",
            "status",
            "segments",
            "carrier_message_id",
            "attachments",
            "created_at",
        ],
        "properties": {
            "id": _ID,
            "conversation_id": _ID,
            "direction": {"enum": ["inbound", "outbound", "note"]},
            "body": {"type": "string"},
            "summary": {"type": "string"},
            "from": {"type": "string"},
            "to": {"type": "string"},
            "status": {"type": "string"},
            "segments": {"type": "integer"},
            "encoding": _STRING_OR_NULL,
            "carrier_message_id": _STRING_OR_NULL,
            "keyword": _STRING_OR_NULL,
            "error_code": _STRING_OR_NULL,
            "error_message": _STRING_OR_NULL,
            "attachments": {"type": "array", "items": _ref("Attachment")},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "Notification": {
        "type": "object",
        "properties": {
            "id": _ID,
            "kind": {"type": "string"},
            "conversation_id": {"type": ["integer", "null"]},
            "message_id": {"type": ["integer", "null"]},
            "created_at": {"type": "string", "format": "date-time"},
            "read_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
    "Badges": {"type": "object", "additionalProperties": {"type": "integer"}},
    "Me": {
        "type": "object",
        "properties": {
            "id": _ID,
            "name": {"type": "string"},
            "role": {"type": "string"},
            "teams": {"type": "array", "items": {"type": "string"}},
            "subscribe_all": {"type": "boolean"},
        },
    },
    "BusinessNumber": {
        "type": "object",
        "properties": {
            "number": {"type": "string"},
            "name": {"type": "string"},
            "team": {"type": "string"},
            "appended_message": {"type": "string"},
        },
    },
    "NewMessage": {
        "type": "object",
        "properties": {
            "body": {"type": "string"},
            "media_urls": {"type": "array", "items": {"type": "string"}},
        },
    },
    "StartConversation": {
        "type": "object",
        "required": ["business_number", "to"],
        "properties": {
            "business_number": {"type": "string"},
            "to": {"type": "string"},
            "body": {"type": "string"},
            "media_urls": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Note": {"type": "object", "required": ["body"], "properties": {"body": {"type": "string"}}},
    "UnroutableText": {
        "type": "object",
        "properties": {
            "id": _ID,
            "carrier": {"type": "string"},
            "carrier_message_id": {"type": "string"},
            "from": {"type": "string"},
            "to": {"type": "string"},
            "body": {"type": "string"},
            "received_at": {"type": "string", "format": "date-time"},
        },
    },
    "EventDelivery": {"type": "object", "additionalProperties": True},
    "FolderPhoto": {"type": "object", "additionalProperties": True},
}


def _path_id(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": _ID}


def _op(summary: str, response: dict, *, params=(), body: str | None = None, status: str = "200") -> dict:
    operation = {"summary": summary, "parameters": list(params), "responses": {status: response, **_ERRORS}}
    if body:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    return operation


_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "A repeated POST with the same key creates one message.",
}
_QUEUED = _json(_ref("Message"), "Accepted: the message is queued")

PATHS = {
    "/conversations": {
        "get": _op(
            "Conversations, newest activity first",
            _json(_page("Conversation")),
            params=[
                *_PAGING,
                {
                    "name": "status",
                    "in": "query",
                    "schema": {"enum": ["all", "unassigned", "assigned", "closed"]},
                },
                {"name": "folder_match", "in": "query", "schema": {"enum": ["matched", "none", "ambiguous"]}},
                {"name": "business_number", "in": "query", "schema": {"type": "string"}},
            ],
        )
    },
    "/conversations/{conversation_id}": {
        "get": _op("One conversation", _json(_ref("Conversation")), params=[_path_id("conversation_id")])
    },
    "/conversations/{conversation_id}/messages": {
        "get": _op(
            "Messages, oldest first; `before` loads older ones",
            _json(_page("Message")),
            params=[
                _path_id("conversation_id"),
                {"$ref": "#/components/parameters/limit"},
                {"name": "before", "in": "query", "schema": {"type": "string"}},
            ],
        ),
        "post": _op(
            "Reply in the conversation",
            _QUEUED,
            status="202",
            body="NewMessage",
            params=[_path_id("conversation_id"), _IDEMPOTENCY],
        ),
    },
    **{
        f"/conversations/{{conversation_id}}/{action}": {
            "post": _op(summary, _json(_ref("Conversation")), params=[_path_id("conversation_id")])
        }
        for action, summary in [
            ("claim", "Take a conversation nobody owns (409 if someone does)"),
            ("close", "Close for good; a new text opens a new conversation"),
            ("read", "Mark read"),
            ("unread", "Mark unread"),
        ]
    },
    "/conversations/{conversation_id}/assign": {
        "post": {
            **_op("Assign or transfer (leads: any; agents: their own)", _json(_ref("Conversation")),
                  params=[_path_id("conversation_id")]),
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["assignee_id"],
                "properties": {"assignee_id": {"type": ["integer", "null"]}}}}}},
        }
    },
    "/conversations/{conversation_id}/notes": {
        "post": _op(
            "Add an internal note (never sent)",
            _json(_ref("Message"), "Created"),
            status="201",
            body="Note",
            params=[_path_id("conversation_id"), _IDEMPOTENCY],
        )
    },
    "/messages": {
        "post": _op(
            "Start a conversation from a business number",
            _QUEUED,
            status="202",
            body="StartConversation",
            params=[_IDEMPOTENCY],
        )
    },
    "/business-numbers": {
        "get": _op(
            "Numbers the user may send from",
            _json(
                {"type": "object", "properties": {"data": {"type": "array", "items": _ref("BusinessNumber")}}}
            ),
        )
    },
    "/attachments/{attachment_id}": {
        "get": _op(
            "The stored file",
            {"description": "The file, with its content type", "content": {"*/*": {}}},
            params=[_path_id("attachment_id")],
        )
    },
    "/attachments/{attachment_id}/link-folder": {
        "post": _op(
            "Link an image to a folder", _json({"type": "object"}), params=[_path_id("attachment_id")]
        )
    },
    "/folders/{folder_id}/photos": {
        "get": _op(
            "A folder's linked photos", _json(_page("FolderPhoto")), params=[_path_id("folder_id"), *_PAGING]
        )
    },
    "/notifications": {
        "get": _op("My notifications, unread first", _json(_page("Notification")), params=_PAGING)
    },
    "/notifications/{notification_id}/read": {
        "post": _op(
            "Mark one notification read", _json(_ref("Notification")), params=[_path_id("notification_id")]
        )
    },
    "/notifications/read-all": {"post": _op("Mark all my notifications read", _json({"type": "object"}))},
    "/notifications/stream": {
        "get": _op(
            "Server-Sent Events of my new notifications",
            {"description": "text/event-stream", "content": {"text/event-stream": {}}},
            params=[
                {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                {"name": "ticket", "in": "query", "schema": {"type": "string"},
                 "description": "A stream ticket, in place of the Authorization header (EventSource)"},
            ],
        )
    },
    "/notifications/stream-tickets": {
        "post": _op(
            "A ticket that opens my stream without the token, for a browser's EventSource (10 minutes)",
            _json({"type": "object", "properties": {
                "ticket": {"type": "string"}, "expires_in": {"type": "integer"}, "stream_url": {"type": "string"},
            }}),
            status="201",
        )
    },
    "/badges": {"get": _op("Counts for the inbox badges", _json(_ref("Badges")))},
    "/me": {
        "get": _op("The signed-in user", _json(_ref("Me"))),
        "patch": _op("Change my preferences", _json(_ref("Me")), body="Me"),
    },
    "/unroutable": {
        "get": _op(
            "Texts to numbers that are not configured (admins)",
            _json(_page("UnroutableText")),
            params=_PAGING,
        )
    },
    "/admin/event-deliveries": {
        "get": _op(
            "Event webhook deliveries (admins)",
            _json(_page("EventDelivery")),
            params=[*_PAGING, {"name": "status", "in": "query", "schema": {"type": "string"}}],
        )
    },
}


def openapi_document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "SMS gateway inbox API", "version": "1"},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": PATHS,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": SCHEMAS,
            "parameters": {
                "limit": {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                },
                "cursor": {"name": "cursor", "in": "query", "schema": {"type": "string"}},
            },
            "responses": {"Error": _json(_ref("Error"), "An error: code and message")},
        },
    }


@bp.get("/openapi.json")
def document():
    return jsonify(openapi_document())
