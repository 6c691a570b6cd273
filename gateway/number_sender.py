"""Sending a business number's queued texts in batches: the outbound fast path.

`send_due` is one turn of the `send_due_messages` actor for one number, run by whichever
task holds the number's lead (gateway/send_lead.py). Each round of its loop:

1. asks the rate-limit window how many segments it admits now (gateway/ratelimit.py);
2. claims that many due texts in one transaction: a text is due when it is pending, was
   never tried, and no older text of its conversation is still unsent. One statement
   selects them (rows locked, SKIP LOCKED on PostgreSQL), one marks them in flight with
   their first attempt; texts to contacts who opted out are failed in the same
   transaction, never sent;
3. admits the batch into the window in one call, and sends it, the calls side by side;
4. settles the window's entries when every call has answered, and records the SIDs in
   one transaction.

At most one text per conversation is in a batch, and the next one becomes due only once
it is recorded, so a conversation's texts leave in the order they were created.

What the fast path does not handle it hands to the per-message actor (gateway/delivery.py
`deliver`): a temporary error's retry with backoff, an unknown outcome to reconcile with
the carrier, the sweeper's lost texts. The two paths share the claim (`send_attempts`,
`send_state`) and the rate-limit window, so a text is sent at most once and the limit
holds whichever path sends it.

Why batches: a text per task costs two task turns and two transactions, about 12 ms of
CPU, which capped the machine at ~80 sends/s; a batch shares all of that among its texts.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

import redis
from sqlalchemy import bindparam, exists, select, text, tuple_, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from gateway.broker import OUTBOUND_QUEUE
from gateway.db import is_sqlite, transaction
from gateway.delivery import (
    FAILED,
    IN_FLIGHT,
    SLEEP_IN_THREAD_MS,
    STATUS_CALLBACK_PATH,
    SUBMITTED,
    UNSENT,
    Later,
    Plan,
    apply_status,
    in_flight_hold_ms,
    record_error,
    release_attempt,
)
from gateway.messaging import OutboundMessage, SendResult
from gateway.metrics import SENDS
from gateway.models import Attachment, Contact, Conversation, Message, StatusEvent, utcnow
from gateway.ratelimit import Limit, RateLimiter
from gateway.routing.delivery import advance
from gateway.send_lead import SendLeads, leads_for
from gateway.sending import Sender, SendError, carrier_for
from gateway.settings import Settings

log = logging.getLogger(__name__)

SEND_DUE_ACTOR = "send_due_messages"
BATCH_MAX = 50              # texts claimed in one round, at most (a number without a limit)
LEAD_TTL_MS = 5_000         # a dead leader's lead expires this soon; a live one renews it
LEAD_RENEW_S = 1.0          # while its batch's carrier calls last
WAKE_AFTER = dt.timedelta(seconds=5)   # the sweeper wakes numbers whose texts waited this long
WAKE_LEAD_MS = 150          # a waiting leader wakes this early and sleeps the rest in its thread
CARRIER_CALLS = 64          # carrier calls in flight per worker process, across its numbers
OPTED_OUT = ("21610", "the contact has opted out (replied STOP)")
# Batch updates go through the table (Core executemany), not the ORM's bulk-by-key mode.
MESSAGES = Message.__table__


@dataclass(frozen=True)
class Resume:
    """Come back after `delay_ms` still holding the number's lead (`token`)."""

    delay_ms: int
    token: str


# Hands a text the fast path could not finish to the per-message actor, `Later` from now.
HandOver = Callable[[int, str, int, Later], None]


