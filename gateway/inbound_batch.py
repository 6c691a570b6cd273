"""Inbound texts in batches: many stored events threaded and notified in one transaction.

`gateway.inbound.process_event` takes one event through a dozen statements; at a few
hundred texts a second per process the round trips, not the work, are the cost. Here a
batch of events (the webhook's group commit hands over one per commit, or under load one
per several commits; the sweeper one per 100 events it finds) goes through a fixed
number of set-based statements on PostgreSQL, whatever its size: lock the events, upsert
the contacts, find or open the conversations, match folders, insert messages,
attachments and notifications, mark the events processed.

The rules of the one-event path hold:
- idempotent: only events still `received` are taken (locked, SKIP LOCKED: an event
  another worker holds is that worker's), messages are unique per event, notifications
  per (user, kind, event) — a redelivered batch finds its work done;
- one open conversation per business number and contact: conversations are found with
  FOR UPDATE and opened with INSERT ... ON CONFLICT DO NOTHING on the partial unique
  index, then read again, so two batches racing on one sender meet in one conversation;
  rows are taken in a stable order (contacts by number, conversations by contact), and a
  deadlock the database still reports is retried;
- arrival order: events are applied in (received_at, id) order; keywords change the
  contact in that order; `last_message_at` never moves back;
- closed is final: only open conversations are found, a closed one's sender gets a new one.

SQLite (the embedded default, one writer at a time) runs the one-event path in a loop.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from types import SimpleNamespace

from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from gateway import events, live
from gateway.after_commit import call_after_commit
from gateway.db import is_sqlite, transaction
from gateway.inbound import apply_opt_keyword, leave_or_give_up_unknown_number, process_event
from gateway.messaging import InboundMessage
from gateway.metrics import ROUTING_OUTCOMES
from gateway.models import Conversation, EventStatus, InboundEvent, Message, User, UserTeam, utcnow
from gateway.notifications import message_event, notify_inbound, preferences
from gateway.routing.conversations import conversation_status, needs_folder_match
from gateway.routing.folders import match_folders
from gateway.routing.keywords import OPT_IN, OPT_OUT, classify_keyword
from gateway.routing.notify import ConversationFacts, Person, inbound_recipients
from gateway.settings import Settings

log = logging.getLogger(__name__)

PROCESS_INBOUND_BATCH_ACTOR = "process_inbound_events"
# PostgreSQL's codes for a transaction it chose to abort: the whole batch is redone.
RETRYABLE_SQLSTATES = {"40P01", "40001"}  # deadlock_detected, serialization_failure
DEADLOCK_RETRIES = 3


@dataclass
class BatchResult:
    message_ids: list[int] = field(default_factory=list)
    to_notify: list[int] = field(default_factory=list)    # left to the notify worker (SQLite)
    with_media: list[int] = field(default_factory=list)   # messages with attachments to fetch


def process_events(sessions: sessionmaker[Session], settings: Settings, event_ids: list[int]) -> BatchResult:
    """Thread (and on PostgreSQL, notify) every still-received event among `event_ids`.

    If the set-based batch fails for any other reason than a deadlock, its events are
    redone one at a time, so that one event that cannot be processed (a poison event)
    holds up only itself: the others are threaded and notified, and then the error is
    raised for the task to be retried (finding the others done).
    """
    if is_sqlite(sessions.kw["bind"]):
        return _one_by_one(sessions, settings, event_ids)
    try:
        return _set_based(sessions, settings, event_ids)
    except Exception:
        if len(event_ids) == 1:
            raise
        log.exception("inbound batch failed; redoing its events one at a time",
                      extra={"events": len(event_ids)})
        return _one_by_one(sessions, settings, event_ids, notify=True)


def _set_based(sessions, settings, event_ids) -> BatchResult:
    for attempt in range(DEADLOCK_RETRIES + 1):
        try:
            with transaction(sessions) as session:
                return _Batch(session, settings).run(sorted(set(event_ids)))
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) not in RETRYABLE_SQLSTATES or attempt == DEADLOCK_RETRIES:
                raise
            log.warning("inbound batch aborted by the database; redoing it",
                        extra={"events": len(event_ids), "attempt": attempt + 1})
    raise AssertionError("unreachable")


def _one_by_one(sessions, settings, event_ids, notify: bool = False) -> BatchResult:
    """The one-event path for each event; with `notify`, notified here too (as a batch is).

    Every event is tried; the first error is raised after the others are done (their
    media tasks, if any, are then left to the sweeper's media pass).
    """
    result = BatchResult()
    failure = None
    for event_id in event_ids:
        try:
            message_id = process_event(sessions, settings, event_id)
            if message_id is not None and notify:
                notify_inbound(sessions, settings, message_id)
        except Exception as exc:
            log.exception("inbound event not processed", extra={"event_id": event_id})
            failure = failure or exc
            continue
        if message_id is not None:
            result.message_ids.append(message_id)
            result.with_media.append(message_id)
            if not notify:
                result.to_notify.append(message_id)
    if failure is not None:
        for message_id in result.to_notify:  # the task fails: nobody would enqueue these
            notify_inbound(sessions, settings, message_id)
        raise failure
    return result


@dataclass
class _Event:
    id: int
    sid: str
    from_number: str
    from_kind: str
    to_number: str
    received_at: dt.datetime
    inbound: InboundMessage
    business_number: object
    keyword: str | None = None
    contact_id: int | None = None
    conversation_id: int | None = None


class _Batch:
    """One batch in one transaction; each step is a fixed number of statements."""

    def __init__(self, session: Session, settings: Settings):
        self.session = session
        self.settings = settings
        self.now = utcnow()

    def run(self, event_ids: list[int]) -> BatchResult:
        events_ = self._lock_events(event_ids)
        routable = [e for e in events_ if e.business_number is not None]
        unroutable: list[int] = []
        for event in events_:
            if event.business_number is None:
                leave_or_give_up_unknown_number(event.id, event.to_number, event.received_at,
                                                lambda event=event: unroutable.append(event.id))
        result = BatchResult()
        if routable:
            contacts = self._contacts(routable)
            conversations = self._conversations(routable, contacts)
            self._apply_keywords(routable, contacts)
            self._match_folders(conversations, contacts)
            self._update_conversations(routable, conversations)
            messages = self._insert_messages(routable)
            result.with_media = self._insert_attachments(routable, messages)
            self._notify(routable, conversations, messages)
            result.message_ids = sorted(messages.values())
            for event in routable:
                conversation = conversations[(event.business_number.number, event.contact_id)]
                ROUTING_OUTCOMES.labels(conversation["folder_match"]).inc()
                log.info("inbound message threaded", extra={
                    "message_sid": event.sid, "conversation_id": conversation["id"],
                    "folder_match": conversation["folder_match"]})
        self._mark_events([e.id for e in routable], EventStatus.processed)
        self._mark_events(unroutable, EventStatus.unroutable)
        return result

    def _execute(self, sql: str, **params):
        return self.session.execute(text(sql), params)

    def _lock_events(self, event_ids: list[int]) -> list[_Event]:
        rows = self.session.execute(
            select(InboundEvent.id, InboundEvent.carrier_message_id, InboundEvent.from_number,
                   InboundEvent.from_kind, InboundEvent.to_number, InboundEvent.received_at,
                   InboundEvent.payload)
            .where(InboundEvent.id.in_(event_ids), InboundEvent.status == EventStatus.received)
            .order_by(InboundEvent.id)
            .with_for_update(skip_locked=True)
        ).all()
        events_ = [
            _Event(row.id, row.carrier_message_id, row.from_number, row.from_kind, row.to_number,
                   row.received_at, InboundMessage.from_payload(row.payload),
                   self.settings.business_number(row.to_number))
            for row in rows
        ]
        return sorted(events_, key=lambda e: (e.received_at, e.id))  # arrival order

    def _contacts(self, events_: list[_Event]) -> dict[str, dict]:
        kinds = {e.from_number: e.from_kind for e in events_}
        numbers = sorted(kinds)
        self._execute(
            "INSERT INTO contacts (number, number_kind, opted_out, created_at) "
            "SELECT n, k, false, :now FROM unnest(CAST(:numbers AS text[]), CAST(:kinds AS text[])) "
            "AS t(n, k) ORDER BY n ON CONFLICT (number) DO NOTHING",
            now=self.now, numbers=numbers, kinds=[kinds[n] for n in numbers],
        )
        lock = " ORDER BY id FOR UPDATE" if any(classify_keyword(e.inbound.body) for e in events_) else ""
        rows = self._execute(
            "SELECT id, number, opted_out, opted_out_at, keyword_at FROM contacts "
            "WHERE number = ANY(CAST(:numbers AS text[]))" + lock,
            numbers=numbers,
        ).mappings()
        return {row["number"]: dict(row) for row in rows}

    def _conversations(self, events_: list[_Event], contacts: dict[str, dict]) -> dict[tuple, dict]:
        first_at: dict[tuple, tuple[dt.datetime, str]] = {}
        for event in events_:
            event.contact_id = contacts[event.from_number]["id"]
            key = (event.business_number.number, event.contact_id)
            first_at.setdefault(key, (event.received_at, event.business_number.team))
        found = self._open_conversations(sorted(first_at))
        missing = sorted((k for k in first_at if k not in found), key=lambda k: (k[1], k[0]))
        if missing:
            self._execute(
                "INSERT INTO conversations (business_number, contact_id, status, team, folder_match, "
                "candidate_folder_ids, unread, last_message_at, created_at) "
                "SELECT b, c, 'unassigned', t, 'none', CAST('[]' AS json), true, a, a "
                "FROM unnest(CAST(:numbers AS text[]), CAST(:contacts AS bigint[]), CAST(:teams AS text[]), "
                "CAST(:ats AS timestamptz[])) AS v(b, c, t, a) "
                "ON CONFLICT (business_number, contact_id) WHERE status != 'closed' DO NOTHING",
                numbers=[k[0] for k in missing], contacts=[k[1] for k in missing],
                teams=[first_at[k][1] for k in missing], ats=[first_at[k][0] for k in missing],
            )
            found.update(self._open_conversations(missing))
        return found

    def _open_conversations(self, keys: list[tuple]) -> dict[tuple, dict]:
        rows = self._execute(
            "SELECT c.id, c.business_number, c.contact_id, c.team, c.folder_id, c.assignee_id, "
            "c.folder_match, "
            "CAST(c.candidate_folder_ids AS text) AS candidate_folder_ids, c.status, c.last_message_at, "
            "c.last_message_direction FROM conversations c "
            "JOIN unnest(CAST(:numbers AS text[]), CAST(:contacts AS bigint[])) AS k(b, c) "
            "ON c.business_number = k.b AND c.contact_id = k.c "
            "WHERE c.status != 'closed' ORDER BY c.contact_id, c.id FOR UPDATE OF c",
            numbers=[k[0] for k in keys], contacts=[k[1] for k in keys],
        ).mappings()
        return {(row["business_number"], row["contact_id"]): dict(row) for row in rows}

    def _apply_keywords(self, events_: list[_Event], contacts: dict[str, dict]) -> None:
        changed = {}
        for event in sorted(events_, key=lambda e: (e.received_at, e.id)):  # arrival order
            event.keyword = classify_keyword(event.inbound.body)
            if event.keyword not in (OPT_OUT, OPT_IN):
                continue
            contact = SimpleNamespace(**contacts[event.from_number])
            if apply_opt_keyword(contact, event.keyword, event.received_at):
                contacts[event.from_number] = vars(contact)
                changed[contact.id] = (contact.opted_out, contact.opted_out_at, contact.keyword_at)
        if changed:
            ids = sorted(changed)
            self._execute(
                "UPDATE contacts SET opted_out = v.o, opted_out_at = v.a, keyword_at = v.k "
                "FROM unnest(CAST(:ids AS bigint[]), CAST(:outs AS boolean[]), CAST(:ats AS timestamptz[]), "
                "CAST(:kats AS timestamptz[])) AS v(id, o, a, k) WHERE contacts.id = v.id",
                ids=ids, outs=[changed[i][0] for i in ids], ats=[changed[i][1] for i in ids],
                kats=[changed[i][2] for i in ids],
            )

    def _match_folders(self, conversations: dict[tuple, dict], contacts: dict[str, dict]) -> None:
        number_of = {c["id"]: number for number, c in contacts.items()}
        unplaced = [c for c in conversations.values() if needs_folder_match(c["folder_id"], c["assignee_id"])]
        if not unplaced:
            return
        folders_of = defaultdict(list)
        rows = self._execute(
            "SELECT number, folder_id FROM folder_phones WHERE number = ANY(CAST(:numbers AS text[]))",
            numbers=sorted({number_of[c["contact_id"]] for c in unplaced}),
        )
        for number, folder_id in rows:
            folders_of[number].append(folder_id)
        for conversation in unplaced:
            match = match_folders(folders_of[number_of[conversation["contact_id"]]])
            conversation["folder_id"] = match.folder_id
            conversation["folder_match"] = match.outcome
            conversation["candidate_folder_ids"] = json.dumps(list(match.candidate_folder_ids))
            conversation["status"] = conversation_status(match.folder_id, conversation["assignee_id"], False)

    def _update_conversations(self, events_: list[_Event], conversations: dict[tuple, dict]) -> None:
        latest: dict[int, dt.datetime] = {}
        by_id = {c["id"]: c for c in conversations.values()}
        for event in events_:
            conversation = conversations[(event.business_number.number, event.contact_id)]
            event.conversation_id = conversation["id"]
            previous = latest.get(conversation["id"], event.received_at)
            latest[conversation["id"]] = max(previous, event.received_at)
        for conversation_id, at in latest.items():
            conversation = by_id[conversation_id]
            if at >= conversation["last_message_at"]:  # a late batch never moves a thread back in time
                conversation["last_message_at"], conversation["last_message_direction"] = at, "inbound"
        rows = [by_id[i] for i in sorted(latest)]
        self._execute(
            "UPDATE conversations SET folder_id = v.f, folder_match = v.m, "
            "candidate_folder_ids = CAST(v.cf AS json), "
            "status = v.s, last_message_at = v.a, last_message_direction = v.d, unread = true "
            "FROM unnest(CAST(:ids AS bigint[]), CAST(:folders AS bigint[]), CAST(:matches AS text[]), "
            "CAST(:candidates AS text[]), CAST(:statuses AS text[]), CAST(:ats AS timestamptz[]), "
            "CAST(:directions AS text[])) AS v(id, f, m, cf, s, a, d) WHERE conversations.id = v.id",
            ids=[r["id"] for r in rows], folders=[r["folder_id"] for r in rows],
            matches=[r["folder_match"] for r in rows], candidates=[r["candidate_folder_ids"] for r in rows],
            statuses=[r["status"] for r in rows], ats=[r["last_message_at"] for r in rows],
            directions=[r["last_message_direction"] for r in rows],
        )

    def _insert_messages(self, events_: list[_Event]) -> dict[int, int]:
        """Returns message id by event id (events whose message already existed are left out)."""
        rows = self._execute(
            "INSERT INTO messages (conversation_id, inbound_event_id, direction, body, from_number, "
            "to_number, status, segments, carrier_message_id, keyword, created_at, send_attempts, "
            "notified_at) "
            "SELECT c, e, 'inbound', b, f, t, 'received', s, sid, k, a, 0, :now "
            "FROM unnest(CAST(:conversations AS bigint[]), CAST(:events AS bigint[]), "
            "CAST(:bodies AS text[]), CAST(:froms AS text[]), CAST(:tos AS text[]), "
            "CAST(:segments AS integer[]), CAST(:sids AS text[]), "
            "CAST(:keywords AS text[]), CAST(:ats AS timestamptz[])) AS v(c, e, b, f, t, s, sid, k, a) "
            "ON CONFLICT DO NOTHING RETURNING id, inbound_event_id",
            now=self.now,
            conversations=[e.conversation_id for e in events_], events=[e.id for e in events_],
            bodies=[e.inbound.body for e in events_], froms=[e.from_number for e in events_],
            tos=[e.to_number for e in events_], segments=[e.inbound.segments for e in events_],
            sids=[e.inbound.carrier_message_id for e in events_], keywords=[e.keyword for e in events_],
            ats=[e.received_at for e in events_],
        )
        return {event_id: message_id for message_id, event_id in rows}

    def _insert_attachments(self, events_: list[_Event], messages: dict[int, int]) -> list[int]:
        media = [(messages[e.id], i, m)
                 for e in events_ if e.id in messages for i, m in enumerate(e.inbound.media)]
        if not media:
            return []
        self._execute(
            "INSERT INTO attachments "
            "(message_id, position, source_url, declared_content_type, status, created_at) "
            "SELECT m, p, u, t, 'pending', :now FROM unnest(CAST(:messages AS bigint[]), "
            "CAST(:positions AS integer[]), CAST(:urls AS text[]), CAST(:types AS text[])) AS v(m, p, u, t) "
            "ON CONFLICT DO NOTHING",
            now=self.now, messages=[m[0] for m in media], positions=[m[1] for m in media],
            urls=[m[2].url for m in media], types=[m[2].content_type for m in media],
        )
        return sorted({m[0] for m in media})

    def _notify(self, events_: list[_Event], conversations: dict[tuple, dict], messages: dict[int, int]):
        """What `notifications.notify_inbound` does for one message, for the whole batch at once."""
        by_id = {c["id"]: c for c in conversations.values()}
        facts = self._facts(by_id)
        people = self._team_people({c["team"] for c in by_id.values()})
        prefs = preferences(self.settings)
        rows = []
        for event in events_:
            if event.id not in messages:
                continue
            conversation = by_id[event.conversation_id]
            recipients = inbound_recipients(
                "inbound", facts[conversation["id"]], people[conversation["team"]], prefs)
            for recipient in recipients:
                rows.append((recipient.user_id, recipient.kind, f"message:{messages[event.id]}",
                             conversation["id"], messages[event.id]))
        if rows:
            created = defaultdict(list)
            inserted = self._execute(
                "INSERT INTO notifications "
                "(user_id, kind, event_key, conversation_id, message_id, created_at) "
                "SELECT u, k, e, c, m, :now FROM unnest(CAST(:users AS bigint[]), CAST(:kinds AS text[]), "
                "CAST(:keys AS text[]), CAST(:conversations AS bigint[]), CAST(:messages AS bigint[])) "
                "AS v(u, k, e, c, m) ON CONFLICT DO NOTHING RETURNING id, user_id",
                now=self.now, users=[r[0] for r in rows], kinds=[r[1] for r in rows],
                keys=[r[2] for r in rows],
                conversations=[r[3] for r in rows], messages=[r[4] for r in rows],
            )
            for notification_id, user_id in inserted:
                created[user_id].append(notification_id)
            if created:
                call_after_commit(self.session, _publish, dict(created))
        self._emit_received(sorted(messages.values()))

    def _facts(self, conversations: dict[int, dict]) -> dict[int, ConversationFacts]:
        folder_ids = sorted({c["folder_id"] for c in conversations.values() if c["folder_id"] is not None})
        resources = {}
        if folder_ids:
            rows = self._execute(
                "SELECT f.id, s.id AS sales, v.id AS service FROM folders f "
                "LEFT JOIN users s ON s.name = btrim(f.sales_resource) "
                "LEFT JOIN users v ON v.name = btrim(f.service_resource) "
                "WHERE f.id = ANY(CAST(:ids AS bigint[]))", ids=folder_ids,
            )
            resources = {folder_id: (sales, service) for folder_id, sales, service in rows}
        return {
            c["id"]: ConversationFacts(
                team=c["team"], folder_match=c["folder_match"], assignee_id=c["assignee_id"],
                sales_resource_id=resources.get(c["folder_id"], (None, None))[0],
                service_resource_id=resources.get(c["folder_id"], (None, None))[1],
            )
            for c in conversations.values()
        }

    def _team_people(self, teams: set[str]) -> dict[str, list[Person]]:
        users = self.session.scalars(
            select(User).join(UserTeam).where(UserTeam.team.in_(sorted(teams))).distinct()
        ).all()
        people = {team: [] for team in teams}
        for user in users:
            person = Person(user.id, frozenset(user.team_names), user.subscribe_all)
            for team in person.teams & teams:
                people[team].append(person)
        return people

    def _emit_received(self, message_ids: list[int]) -> None:
        """`message.received` for the event webhooks; only read when a receiver wants it."""
        if not message_ids or not any(events.wants(w, events.MESSAGE_RECEIVED)
                                      for w in self.settings.config.notify.webhooks):
            return
        for message in self.session.scalars(select(Message).where(Message.id.in_(message_ids))):
            conversation = self.session.get(Conversation, message.conversation_id)
            events.emit(self.session, events.MESSAGE_RECEIVED, message_event(message, conversation),
                        key=f"message:{message.id}", settings=self.settings)

    def _mark_events(self, event_ids: list[int], status: EventStatus) -> None:
        if event_ids:
            self._execute(
                "UPDATE inbound_events SET status = :status, processed_at = :now, attempts = attempts + 1 "
                "WHERE id = ANY(CAST(:ids AS bigint[]))",
                status=str(status), now=self.now if status == EventStatus.processed else None, ids=event_ids,
            )


def _publish(ids_by_user: dict[int, list[int]]) -> None:
    from gateway.runtime import get_runtime

    live.publish(get_runtime().redis_url, ids_by_user)
