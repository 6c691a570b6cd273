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
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import redis
from sqlalchemy import bindparam, exists, select, text, tuple_, update
from sqlalchemy.exc import InterfaceError, OperationalError
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
from gateway.ratelimit import IN_FLIGHT_POLL_MS, Limit, RateLimiter
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
CARRIER_CALLS = 200         # carrier calls in flight per worker process, across its numbers
CALL_START_BY_S = 1.0       # a call that cannot start this soon after admission is not made
CARRIER_BUSY_RETRY_MS = 50  # every carrier thread busy: come back this soon
IN_FLIGHT_RESUME_MS = 100   # a window held by calls still out: look again this soon
TURN_MAX_S = 30.0           # a turn hands over to the next one (dramatiq's task time limit is 120 s)
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
    try:
        return turn.run()
    except BaseException:
        # The turn failed (database or Redis down, the task's time limit): let go now, so
        # dramatiq's retry, or the sweeper's wake, carries the number on without waiting
        # out the lead. Texts this turn claimed are the per-message path's after 20 s.
        _release_lead(leads, number, token)
        raise


def _release_lead(leads: SendLeads, number: str, token: str) -> None:
    try:
        leads.release(number, token)
    except redis.RedisError:
        log.warning("could not let go of a number's lead; it expires by itself", exc_info=True,
                    extra={"business_number": number})


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
        started = time.monotonic()
        waiting_since: float | None = None
        while True:
            if time.monotonic() - started > TURN_MAX_S:
                # Well inside dramatiq's time limit for a task: a long backlog is sent by a
                # chain of turns, never cut off in the middle of a batch.
                return self.resume_in(1)
            room, free_at = BATCH_MAX, 0.0
            if self.limit is not None:
                free, wait_ms, in_flight = self.limiter.capacity(self.number, self.limit)
                if not free:
                    waiting_since = waiting_since or time.monotonic()
                    waited_ms = (time.monotonic() - waiting_since) * 1000
                    if wait_ms > SLEEP_IN_THREAD_MS or waited_ms > SLEEP_IN_THREAD_MS:
                        return self.resume_in(IN_FLIGHT_RESUME_MS if in_flight else wait_ms - WAKE_LEAD_MS)
                    if in_flight:
                        # Held by calls still out (when they answer is anyone's guess):
                        # look again shortly, and claim nothing meanwhile.
                        time.sleep(wait_ms / 1000)
                        continue
                waiting_since = None
                free_at = time.monotonic() + wait_ms / 1000
                # A full window frees a batch's places together (settled at one instant):
                # claim the next batch now, while it frees, so it leaves the moment it may.
                room = min(BATCH_MAX, free or self.limit.allowance)
            slots = _take_carrier_slots(room)
            if not slots:
                # Every carrier thread of this process is busy: a text claimed now would
                # wait for one, in flight without a call. Come back when some are free.
                return self.resume_in(CARRIER_BUSY_RETRY_MS)
            try:
                batch = claim_due(self.sessions, self.settings, self.number, slots)
            except BaseException:
                _give_back_carrier_slots(slots)
                raise
            _give_back_carrier_slots(slots - len(batch))
            if not batch:
                if self.leads.finish(self.number, self.token, LEAD_TTL_MS):
                    continue
                return None
            refused_for_ms = self.send_batch(batch, free_at)
            if refused_for_ms:
                # Its first text does not fit the window before long (more segments than
                # are free): come back when it will, rather than claim it again and again.
                return self.resume_in(refused_for_ms - WAKE_LEAD_MS)
            if not self.keep_lead():
                return None  # the lead expired under us and another task has it now

    def resume_in(self, delay_ms: int) -> Resume:
        delay_ms = max(1, int(delay_ms))
        self.leads.take(self.number, self.token, delay_ms + LEAD_TTL_MS)
        return Resume(delay_ms, self.token)

    def keep_lead(self) -> bool:
        return self.leads.take(self.number, self.token, LEAD_TTL_MS) is not None

    def send_batch(self, batch: list[Plan], free_at: float) -> int:
        """Send a claimed batch; each of its texts holds one of this process's carrier
        slots, given back as its call ends (or here, if it is never made). Returns 0, or
        when the window admitted none of it, the ms until its first text may fit."""
        entries: list[str] = []
        submitted = False
        try:
            if self.limit is not None:
                entries, wait_ms = self.admit(batch, free_at)
                refused, batch = batch[len(entries):], batch[:len(entries)]
                _give_back_carrier_slots(len(refused))
                for plan in refused:
                    # Another sender took the places we saw coming, or they do not fit yet.
                    release_attempt(self.sessions, plan.outbound.message_id, 1)
                if not batch:
                    return max(1, wait_ms)
            self.sender.warm()
            calls = self.submit_calls(batch)
            submitted = True
        finally:
            if not submitted:
                self.give_back(batch)
        try:
            outcomes = self.wait_for(calls)
        finally:
            _settle(self.limiter, batch, entries)
        self.record(batch, outcomes)
        return 0

    def give_back(self, batch: list[Plan]) -> None:
        """The batch's calls were never made (Redis or the client failed first): its texts
        go back to pending with their attempt undone, now rather than after the sweep."""
        _give_back_carrier_slots(len(batch))
        for plan in batch:
            try:
                release_attempt(self.sessions, plan.outbound.message_id, 1)
            except Exception:
                log.exception("could not give back a claimed text; the sweeper will look it up",
                              extra={"message_id": plan.outbound.message_id})

    def admit(self, batch: list[Plan], free_at: float) -> tuple[list[str], int]:
        """(the window's entries of the batch's first texts that it admits, from `free_at`
        (time.monotonic()) on, once it admits any, 0); or ([], ms until the first text
        may fit) when that is further off than SLEEP_IN_THREAD_MS."""
        members = [(plan.segments, f"{plan.outbound.message_id}:1:{time.monotonic_ns()}") for plan in batch]
        give_up_at = time.monotonic() + SLEEP_IN_THREAD_MS / 1000
        while True:
            time.sleep(max(0.0, free_at - time.monotonic()))
            entries = self.limiter.admit_many(self.number, members, self.limit, self.hold_ms)
            if entries:
                return entries, 0
            # Until the first text's segments fit: no sooner, so no spinning on Redis.
            _, wait_ms, _ = self.limiter.capacity(self.number, self.limit, need=batch[0].segments)
            wait_ms = max(wait_ms, IN_FLIGHT_POLL_MS)
            free_at = time.monotonic() + wait_ms / 1000
            if free_at > give_up_at:
                return [], wait_ms

    def submit_calls(self, batch: list[Plan]) -> list[Future]:
        start_by = time.monotonic() + CALL_START_BY_S
        sender = self.sender

        def call(plan: Plan) -> SendResult | SendError:
            try:
                if time.monotonic() > start_by:
                    # Too late to leave now: its place in the window and its claim (in flight
                    # since the claim) are stale. Nothing reached the carrier, so it is retried.
                    return SendError(True, None, "not sent: no carrier thread was free in time")
                return sender.send(plan.outbound)
            except SendError as exc:
                return exc
            except Exception:
                log.exception("carrier call failed unexpectedly; the text will be looked up at the "
                              "carrier before any resend", extra={"message_id": plan.outbound.message_id})
                return SendError(False, None, "the carrier call failed unexpectedly", unknown_outcome=True)
            finally:
                _give_back_carrier_slots(1)

        return [_carrier_pool().submit(call, plan) for plan in batch]

    def wait_for(self, calls: list[Future]) -> list[SendResult | SendError]:
        """The calls' outcomes; the lead is kept alive while they last, so a short lead TTL
        still outlives a slow carrier, and a dead leader's lead goes soon."""
        while wait(calls, timeout=LEAD_RENEW_S).not_done:
            try:
                if not self.keep_lead():
                    log.warning("lost a number's lead during a batch; its calls finish, then it stops",
                                extra={"business_number": self.number})
            except redis.RedisError:
                log.warning("could not renew a number's lead during a batch; waiting for its calls",
                            exc_info=True, extra={"business_number": self.number})
        return [call.result() for call in calls]

    def record(self, batch: list[Plan], outcomes: list[SendResult | SendError]) -> None:
        sent = [(plan, outcome) for plan, outcome in zip(batch, outcomes, strict=True)
                if isinstance(outcome, SendResult)]
        try:
            if sent:
                _retrying(lambda: record_sent(self.sessions, sent), "record a batch's SIDs")
        finally:
            # Whatever became of the SIDs, the texts that failed are handed over.
            for plan, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, SendError):
                    message_id = plan.outbound.message_id
                    later = record_error(self.sessions, self.settings, message_id, plan, outcome)
                    if later is not None:
                        self.hand_over(message_id, self.number, plan.segments, later)


