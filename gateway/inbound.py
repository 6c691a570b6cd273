"""Inbound texts, from stored webhook event to a message in its conversation.

Two halves. `store_event` runs in the webhook: one INSERT that a repeated carrier id
turns into a no-op, committed before the carrier is answered. `process_event` runs in a
worker and is idempotent from top to bottom: a redelivered or concurrently processed
event finds its work done (unique `inbound_event_id` on messages), and two texts from
one sender meet in one conversation (unique open thread per business number and contact).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

from sqlalchemy import select, text, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from gateway.db import insert_ignoring_conflicts, is_sqlite, transaction
from gateway.logs import bind_message
from gateway.messaging import InboundMessage
from gateway.metrics import ROUTING_OUTCOMES, WEBHOOK_STORE_RETRIES
from gateway.models import (
    Attachment,
    Contact,
    Conversation,
    ConversationStatus,
    Direction,
    EventStatus,
    FolderMatch,
    FolderPhone,
    InboundEvent,
    Message,
    utcnow,
)
from gateway.phone import Number
from gateway.routing.conversations import conversation_status, needs_folder_match
from gateway.routing.folders import match_folders
from gateway.routing.keywords import OPT_IN, OPT_OUT, classify_keyword
from gateway.settings import Settings

log = logging.getLogger(__name__)

PROCESS_INBOUND_ACTOR = "process_inbound_event"

# Holding a webhook through a database outage: within the carrier's 15 s timeout, with
# room left for the rest of the request.
# A text to a number the web process knew but this worker does not (a rolling deploy, a
# config reload in progress) waits this long for a worker that knows it, retried by the
# sweeper, before it is given up as unroutable.
UNKNOWN_NUMBER_GRACE = dt.timedelta(minutes=15)
STORE_RETRY_WINDOW_S = 10.0
STORE_FIRST_BACKOFF_S = 0.1
STORE_MAX_BACKOFF_S = 1.0


@dataclass(frozen=True)
class StoredEvent:
    id: int | None  # None: the carrier repeated a message we already hold
    routable: bool

    @property
    def is_new(self) -> bool:
        return self.id is not None


def store_event(
    sessions: sessionmaker[Session],
    carrier_name: str,
    message: InboundMessage,
    sender: Number,
    recipient: Number,
    routable: bool,
) -> StoredEvent:
    """Commit the webhook durably; a repeated carrier message id changes nothing."""
    values = event_values(carrier_name, message, sender, recipient, routable)
    return StoredEvent(_insert_event(sessions, values), routable)


def event_values(
    carrier_name: str, message: InboundMessage, sender: Number, recipient: Number, routable: bool
) -> dict:
    """The inbound_events row for one webhook (also written in batches: gateway/group_commit.py)."""
    now = utcnow()
    return {
        "carrier": carrier_name,
        "carrier_message_id": message.carrier_message_id,
        "from_number": sender.value,
        "from_kind": sender.kind,
        "to_number": recipient.value,
        "payload": message.to_payload(),
        "status": EventStatus.received if routable else EventStatus.unroutable,
        "received_at": now,
        # Set optimistically: the webhook enqueues right after commit and clears this
        # only if the broker refuses, so the common path costs a single write.
        "enqueued_at": now if routable else None,
        "attempts": 0,
    }


def _insert_event(sessions: sessionmaker[Session], values: dict, window_s: float = STORE_RETRY_WINDOW_S):
    """INSERT the event and commit, holding the request through a short database outage.

    A PostgreSQL restart or failover takes seconds; the carrier waits 15 s. Retrying the
    commit with backoff for up to `window_s` keeps the rule "committed before answered"
    without a second store to replay (README: "A database outage during ingest"). Past
    the window the error goes up, the carrier gets a 500 and retries, and the repeated
    MessageSid is stored once.
    """
    deadline = time.monotonic() + window_s
    delay = STORE_FIRST_BACKOFF_S
    while True:
        try:
            with transaction(sessions) as session:
                return insert_ignoring_conflicts(
                    session, InboundEvent, values, index_elements=["carrier", "carrier_message_id"]
                )
        except (OperationalError, InterfaceError) as exc:
            # SQLite's only operational error here is a lock its busy timeout already waited on.
            if is_sqlite(sessions.kw["bind"]) or time.monotonic() + delay > deadline:
                raise
            WEBHOOK_STORE_RETRIES.inc()
            log.warning(
                "database unreachable while storing a webhook; retrying",
                extra={
                    "message_sid": values["carrier_message_id"],
                    "retry_in_s": delay,
                    "error": type(exc.orig).__name__,
                },
            )
            time.sleep(delay)
            delay = min(delay * 2, STORE_MAX_BACKOFF_S)


def mark_not_enqueued(sessions: sessionmaker[Session], *event_ids: int) -> None:
    """The broker refused these events: the sweeper's next pass finds them at once."""
    with transaction(sessions) as session:
        session.execute(update(InboundEvent).where(InboundEvent.id.in_(event_ids)).values(enqueued_at=None))


