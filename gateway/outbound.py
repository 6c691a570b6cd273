"""Outbound texts and notes, from a person's request to a queued message.

Everything a send can be refused for is checked here, before anything is queued, and a
refusal changes nothing (it raises inside the transaction). The message is committed
with `send_state = pending` and only then handed to the `outbound` queue; the worker
(gateway/delivery.py) takes it from there. Notes are stored and never queued.
"""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata
from dataclasses import dataclass

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.db import insert_ignoring_conflicts, transaction
from gateway.inbound import find_or_create_contact, find_or_open_conversation, match_folder
from gateway.inbox import get_visible_conversation
from gateway.models import (
    Contact,
    Conversation,
    ConversationStatus,
    Direction,
    IdempotencyKey,
    Message,
    Role,
    User,
    utcnow,
)
from gateway.notifications import notify_assigned
from gateway.phone import NumberError, normalize_number, normalize_phone
from gateway.routing.conversations import needs_folder_match
from gateway.segments import count_segments
from gateway.settings import BusinessNumberSettings, Settings

log = logging.getLogger(__name__)

MAX_BODY_CHARS = 1600   # Twilio's limit for one message, appended message included
MAX_IDEMPOTENCY_KEY = 255
MAX_MEDIA = 10          # Twilio sends at most ten media items per MMS
PENDING = "pending"     # send_state: committed, not yet handed to the carrier
QUEUED = "queued"       # the status clients see until the carrier reports progress


class SendRefused(Exception):
    """A send or note we refuse, with the HTTP status and code the API answers."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Created:
    message_id: int
    is_new: bool      # False: an Idempotency-Key repeat answered with the first message


class _Repeated(Exception):
    """Rolls back a create whose Idempotency-Key another request has just used."""


# --- composing ---------------------------------------------------------------------------


def compose_body(body: str, appended_message: str) -> str:
    """The text as it leaves: the body, then the number's appended message once, after a
    newline. A body that already ends with it (a client showing the footer) keeps one."""
    body = (body or "").rstrip()
    footer = (appended_message or "").strip()
    if not footer or body.endswith(footer):
        return body
    return f"{body}\n{footer}" if body else footer


# Letters that draw nothing: Hangul fillers, the blank Braille pattern.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
# Unicode categories that draw nothing on their own: controls, format characters
# (zero-width space, joiners, BOM), private use, and combining marks with no base.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Mn", "Me"})
_ALLOWED_CONTROLS = frozenset("\n\r\t")


def has_visible_text(body: str) -> bool:
    """False for a body that would reach the phone blank: only spaces, invisible
    characters and combining marks."""
    return any(not char.isspace() and char not in _BLANK_LETTERS
               and unicodedata.category(char) not in _INVISIBLE_CATEGORIES for char in body)


def check_text_characters(body: str) -> None:
    """Control characters other than newline, return and tab are refused: a carrier drops
    or mangles them, and NUL cannot even be stored."""
    controls = (char for char in body if unicodedata.category(char) == "Cc" and char not in _ALLOWED_CONTROLS)
    bad = next(controls, None)
    if bad is not None:
        raise SendRefused(422, "invalid_body", f"the body contains the control character U+{ord(bad):04X}")


def check_content(body: str, media_urls: list[str], appended_message: str) -> str:
    """The final body, or SendRefused for an empty, overlong or badly formed message."""
    if not isinstance(body, str):
        raise SendRefused(422, "invalid_body", "body must be a string")
    if not isinstance(media_urls, list) or not all(isinstance(u, str) for u in media_urls):
        raise SendRefused(422, "invalid_media", "media_urls must be a list of URLs")
    if len(media_urls) > MAX_MEDIA:
        raise SendRefused(422, "invalid_media", f"at most {MAX_MEDIA} media_urls per message")
    for url in media_urls:
        if not url.lower().startswith(("https://", "http://")):
            raise SendRefused(422, "invalid_media", f"media URL {url!r} is not an http(s) URL")
    check_text_characters(body)
    if not has_visible_text(body) and not media_urls:
        raise SendRefused(422, "empty_message", "a message needs a body or media")
    final = compose_body(body, appended_message)
    if len(final) > MAX_BODY_CHARS:
        raise SendRefused(
            422, "message_too_long",
            f"the message is {len(final)} characters with the appended message; "
            f"the limit is {MAX_BODY_CHARS}",
        )
    return final


def sendable_numbers(settings: Settings, user: User) -> list[BusinessNumberSettings]:
    """Admins and supervisors send from every number; an agent from their teams' numbers."""
    numbers = settings.config.business_numbers
    if user.role in (Role.admin, Role.supervisor):
        return list(numbers)
    teams = set(user.team_names)
    return [n for n in numbers if n.team in teams]