def send_due(
    sessions: sessionmaker[Session], settings: Settings, limiter: RateLimiter, leads: SendLeads,
    number: str, hand_over: HandOver, token: str | None = None,
) -> Resume | None:
    """Send the number's due texts until none is left (None), or until the window makes
    it wait longer than a thread should sleep (Resume)."""
    configured = settings.business_number(number)
    if configured is None:
        log.warning("texts queued from a number that is not configured; the sweeper hands them "
                    "to the per-message path, which fails them", extra={"business_number": number})
        return None
    token = leads.take(number, token, LEAD_TTL_MS)
    if token is None:
        return None  # another task sends for this number, and will see our texts
    turn = _Turn(
        sessions, settings, limiter, leads, number, token, carrier_for(settings, number),
        Limit(configured.max_per_second) if configured.max_per_second else None,
        in_flight_hold_ms(settings, configured), hand_over,
    )
    return turn.run()


@dataclass
class _Turn:
    """One task's turn at a number's lead."""

    sessions: sessionmaker[Session]
    settings: Settings
    limiter: RateLimiter
    leads: SendLeads
    number: str
    token: str
    sender: Sender
    limit: Limit | None
    hold_ms: int              # how long a call may count as in flight (its timeout and a grace)
    hand_over: HandOver

    def run(self) -> Resume | None:
        while True:
            room, free_at = BATCH_MAX, 0.0
            if self.limit is not None:
                free, wait_ms = self.limiter.capacity(self.number, self.limit)
                free_at = time.monotonic() + wait_ms / 1000
                if not free and wait_ms > SLEEP_IN_THREAD_MS:
                    self.leads.take(self.number, self.token, wait_ms + LEAD_TTL_MS)
                    return Resume(max(1, wait_ms - WAKE_LEAD_MS), self.token)
                # A full window frees a batch's places together (settled at one instant):
                # claim the next batch now, while it frees, so it leaves the moment it may.
                room = min(BATCH_MAX, free or self.limit.allowance)
            batch = claim_due(self.sessions, self.settings, self.number, room)
            if not batch:
                if self.leads.finish(self.number, self.token, LEAD_TTL_MS):
                    continue
                return None
            self.send_batch(batch, free_at)
            if not self.keep_lead():
                return None  # the lead expired under us and another task has it now

    def keep_lead(self) -> bool:
        return self.leads.take(self.number, self.token, LEAD_TTL_MS) is not None

    def send_batch(self, batch: list[Plan], free_at: float) -> None:
        entries: list[str] = []
        if self.limit is not None:
            entries = self.admit(batch, free_at)
            for plan in batch[len(entries):]:
                # Another sender took the places we saw coming: give these back.
                release_attempt(self.sessions, plan.outbound.message_id, 1)
            batch = batch[:len(entries)]
            if not batch:
                return
        self.sender.warm()
        try:
            outcomes = self.call_carrier(batch)
        finally:
            _settle(self.limiter, batch, entries)
        sent = [(plan, outcome) for plan, outcome in zip(batch, outcomes, strict=True)
                if isinstance(outcome, SendResult)]
        if sent:
            record_sent(self.sessions, sent)
        for plan, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, SendError):
                later = record_error(self.sessions, self.settings, plan.outbound.message_id, plan, outcome)
                if later is not None:
                    self.hand_over(plan.outbound.message_id, self.number, plan.segments, later)

    def admit(self, batch: list[Plan], free_at: float) -> list[str]:
        """The window's entries of the batch's first texts that it admits, from `free_at`
        (time.monotonic()) on, once it admits any; none if that takes over
        SLEEP_IN_THREAD_MS."""
        members = [(plan.segments, f"{plan.outbound.message_id}:1:{time.monotonic_ns()}") for plan in batch]
        give_up_at = time.monotonic() + SLEEP_IN_THREAD_MS / 1000
        while True:
            time.sleep(max(0.0, free_at - time.monotonic()))
            entries = self.limiter.admit_many(self.number, members, self.limit, self.hold_ms)
            if entries:
                return entries
            _, wait_ms = self.limiter.capacity(self.number, self.limit)
            free_at = time.monotonic() + max(1, wait_ms) / 1000
            if free_at > give_up_at:
                return []

    def call_carrier(self, batch: list[Plan]) -> list[SendResult | SendError]:
        """The batch's calls side by side; the lead is kept alive while they last, so a
        short lead TTL still outlives a slow carrier, and a dead leader's lead goes soon."""
        def call(plan: Plan) -> SendResult | SendError:
            try:
                return self.sender.send(plan.outbound)
            except SendError as exc:
                return exc

        calls = [_carrier_pool().submit(call, plan) for plan in batch]
        while wait(calls, timeout=LEAD_RENEW_S).not_done:
            if not self.keep_lead():
                log.warning("lost a number's lead during a batch; its calls finish, then it stops",
                            extra={"business_number": self.number})
        return [c.result() for c in calls]