def leave_or_give_up_unknown_number(event_id: int, to_number: str, received_at: dt.datetime, give_up) -> bool:
    """The webhook stored this text as routable, yet this worker's config lacks its number.
    Within UNKNOWN_NUMBER_GRACE the event is left `received`, for a worker whose config has
    the number (the sweeper hands it out again); after that, `give_up()` marks it unroutable.
    Returns True when it gave up."""
    if utcnow() - received_at < UNKNOWN_NUMBER_GRACE:
        log.warning("text to a number this worker's config lacks; left for a worker that has it",
                    extra={"event_id": event_id, "to_number": to_number})
        return False
    log.warning("text to a number no worker's config had in time; marked unroutable",
                extra={"event_id": event_id, "to_number": to_number})
    give_up()
    return True


def process_event(sessions: sessionmaker[Session], settings: Settings, event_id: int) -> int | None:
    """Thread one stored event into its conversation; returns the message id, or None."""
    with transaction(sessions) as session:
        event = session.get(InboundEvent, event_id, with_for_update=not is_sqlite(session))
        if event is None:
            log.warning("inbound event not found", extra={"event_id": event_id})
            return None
        if event.status != EventStatus.received:
            return _existing_message_id(session, event_id)
        business_number = settings.business_number(event.to_number)
        if business_number is None:
            leave_or_give_up_unknown_number(event.id, event.to_number, event.received_at,
                                            lambda: setattr(event, "status", EventStatus.unroutable))
            return None
        inbound = InboundMessage.from_payload(event.payload)
        contact = find_or_create_contact(session, event.from_number, event.from_kind)
        conversation = find_or_open_conversation(session, business_number, contact, event.received_at)
        bind_message(event.carrier_message_id, conversation.id, event_id=event.id)
        keyword = _apply_keyword(session, contact, inbound.body, event.received_at)
        if needs_folder_match(conversation.folder_id, conversation.assignee_id):
            match_folder(session, conversation, contact.number)
        message = _add_message(session, conversation, event, inbound, keyword)
        event.status = EventStatus.processed
        event.processed_at = utcnow()
        event.attempts += 1
        ROUTING_OUTCOMES.labels(str(conversation.folder_match)).inc()
        log.info(
            "inbound message threaded",
            extra={
                "message_sid": event.carrier_message_id,
                "conversation_id": conversation.id,
                "folder_match": str(conversation.folder_match),
            },
        )
        return message.id


def _existing_message_id(session: Session, event_id: int) -> int | None:
    return session.scalar(select(Message.id).where(Message.inbound_event_id == event_id))


def find_or_create_contact(session: Session, number: str, kind: str) -> Contact:
    insert_ignoring_conflicts(
        session,
        Contact,
        {"number": number, "number_kind": kind, "created_at": utcnow()},
        index_elements=["number"],
    )
    return session.execute(select(Contact).where(Contact.number == number)).scalar_one()


