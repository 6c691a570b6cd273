"""The database: typed SQLAlchemy 2 models.

One `Base` carries the constraint naming convention (so Alembic names match on SQLite and
PostgreSQL) and the type map (aware datetimes, enums stored by value). Every uniqueness
the rules rely on is a named constraint, because "no duplicates" is enforced here, by
the database, not by a check-then-insert in Python.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from gateway.routing.conversations import summarize

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AwareDateTime(TypeDecorator):
    """Stores UTC; always hands back an aware datetime (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(dt.UTC) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value


class StrEnum(str, enum.Enum):
    def __str__(self) -> str:
        return self.value


class Role(StrEnum):
    admin = "admin"
    supervisor = "supervisor"
    agent = "agent"


class EventStatus(StrEnum):
    received = "received"      # stored, waiting for a worker
    processed = "processed"    # threaded into a conversation
    unroutable = "unroutable"  # To is not one of our business numbers: kept for admins


class ConversationStatus(StrEnum):
    unassigned = "unassigned"
    assigned = "assigned"
    closed = "closed"


class FolderMatch(StrEnum):
    matched = "matched"
    none = "none"
    ambiguous = "ambiguous"


class Direction(StrEnum):
    inbound = "inbound"
    outbound = "outbound"
    note = "note"


class AttachmentStatus(StrEnum):
    pending = "pending"
    stored = "stored"
    failed = "failed"


def _enum_column(enum_cls: type[enum.Enum]) -> Any:
    from sqlalchemy import Enum

    return Enum(
        enum_cls,
        native_enum=False,
        length=16,
        validate_strings=True,
        values_callable=lambda e: [member.value for member in e],
        create_constraint=False,
    )


intpk = Annotated[int, mapped_column(Integer().with_variant(BigInteger, "postgresql"), primary_key=True)]
created = Annotated[dt.datetime, mapped_column(default=utcnow)]
e164 = Annotated[str, mapped_column(String(32))]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dt.datetime: AwareDateTime(),
        dict[str, Any]: JSON(),
        list[int]: JSON(),
        Role: _enum_column(Role),
        EventStatus: _enum_column(EventStatus),
        ConversationStatus: _enum_column(ConversationStatus),
        FolderMatch: _enum_column(FolderMatch),
        Direction: _enum_column(Direction),
        AttachmentStatus: _enum_column(AttachmentStatus),
        str: String(255),
    }


class User(Base):
    __tablename__ = "users"

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(120), unique=True)
    role: Mapped[Role]
    subscribe_all: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[created]

    teams: Mapped[list[UserTeam]] = relationship(cascade="all, delete-orphan", lazy="selectin")

    @property
    def team_names(self) -> list[str]:
        return sorted(t.team for t in self.teams)


class UserTeam(Base):
    __tablename__ = "user_teams"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    team: Mapped[str] = mapped_column(String(120), primary_key=True)


