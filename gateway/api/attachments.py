"""Attachments: the stored file itself, and images linked to customer folders.

An attachment is visible exactly when its conversation is (gateway.inbox); anyone else
gets the same 404 as for an id that does not exist, so ids reveal nothing.
"""

from __future__ import annotations

import logging
import mimetypes

from flask import Blueprint, current_app, g, jsonify, request, send_file
from sqlalchemy import select

from gateway.api.errors import ApiError, bad_request, not_found
from gateway.api.serializers import attachment_json, iso
from gateway.db import insert_ignoring_conflicts, transaction
from gateway.inbox import get_visible_conversation, sees_everything, visible_to
from gateway.media import media_path
from gateway.models import Attachment, AttachmentStatus, Conversation, Folder, FolderPhoto, Message, utcnow
from gateway.pagination import CursorError, newest_first, parse_limit

log = logging.getLogger(__name__)

bp = Blueprint("attachments", __name__, url_prefix="/api/v1")


def _runtime():
    return current_app.extensions["gateway"]


def _visible_attachment(session, attachment_id: int) -> tuple[Attachment, Conversation]:
    attachment = session.get(Attachment, attachment_id)
    message = session.get(Message, attachment.message_id) if attachment is not None else None
    conversation = (
        get_visible_conversation(session, g.user, message.conversation_id) if message is not None else None
    )
    if conversation is None:
        raise not_found("attachment")
    return attachment, conversation


def _require_stored(attachment: Attachment) -> None:
    if attachment.status == AttachmentStatus.pending:
        raise ApiError(409, "attachment_pending", "the file has not been downloaded yet; try again shortly")
    if attachment.status == AttachmentStatus.failed:
        raise ApiError(409, "attachment_failed", f"the file could not be stored: {attachment.error}")


@bp.get("/attachments/<int:attachment_id>")
def show(attachment_id: int):
    with _runtime().sessions() as session:
        attachment, _ = _visible_attachment(session, attachment_id)
        _require_stored(attachment)
    path = media_path(_runtime().settings.media_dir, attachment.sha256)
    if not path.is_file():
        log.error("stored attachment missing from the media store",
                  extra={"attachment_id": attachment.id, "sha256": attachment.sha256})
        raise ApiError(410, "file_missing", "the stored file is missing from the media store")
    extension = mimetypes.guess_extension(attachment.content_type) or ""
    response = send_file(
        path, mimetype=attachment.content_type, conditional=True, etag=attachment.sha256,
        download_name=f"attachment-{attachment.id}{extension}", max_age=0,
    )
    # Customer files are served as data, never as pages: no sniffing into HTML, and a
    # sandbox should a browser render one anyway.
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "sandbox"
    response.headers["Cache-Control"] = "private, no-cache"
    return response


@bp.post("/attachments/<int:attachment_id>/link-folder")
def link_folder(attachment_id: int):
    body = request.get_json(silent=True) if request.data else {}
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object, e.g. {\"folder_id\": 12}")
    folder_id = body.get("folder_id")
    if folder_id is not None and (type(folder_id) is not int or not 0 < folder_id < 2**63):
        raise bad_request("folder_id must be a folder's id")
    with transaction(_runtime().sessions) as session:
        attachment, conversation = _visible_attachment(session, attachment_id)
        _require_stored(attachment)
        if not (attachment.content_type or "").startswith("image/"):
            raise ApiError(422, "not_an_image",
                           f"only images can be linked to a folder, not {attachment.content_type}")
        folder_id = folder_id if folder_id is not None else conversation.folder_id
        if folder_id is None:
            raise ApiError(422, "no_folder", "the conversation has no folder: give folder_id in the body")
        allowed = {conversation.folder_id, *(conversation.candidate_folder_ids or [])} - {None}
        if not sees_everything(g.user) and folder_id not in allowed:
            # An agent files a customer's photo only under that conversation's own folder
            # (or one of its candidates), never under some other customer's.
            raise ApiError(403, "forbidden", "agents can link an image only to the conversation's folder")
        if session.get(Folder, folder_id) is None:
            raise not_found("folder")
        new_id = insert_ignoring_conflicts(
            session, FolderPhoto,
            {"folder_id": folder_id, "attachment_id": attachment.id, "linked_by_id": g.user.id,
             "created_at": utcnow()},
            index_elements=["folder_id", "attachment_id"],
        )
        link = session.scalars(select(FolderPhoto).where(
            FolderPhoto.folder_id == folder_id, FolderPhoto.attachment_id == attachment.id
        )).one()
        data = photo_json(link, attachment.message_id, conversation.id)
    return jsonify(data), (201 if new_id is not None else 200)


@bp.get("/folders/<int:folder_id>/photos")
def folder_photos(folder_id: int):
    """The folder's linked images, newest link first, that this user may see."""
    try:
        limit = parse_limit(request.args.get("limit"))
        cursor = request.args.get("cursor")
        with _runtime().sessions() as session:
            if session.get(Folder, folder_id) is None:
                raise not_found("folder")
            query = (
                select(FolderPhoto, Message.id, Conversation.id)
                .join(Attachment, Attachment.id == FolderPhoto.attachment_id)
                .join(Message, Message.id == Attachment.message_id)
                .join(Conversation, Conversation.id == Message.conversation_id)
                .where(FolderPhoto.folder_id == folder_id)
            )
            visibility = visible_to(g.user)
            if visibility is not None:
                query = query.where(visibility)
            page, next_cursor = newest_first(session, query, FolderPhoto.id, cursor, limit, scalars=False,
                                             row_id=lambda row: row[0].id)
            data = [photo_json(link, message_id, conversation_id)
                    for link, message_id, conversation_id in page]
    except (CursorError, ValueError) as exc:
        raise bad_request(str(exc)) from None
    return jsonify(data=data, next_cursor=next_cursor)


def photo_json(link: FolderPhoto, message_id: int, conversation_id: int) -> dict:
    return {
        "id": link.id,
        "folder_id": link.folder_id,
        "attachment": attachment_json(link.attachment),
        "message_id": message_id,
        "conversation_id": conversation_id,
        "linked_by": link.linked_by_id,
        "linked_at": iso(link.created_at),
    }