def claim_due(sessions: sessionmaker[Session], settings: Settings, number: str, room: int) -> list[Plan]:
    """Claim up to `room` due texts of `number` (their first attempt, committed)."""
    with transaction(sessions) as session:
        while True:
            rows = session.execute(_due_query(session, number, room)).all()
            if not rows:
                return []
            _fail_opted_out(session, [row for row in rows if row.opted_out])
            due = [row for row in rows if not row.opted_out]
            if due:
                break
        ids = [row.id for row in due]
        session.execute(
            update(Message).where(Message.id.in_(ids))
            .values(send_state=IN_FLIGHT, attempted_at=utcnow(), send_attempts=1)
            .execution_options(synchronize_session=False)
        )
        media = _media_urls(session, ids)
    callback = settings.public_url + STATUS_CALLBACK_PATH
    return [
        Plan(
            outbound=OutboundMessage(
                message_id=row.id, from_number=number, to_number=row.to_number, body=row.body,
                media_urls=media.get(row.id, ()), status_callback=callback,
            ),
            segments=row.segments, send_attempts=0, reconcile_since=None, created_at=row.created_at,
            claimed=True, status=row.status,
        )
        for row in due
    ]


def _due_query(session: Session, number: str, room: int):
    older = aliased(Message)
    older_unsent = select(older.id).where(
        older.conversation_id == Message.conversation_id,
        older.send_state.in_(UNSENT),
        tuple_(older.created_at, older.id) < tuple_(Message.created_at, Message.id),
    )
    query = (
        select(Message.id, Message.to_number, Message.body, Message.segments, Message.status,
               Message.created_at, Contact.opted_out)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .join(Contact, Contact.id == Conversation.contact_id)
        # A literal, as the partial index ix_messages_due is written: a bound parameter
        # would hide the match from the planner once psycopg prepares the statement.
        .where(text("messages.send_state = 'pending'"), Message.send_attempts == 0,
               Message.from_number == number, ~exists(older_unsent))
        .order_by(Message.id)
        .limit(room)
    )
    if not is_sqlite(session):
        query = query.with_for_update(of=Message, skip_locked=True)
    return query


def _fail_opted_out(session: Session, rows) -> None:
    if not rows:
        return
    code, message = OPTED_OUT
    session.execute(
        update(MESSAGES).where(MESSAGES.c.id == bindparam("b_id"))
        .values(send_state=FAILED, status=bindparam("b_status"), error_code=code, error_message=message),
        [{"b_id": row.id, "b_status": advance(row.status, "failed")} for row in rows],
    )
    SENDS.labels("opted_out", code).inc(len(rows))
    for row in rows:
        log.info("send refused: the contact opted out", extra={"message_id": row.id})


def _media_urls(session: Session, ids: list[int]) -> dict[int, tuple[str, ...]]:
    rows = session.execute(
        select(Attachment.message_id, Attachment.source_url)
        .where(Attachment.message_id.in_(ids)).order_by(Attachment.message_id, Attachment.position)
    )
    media: dict[int, tuple[str, ...]] = {}
    for message_id, url in rows:
        media[message_id] = (*media.get(message_id, ()), url)
    return media


def _settle(limiter: RateLimiter, batch: list[Plan], entries: list[str]) -> None:
    if not entries:
        return
    try:
        limiter.settle_many(batch[0].outbound.from_number, entries)
    except Exception:
        # Left in flight, the entries block their places until their hold ends: slower,
        # never over the limit.
        log.warning("could not settle a batch's rate-limit entries", exc_info=True,
                    extra={"business_number": batch[0].outbound.from_number, "count": len(entries)})