class ApiToken(Base):
    """Only the SHA-256 of a token is kept; the token itself is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[intpk]
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[created]
    last_used_at: Mapped[dt.datetime | None]

    user: Mapped[User] = relationship(lazy="joined")


class Folder(Base):
    """A customer folder: a customer account with its phones and its two resources."""

    __tablename__ = "folders"

    id: Mapped[intpk]
    external_id: Mapped[str] = mapped_column(String(120), unique=True)
    name: Mapped[str]
    sales_resource: Mapped[str | None] = mapped_column(String(120))
    service_resource: Mapped[str | None] = mapped_column(String(120))
    created_at: Mapped[created]
    updated_at: Mapped[created]

    phones: Mapped[list[FolderPhone]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="FolderPhone.id"
    )


class FolderPhone(Base):
    __tablename__ = "folder_phones"
    __table_args__ = (UniqueConstraint("folder_id", "number"),)

    id: Mapped[intpk]
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"))
    number: Mapped[e164] = mapped_column(index=True)


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[intpk]
    number: Mapped[e164] = mapped_column(unique=True)
    number_kind: Mapped[str] = mapped_column(String(16), default="e164")
    name: Mapped[str | None]
    opted_out: Mapped[bool] = mapped_column(default=False)
    opted_out_at: Mapped[dt.datetime | None]
    # Arrival time of the STOP/START last applied: an older one handled later is ignored.
    keyword_at: Mapped[dt.datetime | None]
    created_at: Mapped[created]


class InboundEvent(Base):
    """A carrier webhook exactly as it arrived, committed before the carrier is answered."""

    __tablename__ = "inbound_events"
    __table_args__ = (
        UniqueConstraint("carrier", "carrier_message_id"),
        Index("ix_inbound_events_pending", "status", "received_at"),
    )

    id: Mapped[intpk]
    carrier: Mapped[str] = mapped_column(String(64))
    carrier_message_id: Mapped[str] = mapped_column(String(64))
    from_number: Mapped[e164]
    from_kind: Mapped[str] = mapped_column(String(16))
    to_number: Mapped[e164]
    payload: Mapped[dict[str, Any]]
    status: Mapped[EventStatus] = mapped_column(default=EventStatus.received)
    received_at: Mapped[created]
    enqueued_at: Mapped[dt.datetime | None]
    processed_at: Mapped[dt.datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        # At most one open conversation per business number and contact: the database,
        # not the worker, settles two texts from one sender processed at once.
        Index(
            "uq_conversations_open_thread",
            "business_number",
            "contact_id",
            unique=True,
            sqlite_where=text("status != 'closed'"),
            postgresql_where=text("status != 'closed'"),
        ),
        Index("ix_conversations_activity", "last_message_at", "id"),
    )

    id: Mapped[intpk]
    business_number: Mapped[e164]
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), index=True)
    status: Mapped[ConversationStatus] = mapped_column(default=ConversationStatus.unassigned)
    team: Mapped[str] = mapped_column(String(120))
    folder_id: Mapped[int | None] = mapped_column(ForeignKey("folders.id", ondelete="SET NULL"), index=True)
    folder_match: Mapped[FolderMatch] = mapped_column(default=FolderMatch.none)
    candidate_folder_ids: Mapped[list[int]] = mapped_column(default=list)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    unread: Mapped[bool] = mapped_column(default=True)
    last_message_at: Mapped[created]
    last_message_direction: Mapped[Direction | None]
    created_at: Mapped[created]
    closed_at: Mapped[dt.datetime | None]

    contact: Mapped[Contact] = relationship(lazy="joined", innerjoin=True)
    folder: Mapped[Folder | None] = relationship(lazy="joined")


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_thread", "conversation_id", "created_at", "id"),
        # The outbound sweeper's query: only the few messages not yet handed to a carrier.
        Index(
            "ix_messages_unsent",
            "created_at",
            sqlite_where=text("send_state IN ('pending', 'in_flight')"),
            postgresql_where=text("send_state IN ('pending', 'in_flight')"),
        ),
        # A number's sender claims its due texts in order (gateway/number_sender.py).
        Index(
            "ix_messages_due",
            "from_number",
            "id",
            sqlite_where=text("send_state = 'pending'"),
            postgresql_where=text("send_state = 'pending'"),
        ),
        UniqueConstraint("inbound_event_id"),
        UniqueConstraint("carrier_message_id"),
    )

    id: Mapped[intpk]
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    inbound_event_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_events.id"))
    direction: Mapped[Direction]
    body: Mapped[str] = mapped_column(Text, default="")
    from_number: Mapped[e164]
    to_number: Mapped[e164]
    status: Mapped[str] = mapped_column(String(16))
    segments: Mapped[int] = mapped_column(default=1)
    carrier_message_id: Mapped[str | None] = mapped_column(String(64))
    keyword: Mapped[str | None] = mapped_column(String(16))
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    error_code: Mapped[str | None] = mapped_column(String(16))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[created]
    # Set once everyone to tell about this text has been told (gateway/notifications.py);
    # the sweeper redoes inbound messages still without it.
    notified_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    # Outbound bookkeeping (gateway/outbound.py): `send_state` is the worker's own record
    # of the carrier call (pending -> in_flight -> submitted | failed), apart from the
    # delivery `status` clients see, so a redelivered task never sends twice.
    encoding: Mapped[str | None] = mapped_column(String(8))
    send_state: Mapped[str | None] = mapped_column(String(16))
    send_attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    attempted_at: Mapped[dt.datetime | None]

    attachments: Mapped[list[Attachment]] = relationship(
        lazy="selectin", order_by="Attachment.position", cascade="all, delete-orphan"
    )

    @property
    def summary(self) -> str:
        return summarize(self.body, len(self.attachments))


class Attachment(Base):
    __tablename__ = "attachments"
    __table_args__ = (
        UniqueConstraint("message_id", "position"),
        Index("ix_attachments_pending", "status", "created_at"),  # the sweeper's query
    )

    id: Mapped[intpk]
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    position: Mapped[int]
    source_url: Mapped[str] = mapped_column(Text)
    declared_content_type: Mapped[str | None] = mapped_column(String(120))
    content_type: Mapped[str | None] = mapped_column(String(120))
    size: Mapped[int | None]
    sha256: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[AttachmentStatus] = mapped_column(default=AttachmentStatus.pending)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[created]
    enqueued_at: Mapped[dt.datetime | None]  # last handed to a media worker (or retried)


class Notification(Base):
    """One thing one user is told, once: the unique key turns a redelivered or raced
    notify task into a no-op. `event_key` names the event (`message:<id>` for a text,
    `assigned:<conversation>:<at>` for an assignment)."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("user_id", "kind", "event_key"),
        Index("ix_notifications_inbox", "user_id", "read_at", "id"),
    )

    id: Mapped[intpk]
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(40))
    event_key: Mapped[str] = mapped_column(String(120))
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    created_at: Mapped[created]
    read_at: Mapped[dt.datetime | None]