def _retrying(action, what: str, attempts: int = 3, first_delay_s: float = 0.2):
    """A few quick tries: the carrier has accepted these texts, and a SID not recorded
    costs a lookup at the carrier later."""
    delay = first_delay_s
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except (OperationalError, InterfaceError):
            if attempt == attempts:
                raise
            log.warning(f"could not {what}; trying again", exc_info=True, extra={"retry_in_s": delay})
            time.sleep(delay)
            delay *= 4


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
        ours = _still_ours(session, [plan for plan, _ in sent])
        for plan, result in sent:
            if plan.outbound.message_id not in ours:
                # Another path took the text since our claim: never overwrite what it stored.
                log.error("a text sent by a batch was taken over meanwhile; its SID is not recorded",
                          extra={"message_id": plan.outbound.message_id,
                                 "carrier_message_id": result.carrier_message_id})
        sent = [(plan, result) for plan, result in sent if plan.outbound.message_id in ours]
        if sent:
            session.execute(
                update(MESSAGES).where(MESSAGES.c.id == bindparam("b_id"))
                .values(send_state=SUBMITTED, carrier_message_id=bindparam("b_sid"),
                        status=bindparam("b_status"), error_code=bindparam("b_code"),
                        error_message=bindparam("b_text")),
                [{"b_id": plan.outbound.message_id, "b_sid": result.carrier_message_id,
                  "b_status": advance(plan.status, result.status), "b_code": result.error_code,
                  "b_text": result.error_message} for plan, result in sent],
            )
            _apply_early_callbacks(session, [result.carrier_message_id for _, result in sent])
    SENDS.labels("submitted", "").inc(len(sent))
    for plan, result in sent:
        log.info("message sent", extra={"message_id": plan.outbound.message_id,
                                        "carrier_message_id": result.carrier_message_id})