# --- creating ----------------------------------------------------------------------------


def reply(
    sessions: sessionmaker[Session], settings: Settings, user: User, conversation_id: int,
    body: str, media_urls: list[str], idempotency: Idempotency | None = None,
) -> Created:
    """Queue a reply in a conversation the user can see; the conversation becomes read."""
    return _create_once(sessions, user, idempotency, lambda session: _reply(
        session, settings, user, get_visible_conversation(session, user, conversation_id), body, media_urls,
    ))


def start(
    sessions: sessionmaker[Session], settings: Settings, user: User | None, business_number: str, to: str,
    body: str, media_urls: list[str], idempotency: Idempotency | None = None,
) -> Created:
    """Queue a text to `to` from a business number, in its open conversation or a new one.

    `user` None is the operator at the CLI: any configured number, no author.
    """
    number = _sendable_number(settings, user, business_number)
    try:
        destination = normalize_phone(to or "", settings.default_region)
    except NumberError as exc:
        raise SendRefused(422, "invalid_destination", f"'to' is not a phone number we can text: {exc}") \
            from None
    final = check_content(body, media_urls, number.appended_message)

    def create(session: Session) -> Message:
        existing = session.scalar(select(Contact).where(Contact.number == destination))
        if existing is not None and existing.opted_out:
            raise _opted_out(destination)
        contact = find_or_create_contact(session, destination, "e164")
        now = utcnow()
        conversation = find_or_open_conversation(session, number, contact, now)
        opened = not session.scalar(select(exists().where(Message.conversation_id == conversation.id)))
        if user is not None and get_visible_conversation(session, user, conversation.id) is None:
            # The contact's open thread belongs to a colleague: texting into it would
            # bypass who may see it. Say so without naming the conversation.
            raise SendRefused(409, "conversation_owned",
                              "this contact has an open conversation on that number that someone else owns")
        if needs_folder_match(conversation.folder_id, conversation.assignee_id):
            match_folder(session, conversation, contact.number)
        if opened and user is not None and conversation.team in user.team_names:
            # A team member who starts a conversation owns it (as in Chatwoot): the answer
            # comes back to them. Someone outside the number's team (an admin, say) leaves
            # it to the team's queue, where the team sees the answer.
            conversation.assignee_id, conversation.status = user.id, ConversationStatus.assigned
            session.flush()
            notify_assigned(session, conversation, user.id, settings=settings)
        return _queue(session, conversation, user, final, media_urls)

    return _create_once(sessions, user, idempotency, create)


def add_note(
    sessions: sessionmaker[Session], user: User, conversation_id: int, body: str,
    idempotency: Idempotency | None = None,
) -> Created:
    """An internal note: stored in the thread, never queued, never sent."""
    if isinstance(body, str):
        check_text_characters(body)
    if not isinstance(body, str) or not has_visible_text(body):
        raise SendRefused(422, "empty_note", "a note needs a body")
    if len(body) > MAX_BODY_CHARS:
        raise SendRefused(422, "note_too_long", f"a note is limited to {MAX_BODY_CHARS} characters")

    def create(session: Session) -> Message:
        conversation = _open_conversation(get_visible_conversation(session, user, conversation_id))
        note = Message(
            conversation_id=conversation.id, direction=Direction.note, body=body.strip(),
            from_number=conversation.business_number, to_number=conversation.business_number,
            status="note", segments=0, author_id=user.id, created_at=utcnow(),
        )
        session.add(note)
        session.flush()
        return note

    return _create_once(sessions, user, idempotency, create)


def _reply(session, settings, user, conversation, body, media_urls) -> Message:
    conversation = _open_conversation(conversation)
    number = settings.business_number(conversation.business_number)
    if number is None:
        raise SendRefused(409, "unknown_business_number",
                          f"{conversation.business_number} is no longer a configured business number")
    final = check_content(body, media_urls, number.appended_message)
    if conversation.contact.opted_out:
        raise _opted_out(conversation.contact.number)
    return _queue(session, conversation, user, final, media_urls)


