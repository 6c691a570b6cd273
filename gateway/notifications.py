"""Notifications: who is told of a new text or an assignment, stored once, published live.

`notify_inbound` runs in a worker after a text is threaded. It reads the facts, asks the
rules in `gateway/routing/notify.py` who to tell, and inserts one row per recipient with
INSERT ... ON CONFLICT DO NOTHING on (user, kind, event): a redelivered task or two
workers racing on one message store each notification once, and each worker publishes
only the rows it inserted, after its commit. It also records the `message.received`
event for `[[notify.webhooks]]` (gateway/events.py) and marks the message notified; the
sweeper re-enqueues inbound messages that were processed but never marked.

Folders name their resources by **user name** (`sales_resource`, `service_resource` in the
folder import are user names, as in `gateway users add NAME`). A name that matches no
user is logged and skipped: the text still reaches everyone else.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from gateway import events, live
from gateway.after_commit import call_after_commit
from gateway.broker import EVENTS_QUEUE, NOTIFY_QUEUE
from gateway.db import insert_ignoring_conflicts, transaction
from gateway.inbox import visible_to
from gateway.logs import bind_message
from gateway.models import (
    Conversation,
    ConversationStatus,
    Direction,
    EventStatus,
    InboundEvent,
    Message,
    Notification,
    User,
    UserTeam,
    utcnow,
)
from gateway.pagination import CursorError, decode_cursor, encode_cursor
from gateway.redis_keys import notify_swept
from gateway.routing.notify import (
    ConversationFacts,
    Person,
    Preferences,
    Recipient,
    assignment_recipients,
    inbound_recipients,
)
from gateway.settings import Settings

log = logging.getLogger(__name__)

NOTIFY_INBOUND_ACTOR = "notify_inbound"
# The inbound worker enqueues the notify task right after its commit; give it this long.
DEFAULT_SWEEP_GRACE = dt.timedelta(seconds=10)
SWEPT_MARK_TTL_S = 300


def notify_inbound(sessions: sessionmaker[Session], settings: Settings, message_id: int) -> list[int]:
    """Tell everyone the rules name about one new message; returns the notifications created."""
    with transaction(sessions) as session:
        message = session.get(Message, message_id)
        if message is None:
            log.warning("message to notify about not found", extra={"message_id": message_id})
            return []
        bind_message(message.carrier_message_id, message.conversation_id, message_id=message.id)
        if message.notified_at is not None:
            return []
        conversation = session.get(Conversation, message.conversation_id)
        recipients = inbound_recipients(
            str(message.direction),
            _facts(session, conversation),
            _team_people(session, conversation.team),
            preferences(settings),
            author_id=message.author_id,
        )
        created = store_notifications(
            session, recipients, f"message:{message.id}", conversation.id, message.id
        )
        if message.direction == Direction.inbound:
            events.emit(session, events.MESSAGE_RECEIVED, message_event(message, conversation),
                        key=f"message:{message.id}", settings=settings)
        message.notified_at = utcnow()
    if created:
        log.info("notified", extra={"message_id": message_id, "conversation_id": conversation.id,
                                    "notifications": len(created)})
    return created


def notify_assigned(
    session: Session,
    conversation: Conversation,
    assigned_by_id: int | None,
    *,
    at: dt.datetime | None = None,
    settings: Settings | None = None,
) -> list[int]:
    """Call in the transaction that gives `conversation` to `conversation.assignee_id`.

    Tells the new owner (unless they took it themselves) and emits `conversation.assigned`.
    """
    at = at or utcnow()
    key = f"assigned:{conversation.id}:{conversation.assignee_id}:{at.isoformat()}"
    created = store_notifications(
        session, assignment_recipients(conversation.assignee_id, assigned_by_id), key, conversation.id, None
    )
    events.emit(
        session, events.CONVERSATION_ASSIGNED,
        {"conversation": conversation_event(conversation), "assigned_by": assigned_by_id},
        key=key, settings=settings,
    )
    return created


def store_notifications(
    session: Session, recipients: list[Recipient], event_key: str, conversation_id: int | None,
    message_id: int | None,
) -> list[int]:
    """Insert each recipient's row once; publish the new ones after the commit."""
    now = utcnow()
    created: dict[int, list[int]] = {}
    for recipient in recipients:
        notification_id = insert_ignoring_conflicts(
            session, Notification,
            {"user_id": recipient.user_id, "kind": recipient.kind, "event_key": event_key,
             "conversation_id": conversation_id, "message_id": message_id, "created_at": now},
            index_elements=["user_id", "kind", "event_key"],
        )
        if notification_id is not None:
            created.setdefault(recipient.user_id, []).append(notification_id)
    if created:
        call_after_commit(session, _publish, created)
    return [i for ids in created.values() for i in ids]


