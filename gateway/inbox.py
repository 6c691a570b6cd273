"""The inbox's queries: who sees which conversation, lists in pages, threads in order."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import and_, or_, select, tuple_
from sqlalchemy.orm import Session

from gateway.models import (
    Conversation,
    ConversationStatus,
    EventStatus,
    FolderMatch,
    InboundEvent,
    Message,
    Role,
    User,
)
from gateway.pagination import CursorError, decode_cursor, encode_cursor, newest_first

STATUS_FILTERS = ("all", "unassigned", "assigned", "closed")


@dataclass(frozen=True)
class ConversationFilters:
    status: str = "all"
    folder_match: str | None = None
    business_number: str | None = None

    def validate(self) -> None:
        if self.status not in STATUS_FILTERS:
            raise CursorError(f"status must be one of {', '.join(STATUS_FILTERS)}")
        if self.folder_match is not None and self.folder_match not in FolderMatch.__members__:
            raise CursorError("folder_match must be one of matched, none, ambiguous")


def sees_everything(user: User) -> bool:
    return user.role in (Role.admin, Role.supervisor)


def visible_to(user: User):
    """Admins and supervisors see all. An agent sees what is theirs, and the work of
    their teams that nobody owns yet (unassigned, or placed in a folder but unowned)."""
    if sees_everything(user):
        return None
    mine = Conversation.assignee_id == user.id
    teams = user.team_names
    if not teams:
        return mine
    return or_(mine, and_(Conversation.assignee_id.is_(None), Conversation.team.in_(teams)))


def list_conversations(
    session: Session, user: User, filters: ConversationFilters, cursor: str | None, limit: int
) -> tuple[list[Conversation], str | None]:
    """Newest activity first; the cursor is the (last_message_at, id) of the last row."""
    filters.validate()
    query = select(Conversation)
    visibility = visible_to(user)
    if visibility is not None:
        query = query.where(visibility)
    if filters.status != "all":
        query = query.where(Conversation.status == ConversationStatus(filters.status))
    if filters.folder_match:
        query = query.where(Conversation.folder_match == FolderMatch(filters.folder_match))
    if filters.business_number:
        query = query.where(Conversation.business_number == filters.business_number)
    if cursor:
        at, last_id = decode_cursor(cursor, 2)
        query = query.where(
            tuple_(Conversation.last_message_at, Conversation.id) < (_parse_time(at), int(last_id))
        )
    query = query.order_by(Conversation.last_message_at.desc(), Conversation.id.desc()).limit(limit + 1)
    rows = list(session.scalars(query))
    page, more = rows[:limit], len(rows) > limit
    next_cursor = encode_cursor(page[-1].last_message_at.isoformat(), page[-1].id) if more else None
    return page, next_cursor


def get_visible_conversation(session: Session, user: User, conversation_id: int) -> Conversation | None:
    query = select(Conversation).where(Conversation.id == conversation_id)
    visibility = visible_to(user)
    if visibility is not None:
        query = query.where(visibility)
    return session.scalar(query)


def list_messages(
    session: Session, conversation: Conversation, before: str | None, limit: int
) -> tuple[list[Message], str | None]:
    """The newest `limit` messages before the cursor, oldest first, as a thread reads.

    `next_cursor` points further back in time: pass it as `before` to load older ones.
    """
    query = select(Message).where(Message.conversation_id == conversation.id)
    if before:
        at, last_id = decode_cursor(before, 2)
        query = query.where(tuple_(Message.created_at, Message.id) < (_parse_time(at), int(last_id)))
    query = query.order_by(Message.created_at.desc(), Message.id.desc()).limit(limit + 1)
    rows = list(session.scalars(query))
    page, more = rows[:limit], len(rows) > limit
    next_cursor = encode_cursor(page[-1].created_at.isoformat(), page[-1].id) if more else None
    return list(reversed(page)), next_cursor


def list_unroutable_events(session: Session, cursor: str | None, limit: int):
    """Texts to numbers that are not ours, newest first: kept for admins, never dropped."""
    query = select(InboundEvent).where(InboundEvent.status == EventStatus.unroutable)
    return newest_first(session, query, InboundEvent.id, cursor, limit)


def _parse_time(value) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise CursorError("cursor is not one this API issued") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)