def _open_conversation(conversation: Conversation | None) -> Conversation:
    if conversation is None:
        raise SendRefused(404, "not_found", "conversation not found")
    if conversation.status == ConversationStatus.closed:
        raise SendRefused(409, "conversation_closed", "the conversation is closed; start a new one")
    return conversation


def _opted_out(number: str) -> SendRefused:
    return SendRefused(409, "opted_out", f"{number} has opted out (replied STOP); they must text START first")


def _sendable_number(settings: Settings, user: User, raw: str) -> BusinessNumberSettings:
    try:
        e164 = normalize_number(raw or "", settings.default_region).value
    except NumberError as exc:
        raise SendRefused(422, "invalid_business_number", f"'business_number' is not a number: {exc}") \
            from None
    number = settings.business_number(e164)
    if number is None:
        raise SendRefused(422, "invalid_business_number", f"{e164} is not one of our business numbers")
    if user is not None and number not in sendable_numbers(settings, user):
        raise SendRefused(403, "forbidden", f"you may not send from {e164}")
    return number


def _queue(
    session: Session, conversation: Conversation, user: User | None, final: str, media_urls
) -> Message:
    from gateway.models import Attachment

    now = utcnow()
    count = count_segments(final)
    message = Message(
        conversation_id=conversation.id, direction=Direction.outbound, body=final,
        from_number=conversation.business_number, to_number=conversation.contact.number,
        status=QUEUED, segments=count.segments, encoding=count.encoding, send_state=PENDING,
        author_id=user.id if user is not None else None, created_at=now,
        attachments=[Attachment(position=i, source_url=url) for i, url in enumerate(media_urls)],
    )
    session.add(message)
    conversation.unread = False   # replying is reading
    if now >= conversation.last_message_at:
        conversation.last_message_at = now
        conversation.last_message_direction = Direction.outbound
    session.flush()
    return message


@dataclass(frozen=True)
class Idempotency:
    """A client's `Idempotency-Key` and a fingerprint of the request it came with
    (method, path and body): the same key with another request is refused, not answered
    with the first request's message."""

    key: str
    fingerprint: str

    @classmethod
    def of(cls, key: str | None, method: str, path: str, body: dict) -> Idempotency | None:
        key = (key or "").strip()
        if not key:
            return None
        if len(key) > MAX_IDEMPOTENCY_KEY:
            raise SendRefused(422, "invalid_idempotency_key",
                              f"Idempotency-Key is limited to {MAX_IDEMPOTENCY_KEY} characters")
        request = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"), default=str)
        return cls(key, hashlib.sha256(request.encode()).hexdigest())


def _create_once(sessions, user: User | None, idempotency: Idempotency | None, create) -> Created:
    """Run `create` in one transaction; with an Idempotency-Key, at most once per user."""
    if user is None:
        idempotency = None  # keys are per user; the CLI has none
    if idempotency is not None:
        first = _message_for_key(sessions, user.id, idempotency)
        if first is not None:
            return Created(first, is_new=False)
    try:
        with transaction(sessions) as session:
            message = create(session)
            if idempotency is not None:
                claimed = insert_ignoring_conflicts(
                    session, IdempotencyKey,
                    {"user_id": user.id, "key": idempotency.key, "request_hash": idempotency.fingerprint,
                     "message_id": message.id, "created_at": utcnow()},
                    index_elements=["user_id", "key"],
                )
                if claimed is None:
                    raise _Repeated()
            return Created(message.id, is_new=True)
    except _Repeated:
        # A concurrent request with the same key won: answer with its message.
        return Created(_message_for_key(sessions, user.id, idempotency), is_new=False)


def _message_for_key(sessions, user_id: int, idempotency: Idempotency) -> int | None:
    with sessions() as session:
        row = session.execute(
            select(IdempotencyKey.message_id, IdempotencyKey.request_hash)
            .where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == idempotency.key)
        ).first()
    if row is None:
        return None
    if row.request_hash is not None and row.request_hash != idempotency.fingerprint:
        raise SendRefused(422, "idempotency_key_reused",
                          "this Idempotency-Key was already used for a different request")
    return row.message_id


def pending_message_ids(sessions: sessionmaker[Session], limit: int = 500) -> list[int]:
    """Outbound messages not yet handed to the carrier, oldest first (for the sweeper)."""
    with sessions() as session:
        query = select(Message.id).where(Message.send_state == PENDING).order_by(Message.id).limit(limit)
        return list(session.scalars(query))