def preferences(settings: Settings) -> Preferences:
    notify = settings.config.notify
    return Preferences(
        sales_resource_on_inbound=notify.sales_resource_on_inbound,
        service_resource_on_inbound=notify.service_resource_on_inbound,
        team_on_unassigned=notify.team_on_unassigned,
    )


def _facts(session: Session, conversation: Conversation) -> ConversationFacts:
    folder = conversation.folder
    sales = service = None
    if folder is not None:
        sales = _user_named(session, folder.sales_resource, folder.id, "sales_resource")
        service = _user_named(session, folder.service_resource, folder.id, "service_resource")
    return ConversationFacts(
        team=conversation.team,
        folder_match=str(conversation.folder_match),
        assignee_id=conversation.assignee_id,
        sales_resource_id=sales,
        service_resource_id=service,
    )


def _user_named(session: Session, name: str | None, folder_id: int, field: str) -> int | None:
    if not name or not name.strip():
        return None
    user_id = session.scalar(select(User.id).where(User.name == name.strip()))
    if user_id is None:
        log.warning("folder resource names no user; not notified",
                    extra={"folder_id": folder_id, "field": field, "resource": name})
    return user_id


def _team_people(session: Session, team: str) -> list[Person]:
    """The business number's team: the only people subscribe-all or unassigned work can reach."""
    users = session.scalars(select(User).join(UserTeam).where(UserTeam.team == team))
    return [Person(u.id, frozenset(u.team_names), u.subscribe_all) for u in users]


def message_event(message: Message, conversation: Conversation) -> dict:
    return {
        "message": {
            "id": message.id,
            "conversation_id": message.conversation_id,
            "direction": str(message.direction),
            "body": message.body,
            "from": message.from_number,
            "to": message.to_number,
            "carrier_message_id": message.carrier_message_id,
            "attachments": len(message.attachments),
            "created_at": message.created_at.isoformat().replace("+00:00", "Z"),
        },
        "conversation": conversation_event(conversation),
    }


def conversation_event(conversation: Conversation) -> dict:
    return {
        "id": conversation.id,
        "status": str(conversation.status),
        "business_number": conversation.business_number,
        "team": conversation.team,
        "folder_id": conversation.folder_id,
        "folder_match": str(conversation.folder_match),
        "assignee": conversation.assignee_id,
    }


def _publish(ids_by_user: dict[int, list[int]]) -> None:
    from gateway.runtime import get_runtime

    live.publish(get_runtime().redis_url, ids_by_user)


def find_unnotified_messages(
    sessions: sessionmaker[Session], *, grace: dt.timedelta = DEFAULT_SWEEP_GRACE, limit: int = 500
) -> list[int]:
    """Inbound texts processed more than `grace` ago whose notify task never finished."""
    cutoff = utcnow() - grace
    with sessions() as session:
        return list(session.scalars(
            select(Message.id)
            .join(InboundEvent, InboundEvent.id == Message.inbound_event_id)
            .where(
                Message.notified_at.is_(None),
                Message.direction == Direction.inbound,
                InboundEvent.status == EventStatus.processed,
                InboundEvent.processed_at < cutoff,
            )
            .order_by(Message.id)
            .limit(limit)
        ))