def _still_ours(session: Session, plans: list[Plan]) -> set[int]:
    """The ids of these texts still in flight on the attempt their batch claimed (locked)."""
    query = select(MESSAGES.c.id, MESSAGES.c.send_attempts).where(
        MESSAGES.c.id.in_([plan.outbound.message_id for plan in plans]), MESSAGES.c.send_state == IN_FLIGHT)
    if not is_sqlite(session):
        query = query.with_for_update()
    attempts = dict(session.execute(query).all())
    return {plan.outbound.message_id for plan in plans
            if attempts.get(plan.outbound.message_id) == plan.send_attempts + 1}


def _serialize_sids(session: Session, sids: list[str]) -> None:
    """As `delivery.serialize_sid`, for a batch: a status callback of one of these SIDs
    waits for this transaction, or is seen by it."""
    if not is_sqlite(session):
        session.execute(
            # In the order of the locks' keys: two batches never wait on each other crosswise.
            text("SELECT pg_advisory_xact_lock(key) FROM (SELECT DISTINCT hashtext(sid) AS key "
                 "FROM unnest(CAST(:sids AS text[])) AS sid ORDER BY key) AS keys"),
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
# One per carrier thread: a batch claims only as many texts as it holds slots, so no
# claimed text waits in the pool's queue (in flight, with no call made).
_carrier_slots = threading.BoundedSemaphore(CARRIER_CALLS)


def _take_carrier_slots(wanted: int) -> int:
    taken = 0
    while taken < wanted and _carrier_slots.acquire(blocking=False):
        taken += 1
    return taken


def _give_back_carrier_slots(count: int) -> None:
    for _ in range(count):
        _carrier_slots.release()


def _carrier_pool() -> ThreadPoolExecutor:
    """One pool per process (built after the fork), shared by the numbers' batches."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(CARRIER_CALLS, thread_name_prefix="carrier-call")
        return _pool

