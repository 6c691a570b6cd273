"""What people do to a conversation: claim, assign or transfer, close, mark read or unread.

Each change is one conditional UPDATE, so two people acting at once cannot both win:
the second finds the row no longer matches (already claimed, already closed) and gets a
conflict. Closed is final: nothing here, or anywhere, reopens a closed conversation.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.orm import Session

from gateway import events
from gateway.inbox import get_visible_conversation, sees_everything
from gateway.models import Conversation, ConversationStatus, User, utcnow
from gateway.notifications import conversation_event, notify_assigned
from gateway.routing.conversations import conversation_status


class ActionRefused(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Actor:
    user: User

    @property
    def is_lead(self) -> bool:
        return sees_everything(self.user)


def _visible(session: Session, actor: Actor, conversation_id: int) -> Conversation:
    conversation = get_visible_conversation(session, actor.user, conversation_id)
    if conversation is None:
        raise ActionRefused(404, "not_found", "conversation not found")
    return conversation


def _open(session: Session, actor: Actor, conversation_id: int) -> Conversation:
    conversation = _visible(session, actor, conversation_id)
    if conversation.status == ConversationStatus.closed:
        raise ActionRefused(409, "conversation_closed", "the conversation is closed")
    return conversation


def claim(session: Session, actor: Actor, conversation_id: int) -> Conversation:
    """Take a conversation nobody owns."""
    conversation = _open(session, actor, conversation_id)
    taken = session.execute(
        update(Conversation)
        .where(Conversation.id == conversation.id, Conversation.assignee_id.is_(None),
               Conversation.status != ConversationStatus.closed)
        .values(assignee_id=actor.user.id, status=ConversationStatus.assigned)
    ).rowcount
    if not taken:
        raise ActionRefused(409, "already_owned", "someone else owns or closed this conversation")
    session.refresh(conversation)
    notify_assigned(session, conversation, actor.user.id)
    return conversation


def assign(session: Session, actor: Actor, conversation_id: int, assignee_id: int | None) -> Conversation:
    """Give a conversation to a user (or to nobody). Leads assign anything they see; an
    agent transfers only a conversation they own."""
    conversation = _open(session, actor, conversation_id)
    if not actor.is_lead and conversation.assignee_id != actor.user.id:
        raise ActionRefused(403, "forbidden", "agents can only transfer conversations they own")
    if assignee_id is not None and session.get(User, assignee_id) is None:
        raise ActionRefused(422, "unknown_user", f"no user with id {assignee_id}")
    previous = conversation.assignee_id
    changed = session.execute(
        update(Conversation)
        .where(Conversation.id == conversation.id, Conversation.status != ConversationStatus.closed,
               Conversation.assignee_id.is_(previous) if previous is None
               else Conversation.assignee_id == previous)
        .values(assignee_id=assignee_id,
                status=conversation_status(conversation.folder_id, assignee_id, closed=False))
    ).rowcount
    if not changed:
        raise ActionRefused(409, "conflict", "the conversation changed meanwhile; reload and retry")
    session.refresh(conversation)
    if assignee_id is not None and assignee_id != previous:
        notify_assigned(session, conversation, actor.user.id)
    return conversation


def close(session: Session, actor: Actor, conversation_id: int) -> Conversation:
    """Close for good. Closing a closed conversation changes nothing and is not an error.
    Leads close anything they see; an agent closes what they own (claim it first)."""
    conversation = _visible(session, actor, conversation_id)
    if not actor.is_lead and conversation.assignee_id != actor.user.id \
            and conversation.status != ConversationStatus.closed:
        raise ActionRefused(403, "forbidden", "agents can only close conversations they own")
    closed = session.execute(
        update(Conversation)
        .where(Conversation.id == conversation.id, Conversation.status != ConversationStatus.closed)
        .values(status=ConversationStatus.closed, closed_at=utcnow(), unread=False)
    ).rowcount
    session.refresh(conversation)
    if closed:
        events.emit(session, events.CONVERSATION_CLOSED,
                    {"conversation": conversation_event(conversation), "closed_by": actor.user.id},
                    key=f"closed:{conversation.id}")
    return conversation


def mark_read(session: Session, actor: Actor, conversation_id: int, unread: bool) -> Conversation:
    conversation = _visible(session, actor, conversation_id)
    session.execute(update(Conversation).where(Conversation.id == conversation.id).values(unread=unread))
    session.refresh(conversation)
    return conversation