class EventDelivery(Base):
    """The outbox of events pushed to `[[notify.webhooks]]`: one row per event and receiver.

    Written in the transaction of the change it reports, so an event exists exactly when
    its change does. `body` holds the exact bytes sent (and signed) on every attempt, so
    the receiver sees one stable `id` however many times it is retried.
    """

    __tablename__ = "event_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "url"),
        Index("ix_event_deliveries_due", "delivered_at", "next_attempt_at"),
    )

    id: Mapped[intpk]
    event_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(String(1000))
    body: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[dt.datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[dt.datetime | None]
    abandoned_at: Mapped[dt.datetime | None]  # gave up: no 2xx within the retry window
    created_at: Mapped[created]


class FolderPhoto(Base):
    """An image attachment linked to a customer folder ("Link Image(s) to Folder")."""

    __tablename__ = "folder_photos"
    __table_args__ = (
        UniqueConstraint("folder_id", "attachment_id"),
        Index("ix_folder_photos_folder", "folder_id", "id"),  # a folder's photos, newest first
    )

    id: Mapped[intpk]
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"))
    attachment_id: Mapped[int] = mapped_column(ForeignKey("attachments.id", ondelete="CASCADE"), index=True)
    linked_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[created]

    attachment: Mapped[Attachment] = relationship(lazy="joined")


class IdempotencyKey(Base):
    """A client's `Idempotency-Key`: a repeated POST answers the message it made first."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("user_id", "key"),)

    id: Mapped[intpk]
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str]
    # SHA-256 of the first request's method, path and body: the key with another request is refused.
    request_hash: Mapped[str | None] = mapped_column(String(64))
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    created_at: Mapped[created]


class StatusEvent(Base):
    """A carrier status callback exactly as it arrived, committed before it is answered."""

    __tablename__ = "status_events"
    __table_args__ = (Index("ix_status_events_message", "carrier_message_id", "id"),)

    id: Mapped[intpk]
    carrier: Mapped[str] = mapped_column(String(64))
    carrier_message_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))          # the gateway's word, or "unknown"
    carrier_status: Mapped[str] = mapped_column(String(32))
    error_code: Mapped[str | None] = mapped_column(String(16))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    applied: Mapped[bool] = mapped_column(default=False)     # moved the message's status forward
    payload: Mapped[dict[str, Any]]
    received_at: Mapped[created]