def find_or_open_conversation(session: Session, business_number, contact: Contact, at: dt.datetime):
    """The contact's open conversation on this number, opened if there is none.

    Two workers may get here at once for one sender. Both try the INSERT; the partial
    unique index lets one through and turns the other into a no-op (on PostgreSQL it
    waits for the first to commit), and both then read the same row.
    """
    open_thread = select(Conversation).where(
        Conversation.business_number == business_number.number,
        Conversation.contact_id == contact.id,
        Conversation.status != ConversationStatus.closed,
    )
    if not is_sqlite(session):
        open_thread = open_thread.with_for_update(of=Conversation)
    conversation = session.execute(open_thread).scalar_one_or_none()
    if conversation is not None:
        return conversation
    insert_ignoring_conflicts(
        session,
        Conversation,
        {
            "business_number": business_number.number,
            "contact_id": contact.id,
            "status": ConversationStatus.unassigned,
            "team": business_number.team,
            "folder_match": FolderMatch.none,
            "candidate_folder_ids": [],
            "unread": True,
            "last_message_at": at,
            "created_at": at,
        },
        index_elements=["business_number", "contact_id"],
        # A literal, not a bound parameter: PostgreSQL infers the partial unique index from
        # this predicate when it parses the statement, and once psycopg prepares the
        # statement (its 6th run on a connection) a `status != $1` matches no index.
        index_where=text("status != 'closed'"),
    )
    return session.execute(open_thread.execution_options(populate_existing=True)).scalar_one()


def _apply_keyword(session: Session, contact: Contact, body: str, at: dt.datetime) -> str | None:
    keyword = classify_keyword(body)
    if keyword in (OPT_OUT, OPT_IN):
        if not is_sqlite(session):  # two workers on one sender's STOP and START: one at a time
            session.refresh(contact, with_for_update=True)
        apply_opt_keyword(contact, keyword, at)
    return keyword


def apply_opt_keyword(contact, keyword: str, at: dt.datetime) -> bool:
    """The latest STOP or START by arrival wins, whatever order workers handle them in:
    a keyword older than the one already applied changes nothing. True if it applied."""
    if contact.keyword_at is not None and at <= contact.keyword_at:
        return False
    contact.keyword_at = at
    if keyword == OPT_OUT and not contact.opted_out:
        contact.opted_out, contact.opted_out_at = True, at
    elif keyword == OPT_IN and contact.opted_out:
        contact.opted_out, contact.opted_out_at = False, None
    return True


def match_folder(session: Session, conversation: Conversation, number: str) -> None:
    folder_ids = session.scalars(select(FolderPhone.folder_id).where(FolderPhone.number == number))
    result = match_folders(folder_ids)
    conversation.folder_id = result.folder_id
    conversation.folder_match = FolderMatch(result.outcome)
    conversation.candidate_folder_ids = list(result.candidate_folder_ids)
    conversation.status = ConversationStatus(
        conversation_status(conversation.folder_id, conversation.assignee_id, closed=False)
    )


def _add_message(
    session: Session,
    conversation: Conversation,
    event: InboundEvent,
    inbound: InboundMessage,
    keyword: str | None,
):
    message = Message(
        conversation_id=conversation.id,
        inbound_event_id=event.id,
        direction=Direction.inbound,
        body=inbound.body,
        from_number=event.from_number,
        to_number=event.to_number,
        status="received",
        segments=inbound.segments,
        carrier_message_id=inbound.carrier_message_id,
        keyword=keyword,
        created_at=event.received_at,
        attachments=[
            Attachment(position=i, source_url=m.url, declared_content_type=m.content_type)
            for i, m in enumerate(inbound.media)
        ],
    )
    session.add(message)
    # Arrival order: a late worker must not move the conversation back in time.
    if event.received_at >= conversation.last_message_at:
        conversation.last_message_at = event.received_at
        conversation.last_message_direction = Direction.inbound
    conversation.unread = True
    session.flush()
    return message


def find_unenqueued_events(
    sessions: sessionmaker[Session], *, grace: dt.timedelta, stale_after: dt.timedelta, limit: int = 500
) -> list[int]:
    """Stored events no worker has taken: never enqueued, or enqueued long ago and not done.

    Marks each one enqueued now, so two sweepers (or two sweeps) do not both pick it.
    """
    now = utcnow()
    never_enqueued = InboundEvent.enqueued_at.is_(None) & (InboundEvent.received_at < now - grace)
    lost = InboundEvent.enqueued_at < now - stale_after
    with transaction(sessions) as session:
        query = (
            select(InboundEvent.id)
            .where(InboundEvent.status == EventStatus.received, never_enqueued | lost)
            .order_by(InboundEvent.id)
            .limit(limit)
        )
        if not is_sqlite(session):
            query = query.with_for_update(skip_locked=True)
        ids = list(session.scalars(query))
        if ids:
            session.execute(update(InboundEvent).where(InboundEvent.id.in_(ids)).values(enqueued_at=now))
    return ids
