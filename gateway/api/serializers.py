"""Model -> JSON, with exactly the field names DESIGN.md promises clients."""

from __future__ import annotations

from gateway.models import Attachment, Conversation, InboundEvent, Message


def iso(value) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def conversation_json(conversation: Conversation) -> dict:
    contact, folder = conversation.contact, conversation.folder
    return {
        "id": conversation.id,
        "status": str(conversation.status),
        "business_number": conversation.business_number,
        "contact": {"id": contact.id, "number": contact.number, "name": contact.name,
                    "opted_out": contact.opted_out},
        "folder": {"id": folder.id, "name": folder.name} if folder is not None else None,
        "folder_match": str(conversation.folder_match),
        "candidate_folder_ids": list(conversation.candidate_folder_ids or []),
        "assignee": conversation.assignee_id,
        "team": conversation.team,
        "unread": conversation.unread,
        "last_message_at": iso(conversation.last_message_at),
        "created_at": iso(conversation.created_at),
    }


def message_json(message: Message) -> dict:
    return {
        "id": message.id,
        "conversation_id": message.conversation_id,
        "direction": str(message.direction),
        "body": message.body,
        "summary": message.summary,
        "from": message.from_number,
        "to": message.to_number,
        "status": message.status,
        "segments": message.segments,
        "carrier_message_id": message.carrier_message_id,
        "keyword": message.keyword,
        "encoding": message.encoding,            # outbound: gsm7 | ucs2
        "error_code": message.error_code,        # outbound: the carrier's code when it failed
        "error_message": message.error_message,
        "attachments": [attachment_json(a) for a in message.attachments],
        "created_at": iso(message.created_at),
    }


def attachment_json(attachment: Attachment) -> dict:
    return {
        "id": attachment.id,
        "content_type": attachment.content_type or attachment.declared_content_type,
        "size": attachment.size,
        "status": str(attachment.status),
        "url": f"/api/v1/attachments/{attachment.id}",
        "error": attachment.error,  # why a failed attachment could not be stored
    }


def unroutable_json(event: InboundEvent) -> dict:
    return {
        "id": event.id,
        "carrier": event.carrier,
        "carrier_message_id": event.carrier_message_id,
        "from": event.from_number,
        "to": event.to_number,
        "body": (event.payload or {}).get("body", ""),
        "received_at": iso(event.received_at),
    }