def sweep_unnotified(runtime) -> int:
    """Re-enqueue lost notify tasks, each at most once per `SWEPT_MARK_TTL_S` (SET NX)."""
    enqueued = 0
    client = live.shared_client(runtime.redis_url)
    for message_id in find_unnotified_messages(runtime.sessions):
        if not client.set(notify_swept(message_id), "1", nx=True, ex=SWEPT_MARK_TTL_S):
            continue
        if not runtime.enqueue(NOTIFY_QUEUE, NOTIFY_INBOUND_ACTOR, message_id):
            client.delete(notify_swept(message_id))
            break
        enqueued += 1
    return enqueued


def sweep_overdue_deliveries(runtime) -> int:
    enqueued = 0
    for delivery_id in events.find_overdue_deliveries(runtime.sessions):
        if not runtime.enqueue(EVENTS_QUEUE, events.DELIVER_EVENT_ACTOR, delivery_id):
            break
        enqueued += 1
    return enqueued


def sweep(runtime) -> int:
    """The sweeper's notification pass: lost notify tasks and lost event deliveries.

    Each half is logged and skipped on failure, so a Redis hiccup here never stops the
    rest of the sweeper's pass.
    """
    enqueued = 0
    for part in (sweep_unnotified, sweep_overdue_deliveries):
        try:
            enqueued += part(runtime)
        except Exception:
            log.exception("notification sweep failed; will retry", extra={"part": part.__name__})
    if enqueued:
        log.info("sweeper re-enqueued notification work", extra={"count": enqueued})
    return enqueued


def mark_read(session: Session, user_id: int, notification_id: int | None = None) -> int:
    """Mark one (or, with no id, every) unread notification of the user read; returns how many."""
    query = update(Notification).where(Notification.user_id == user_id, Notification.read_at.is_(None))
    if notification_id is not None:
        query = query.where(Notification.id == notification_id)
    return session.execute(query.values(read_at=utcnow())).rowcount


def list_notifications(
    session: Session, user_id: int, cursor: str | None, limit: int
) -> tuple[list[Notification], str | None]:
    """Unread first, then newest; the cursor is (read?, id) of the last row shown."""
    is_read = case((Notification.read_at.is_(None), 0), else_=1)
    query = select(Notification).where(Notification.user_id == user_id)
    if cursor:
        read_flag, last_id = decode_cursor(cursor, 2)
        if read_flag not in (0, 1) or not isinstance(last_id, int):
            raise CursorError("cursor is not one this API issued")
        query = query.where(or_(is_read > read_flag, and_(is_read == read_flag, Notification.id < last_id)))
    rows = list(session.scalars(query.order_by(is_read, Notification.id.desc()).limit(limit + 1)))
    page, more = rows[:limit], len(rows) > limit
    next_cursor = None
    if more:
        next_cursor = encode_cursor(0 if page[-1].read_at is None else 1, page[-1].id)
    return page, next_cursor


def latest_notification_id(session: Session, user_id: int) -> int:
    return session.scalar(select(func.max(Notification.id)).where(Notification.user_id == user_id)) or 0


def badges(session: Session, user: User) -> dict[str, int]:
    """The four counts an inbox shows beside its tabs."""
    visibility = visible_to(user)

    def visible_conversations(*conditions) -> int:
        query = select(func.count()).select_from(Conversation).where(*conditions)
        if visibility is not None:
            query = query.where(visibility)
        return session.scalar(query)

    return {
        "unread_notifications": session.scalar(
            select(func.count()).select_from(Notification)
            .where(Notification.user_id == user.id, Notification.read_at.is_(None))
        ),
        "unread_assigned": session.scalar(
            select(func.count()).select_from(Conversation).where(
                Conversation.assignee_id == user.id,
                Conversation.unread.is_(True),
                Conversation.status != ConversationStatus.closed,
            )
        ),
        "unassigned": visible_conversations(Conversation.status == ConversationStatus.unassigned),
        # The last word is the customer's: nobody has answered yet.
        "unresponded": visible_conversations(
            Conversation.status != ConversationStatus.closed,
            Conversation.last_message_direction == Direction.inbound,
        ),
    }