def record_sent(sessions: sessionmaker[Session], sent: list[tuple[Plan, SendResult]]) -> None:
    """Store the carrier's SIDs of a batch in one transaction, and apply any status
    callback that beat them here."""
    sids = [result.carrier_message_id for _, result in sent]
    with transaction(sessions) as session:
        _serialize_sids(session, sids)
        session.execute(
            update(MESSAGES).where(MESSAGES.c.id == bindparam("b_id"))
            .values(send_state=SUBMITTED, carrier_message_id=bindparam("b_sid"), status=bindparam("b_status"),
                    error_code=bindparam("b_code"), error_message=bindparam("b_text")),
            [{"b_id": plan.outbound.message_id, "b_sid": result.carrier_message_id,
              "b_status": advance(plan.status, result.status), "b_code": result.error_code,
              "b_text": result.error_message} for plan, result in sent],
        )
        _apply_early_callbacks(session, sids)
    SENDS.labels("submitted", "").inc(len(sent))
    for plan, result in sent:
        log.info("message sent", extra={"message_id": plan.outbound.message_id,
                                        "carrier_message_id": result.carrier_message_id})


def _serialize_sids(session: Session, sids: list[str]) -> None:
    """As `delivery.serialize_sid`, for a batch: a status callback of one of these SIDs
    waits for this transaction, or is seen by it."""
    if not is_sqlite(session):
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(sid)) FROM unnest(CAST(:sids AS text[])) AS sid"),
            {"sids": sorted(sids)},
        )


def _apply_early_callbacks(session: Session, sids: list[str]) -> None:
    early = session.scalars(
        select(StatusEvent)
        .where(StatusEvent.carrier_message_id.in_(sids), StatusEvent.message_id.is_(None))
        .order_by(StatusEvent.id)
    ).all()
    for event in early:
        sid = event.carrier_message_id
        apply_status(session, session.scalar(select(Message).where(Message.carrier_message_id == sid)), event)


def wake(runtime, number: str) -> bool:
    """Texts for `number` are committed: see that a task sends them. False (logged) when
    Redis cannot be reached; nothing is lost, the sweeper wakes the number later."""
    if runtime.broker_down():
        return False
    leads = leads_for(runtime.redis_url)
    try:
        if not leads.wake(number):
            return True   # a leader, or a wake task on its way, will take them
    except redis.RedisError:
        runtime.mark_broker_down()
        log.warning("could not wake a number's sender; the sweeper will", exc_info=True,
                    extra={"business_number": number})
        return False
    if runtime.enqueue(OUTBOUND_QUEUE, SEND_DUE_ACTOR, number):
        return True
    try:
        leads.forget_wake(number)
    except redis.RedisError:
        log.warning("could not clear a failed wake; it expires by itself", exc_info=True,
                    extra={"business_number": number})
    return False


def wake_waiting_numbers(runtime, older_than: dt.timedelta = WAKE_AFTER) -> int:
    """The sweeper's pass: wake every number with texts never tried for `older_than`.

    A live leader only has its again flag raised (harmless); a number whose leader died
    (its lead expired) or whose wake was lost gets a task. Returns how many numbers were
    woken or flagged.
    """
    cutoff = utcnow() - older_than
    try:
        with runtime.sessions() as session:
            numbers = session.scalars(
                select(Message.from_number).distinct()
                .where(text("messages.send_state = 'pending'"), Message.send_attempts == 0,
                       Message.created_at < cutoff)
            ).all()
    except Exception:
        log.exception("could not look for numbers with waiting texts; will retry")
        return 0
    return sum(1 for number in numbers if wake(runtime, number))


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _carrier_pool() -> ThreadPoolExecutor:
    """One pool per process (built after the fork), shared by the numbers' batches."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(CARRIER_CALLS, thread_name_prefix="carrier-call")
        return _pool

