"""Sending queued texts through the carrier, and following them with status callbacks.

`deliver` is one turn of the `outbound` actor for one message. It never sends a message
twice, whatever the broker redelivers:

- `send_state` is the worker's record of the carrier call: pending -> in_flight ->
  submitted | failed. The attempt is committed (in_flight, attempted_at, send_attempts + 1)
  by a compare-and-set on `send_attempts` *before* the carrier is called, so of two
  workers holding the same message only one calls.
- A message found in_flight is a call whose answer we never recorded (a timeout, a
  killed worker). If the call may still be running we wait; otherwise we ask the carrier
  whether it took the message before sending again.
- The sends of one conversation leave in creation order: a message waits while an older
  one of its conversation is still pending or in flight.
- Waiting for a rate-limit slot, for an older message, or for a retry re-enqueues the
  task with a delay; none of it spends dramatiq's retries. A temporary carrier error is
  retried with backoff until the retry horizon, then the message fails.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from dataclasses import dataclass

from sqlalchemy import and_, exists, select, text, tuple_, update
from sqlalchemy.orm import Session, lazyload, sessionmaker

from gateway import events
from gateway.db import is_sqlite, transaction
from gateway.logs import bind_message
from gateway.messaging import OutboundMessage, SendResult, StatusUpdate
from gateway.metrics import SENDS
from gateway.models import Contact, Conversation, Direction, Message, StatusEvent, utcnow
from gateway.notifications import message_event
from gateway.ratelimit import Limit, RateLimiter
from gateway.routing.delivery import advance
from gateway.sending import Sender, SendError, carrier_for
from gateway.settings import Settings

log = logging.getLogger(__name__)

SEND_ACTOR = "send_outbound_message"
STATUS_CALLBACK_PATH = "/webhooks/twilio/status"

PENDING, IN_FLIGHT, SUBMITTED, FAILED = "pending", "in_flight", "submitted", "failed"
UNSENT = (PENDING, IN_FLIGHT)

DEFAULT_FIRST_BACKOFF_S = 0.5
DEFAULT_MAX_BACKOFF_S = 60.0
ORDER_WAIT_S = 0.25          # an older message of the conversation is still going out
IN_FLIGHT_GRACE_S = 2.0      # beyond the carrier timeout, before an in-flight call counts as lost
SLEEP_IN_THREAD_MS = 300     # shorter rate-limit waits are slept; longer ones re-enqueue
TURN_HAS_COME = 0            # a slot in the past: go straight to the rate gate


@dataclass(frozen=True)
class Later:
    """Run this message's task again after `delay_ms`, keeping its reserved slot if any.

    `route` is (business number, segments): what the rate limit needs, carried along so a
    turn that only waits for its slot never touches the database.
    """

    delay_ms: int
    slot_ms: int | None = None
    route: tuple[str, int] | None = None


@dataclass(frozen=True)
class Plan:
    outbound: OutboundMessage
    segments: int
    send_attempts: int                    # carrier calls before this one
    reconcile_since: dt.datetime | None   # in flight with no answer: look it up first
    created_at: dt.datetime
    claimed: bool                         # this attempt is committed (in_flight) already
    status: str = "queued"                # the delivery status when it was claimed


def deliver(
    sessions: sessionmaker[Session], settings: Settings, limiter: RateLimiter, message_id: int,
    slot_ms: int | None = None, route: tuple[str, int] | None = None,
) -> Later | None:
    """One turn for one message: None when it is done (sent or failed), or when to come back.

    The order of steps keeps the send close to its admission by the rate limit: reserve a
    slot (Redis only), wait for it, claim the attempt in the database, pass the rate gate,
    call the carrier. Nothing slow sits between the gate and the call.
    """
    route = tuple(route) if route else _route(sessions, message_id)
    if route is None:
        return None
    number = settings.business_number(route[0])
    limit = Limit(number.max_per_second) if number is not None else None
    slot_at = 0.0  # time.monotonic() of this message's slot, once it is near
    if limit is not None:
        waiting = _wait_for_slot(limiter, route, limit, slot_ms)
        if isinstance(waiting, Later):
            return waiting
        slot_at = waiting
    plan = _plan(sessions, settings, message_id)
    if not isinstance(plan, Plan):
        return plan if plan is None else Later(plan.delay_ms, None, route)
    sender = carrier_for(settings, plan.outbound.from_number)
    if plan.reconcile_since is not None:
        found = _reconcile(sessions, sender, message_id, plan)
        if found is not None:
            return found or None
        if _past_horizon(settings, plan):
            _give_up(sessions, message_id, "no answer from the carrier, and not found there")
            return None
    if not plan.claimed and not _claim_attempt(sessions, message_id, plan.send_attempts):
        return None  # another worker took this attempt; it carries the message from here
    sender.warm()
    # Claimed and ready before the slot: the send leaves on time, not a transaction late.
    time.sleep(max(0.0, slot_at - time.monotonic()))
    wait_ms, admitted = _pass_gate(limiter, plan, limit, in_flight_hold_ms(settings, number))
    if wait_ms:
        # The window is full after all (a slot woken late): give the claim back and come
        # back straight to the gate (slot 0: its turn has come), not to the end of the line.
        release_attempt(sessions, message_id, plan.send_attempts + 1)
        return Later(wait_ms, TURN_HAS_COME, route)
    try:
        result = sender.send(plan.outbound)
    except SendError as exc:
        return record_error(sessions, settings, message_id, plan, exc)
    finally:
        _settle(limiter, plan, admitted)
    _record_submitted(sessions, message_id, result)
    SENDS.labels("submitted", result.error_code or "").inc()
    return None


# --- before the call ---------------------------------------------------------------------


def business_number_of(sessions, message_id: int) -> str | None:
    with sessions() as session:
        return session.scalar(select(Message.from_number).where(Message.id == message_id))


def _route(sessions, message_id: int) -> tuple[str, int] | None:
    with sessions() as session:
        row = session.execute(
            select(Message.from_number, Message.segments)
            .where(Message.id == message_id, Message.send_state.in_(UNSENT))
        ).first()
        return (row.from_number, row.segments) if row else None


def _wait_for_slot(
    limiter: RateLimiter, route: tuple[str, int], limit: Limit, slot_ms: int | None
) -> Later | float:
    """When this message's reserved slot is near, the time.monotonic() it comes at;
    else Later, to wake a little before it.

    A message waiting for its slot is re-enqueued with a delay: not a retry, and
    `send_attempts` (carrier calls) is untouched. It wakes up to one slot (at most
    SLEEP_IN_THREAD_MS) early, because a delayed task starts late by the broker's polling
    and the planning transaction, and a send that misses its slot shifts the number's
    whole schedule; at most about one task per number sleeps through that lead.
    """
    number, segments = route
    if slot_ms is None:
        slot = limiter.reserve(number, segments, limit)
        slot_ms, wait_ms = slot.at_ms, slot.wait_ms
    else:
        wait_ms = limiter.wait_for(slot_ms)
    if wait_ms > SLEEP_IN_THREAD_MS:
        lead_ms = min(SLEEP_IN_THREAD_MS, limit.interval_ms * segments)
        return Later(max(1, int(wait_ms - lead_ms)), slot_ms, route)
    return time.monotonic() + wait_ms / 1000


def in_flight_hold_ms(settings: Settings, number) -> int:
    """How long an unanswered send may count as in flight: the carrier call's timeout."""
    if number is None:
        return 0
    return _ms(settings.carrier_named(number.carrier).send_timeout_seconds + IN_FLIGHT_GRACE_S)


def _pass_gate(
    limiter: RateLimiter, plan: Plan, limit: Limit | None, hold_ms: int
) -> tuple[int, str | None]:
    """(0, entry) when the sliding window admits this send now (recorded as in flight);
    else (ms to wait, None)."""
    if limit is None:
        return 0, None
    member = f"{plan.outbound.message_id}:{plan.send_attempts}:{time.monotonic_ns()}"
    number = plan.outbound.from_number
    while (wait_ms := limiter.admit(number, plan.segments, limit, member, hold_ms)) > 0:
        if wait_ms > SLEEP_IN_THREAD_MS:
            return wait_ms, None
        time.sleep(wait_ms / 1000)
    return 0, member


def _settle(limiter: RateLimiter, plan: Plan, member: str | None) -> None:
    if member is None:
        return
    try:
        limiter.settle(plan.outbound.from_number, plan.segments, member)
    except Exception:
        # Left in flight, the entry blocks one place in the window until its hold ends:
        # slower, never over the limit.
        log.warning("could not settle a send's rate-limit entry", exc_info=True,
                    extra={"message_id": plan.outbound.message_id})


def _plan(sessions, settings: Settings, message_id: int) -> Plan | Later | None:
    with transaction(sessions) as session:
        message = session.get(Message, message_id, with_for_update=not is_sqlite(session))
        if message is None or message.direction != Direction.outbound or message.send_state not in UNSENT:
            return None
        bind_message(conversation_id=message.conversation_id, message_id=message.id)
        if _older_unsent_exists(session, message):
            return Later(_ms(ORDER_WAIT_S))
        contact = session.scalar(
            select(Contact).join(Conversation, Conversation.contact_id == Contact.id)
            .where(Conversation.id == message.conversation_id)
        )
        if contact.opted_out:
            _fail(message, "21610", "the contact has opted out (replied STOP)")
            return None
        carrier = settings.business_number(message.from_number)
        if carrier is None:
            _fail(message, "unknown_business_number", f"{message.from_number} is not a configured number")
            return None
        reconcile_since = None
        if message.send_state == IN_FLIGHT:
            timeout = settings.carrier_named(carrier.carrier).send_timeout_seconds
            busy_until = message.attempted_at + dt.timedelta(seconds=timeout + IN_FLIGHT_GRACE_S)
            if utcnow() < busy_until:
                # The call may still be waiting for its answer in another worker.
                return Later(_ms((busy_until - utcnow()).total_seconds()))
            reconcile_since = message.attempted_at
        claimed = reconcile_since is None
        if claimed:
            # The attempt is committed before the call, in this same transaction: the row
            # lock (PostgreSQL) or the write lock (SQLite) makes it ours alone.
            message.send_state, message.attempted_at = IN_FLIGHT, utcnow()
            message.send_attempts += 1
        return Plan(
            outbound=OutboundMessage(
                message_id=message.id, from_number=message.from_number, to_number=message.to_number,
                body=message.body, media_urls=tuple(a.source_url for a in message.attachments),
                status_callback=settings.public_url + STATUS_CALLBACK_PATH,
            ),
            segments=message.segments, send_attempts=message.send_attempts - (1 if claimed else 0),
            reconcile_since=reconcile_since, created_at=message.created_at, claimed=claimed,
        )


def _older_unsent_exists(session: Session, message: Message) -> bool:
    older = select(Message.id).where(
        Message.conversation_id == message.conversation_id,
        Message.direction == Direction.outbound,
        Message.send_state.in_(UNSENT),
        tuple_(Message.created_at, Message.id) < (message.created_at, message.id),
    )
    return bool(session.scalar(select(exists(older))))


def _reconcile(sessions, sender: Sender, message_id: int, plan: Plan) -> Later | bool | None:
    """Ask the carrier whether a call with no recorded answer went through.

    Returns False when it did (recorded now: done), None when it did not (send again),
    or Later when the carrier cannot be asked right now.
    """
    try:
        found = sender.find_sent(plan.outbound, plan.reconcile_since, _sids_held(sessions, plan))
    except SendError as exc:
        log.warning("could not reconcile an unanswered send; will retry",
                    extra={"message_id": message_id, "error": exc.message})
        return Later(_backoff_ms(plan.send_attempts))
    if found is None:
        log.info("unanswered send not found at the carrier; sending again", extra={"message_id": message_id})
        return None
    log.info("unanswered send found at the carrier", extra={"message_id": message_id,
                                                             "carrier_message_id": found.carrier_message_id})
    _record_submitted(sessions, message_id, found)
    SENDS.labels("reconciled", found.error_code or "").inc()
    return False


RECONCILE_MARGIN = dt.timedelta(minutes=5)


def _sids_held(sessions, plan: Plan) -> set[str]:
    """The SIDs already recorded for other texts between the same two numbers around the
    lost attempt: the carrier's copy of one of them is not this text's."""
    outbound = plan.outbound
    with sessions() as session:
        return set(session.scalars(
            select(Message.carrier_message_id).where(
                Message.to_number == outbound.to_number, Message.from_number == outbound.from_number,
                Message.id != outbound.message_id, Message.carrier_message_id.is_not(None),
                Message.attempted_at >= plan.reconcile_since - RECONCILE_MARGIN,
            )
        ))


def _claim_attempt(sessions, message_id: int, seen_attempts: int) -> bool:
    """Commit the attempt before the call; False if another worker got there first."""
    with transaction(sessions) as session:
        claimed = session.execute(
            update(Message)
            .where(Message.id == message_id, Message.send_attempts == seen_attempts,
                   Message.send_state.in_(UNSENT))
            .values(send_state=IN_FLIGHT, attempted_at=utcnow(), send_attempts=seen_attempts + 1)
        )
        return claimed.rowcount == 1


def release_attempt(sessions, message_id: int, claimed_attempts: int) -> None:
    """Undo a claim whose call was never made (the rate gate said wait)."""
    with transaction(sessions) as session:
        session.execute(
            update(Message)
            .where(Message.id == message_id, Message.send_attempts == claimed_attempts,
                   Message.send_state == IN_FLIGHT)
            .values(send_state=PENDING, send_attempts=claimed_attempts - 1)
        )


# --- after the call ----------------------------------------------------------------------


def _record_submitted(sessions, message_id: int, result: SendResult) -> None:
    with transaction(sessions) as session:
        serialize_sid(session, result.carrier_message_id)
        message = _locked(session, message_id)
        message.send_state = SUBMITTED
        message.carrier_message_id = result.carrier_message_id
        bind_message(result.carrier_message_id)
        message.status = advance(message.status, result.status)
        message.error_code, message.error_message = result.error_code, result.error_message
        # Callbacks can beat our own record of the SID: apply what was kept for it.
        early = session.scalars(
            select(StatusEvent)
            .where(StatusEvent.carrier_message_id == result.carrier_message_id,
                   StatusEvent.message_id.is_(None))
            .order_by(StatusEvent.id)
        )
        for event in early:
            apply_status(session, message, event)
    log.info("message sent",
             extra={"message_id": message_id, "carrier_message_id": result.carrier_message_id})


def record_error(sessions, settings: Settings, message_id: int, plan: Plan, exc: SendError) -> Later | None:
    attempts = plan.send_attempts + 1
    expired = _past_horizon(settings, plan)
    with transaction(sessions) as session:
        message = _locked(session, message_id)
        if message.send_state != IN_FLIGHT or message.send_attempts != attempts:
            # Taken over since this attempt was claimed (the sweeper's per-message task):
            # whoever holds it now carries it; never undo what it recorded.
            log.error("a failed send's text was taken over meanwhile; leaving it to its new attempt",
                      extra={"message_id": message_id, "code": exc.code, "error": exc.message})
            return None
        if exc.opted_out:
            contact = session.scalar(
                select(Contact).join(Conversation, Conversation.contact_id == Contact.id)
                .where(Conversation.id == message.conversation_id)
            )
            _opt_out(contact)
            _fail(message, exc.code, exc.message)
            outcome, counted = None, "opted_out"
        elif exc.unknown_outcome:
            # Left in flight, even past the horizon: it may have gone out, so the next turn
            # looks it up at the carrier, and only then sends again or gives up.
            message.error_code, message.error_message = exc.code, exc.message
            outcome, counted = Later(_backoff_ms(attempts)), "unknown"
        elif exc.retryable and not expired:
            message.send_state = PENDING
            message.error_code, message.error_message = exc.code, exc.message
            outcome, counted = Later(_backoff_ms(attempts)), "retry"
        else:
            _fail(message, exc.code, exc.message + (" (gave up: retry horizon passed)" if expired else ""))
            outcome, counted = None, "failed"
    SENDS.labels(counted, exc.code or "").inc()
    log.warning(
        "send failed" if outcome is None else "send will be retried",
        extra={"message_id": message_id, "code": exc.code, "error": exc.message, "attempts": attempts},
    )
    return outcome


def _locked(session: Session, message_id: int) -> Message:
    """The message row, locked, without its attachments (the result does not need them)."""
    query = select(Message).where(Message.id == message_id).options(lazyload(Message.attachments))
    if not is_sqlite(session):
        query = query.with_for_update(of=Message)
    return session.scalar(query)


def _past_horizon(settings: Settings, plan: Plan) -> bool:
    horizon = dt.timedelta(minutes=settings.config.gateway.send_retry_horizon_minutes)
    return utcnow() >= plan.created_at + horizon


def _give_up(sessions, message_id: int, reason: str) -> None:
    with transaction(sessions) as session:
        message = _locked(session, message_id)
        if message.send_state in UNSENT:
            _fail(message, message.error_code, f"{reason} (gave up: retry horizon passed)")
    SENDS.labels("failed", "").inc()
    log.warning("send failed", extra={"message_id": message_id, "error": reason})


def _fail(message: Message, code: str | None, text: str) -> None:
    message.send_state = FAILED
    message.status = advance(message.status, "failed")
    message.error_code, message.error_message = code, text


def _opt_out(contact: Contact) -> None:
    if not contact.opted_out:
        contact.opted_out, contact.opted_out_at = True, utcnow()


def _backoff_ms(attempts: int) -> int:
    seconds = min(DEFAULT_MAX_BACKOFF_S, DEFAULT_FIRST_BACKOFF_S * 2 ** max(0, attempts - 1))
    return _ms(seconds * random.uniform(0.8, 1.2))  # jitter: retries of a burst spread out


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


# --- status callbacks --------------------------------------------------------------------


OPTED_OUT_CODE = "21610"


def record_status(sessions: sessionmaker[Session], carrier_name: str, update_: StatusUpdate) -> StatusEvent:
    """Store a status callback and move its message forward, in one transaction.

    The callback is kept whatever it says: an unknown status or SID is recorded (and
    answered 200 by the webhook), and applied later if our record of the SID comes after.
    """
    with transaction(sessions) as session:
        serialize_sid(session, update_.carrier_message_id)
        event = StatusEvent(
            carrier=carrier_name, carrier_message_id=update_.carrier_message_id, status=update_.status,
            carrier_status=update_.carrier_status[:32], error_code=update_.error_code,
            payload=update_.raw, received_at=utcnow(),
        )
        session.add(event)
        query = select(Message).where(Message.carrier_message_id == update_.carrier_message_id)
        if not is_sqlite(session):
            query = query.with_for_update()
        message = session.scalar(query)
        if message is not None:
            apply_status(session, message, event)
        session.flush()
        return event


def serialize_sid(session: Session, carrier_message_id: str) -> None:
    """One SID at a time: a callback racing the worker's record of that SID either sees
    the message or is seen by it, never neither. (SQLite writers are serial already.)"""
    if not is_sqlite(session):
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:sid))"), {"sid": carrier_message_id})


def apply_status(session: Session, message: Message, event: StatusEvent) -> None:
    event.message_id = message.id
    moved = advance(message.status, event.status)
    event.applied = moved != message.status
    message.status = moved
    if event.error_code and (event.applied or not message.error_code):
        message.error_code = event.error_code
    if event.applied:
        _emit_status(session, message, event)
    if event.error_code == OPTED_OUT_CODE:
        contact = session.scalar(
            select(Contact).join(Conversation, and_(Conversation.contact_id == Contact.id))
            .where(Conversation.id == message.conversation_id)
        )
        _opt_out(contact)


def _emit_status(session: Session, message: Message, event: StatusEvent) -> None:
    """`message.status` to the event webhooks, once per status a message reaches."""
    conversation = session.get(Conversation, message.conversation_id)
    data = {**message_event(message, conversation), "status": message.status,
            "carrier_status": event.carrier_status, "error_code": event.error_code}
    events.emit(session, events.MESSAGE_STATUS, data, key=f"status:{message.id}:{message.status}")


# --- the sweeper's pass ------------------------------------------------------------------

SWEEP_AFTER = dt.timedelta(minutes=1)   # a retry's task not seen this long after its attempt: lost
# A call in flight this long is over (the carrier timeout is 10 s by default): its worker
# died or its answer was lost. The per-message path waits out a longer timeout itself and
# looks the text up at the carrier before any resend, so sweeping early is safe.
IN_FLIGHT_SWEEP_AFTER = dt.timedelta(seconds=20)
# Never tried: its number's sender takes it (the sweeper wakes numbers after 10 s,
# gateway/number_sender.py). This is the last net, for a text no sender ever takes (its
# number is no longer configured): long, because a slow number's backlog waits legitimately.
NEVER_TRIED_SWEEP_AFTER = dt.timedelta(minutes=10)
SWEPT_MARK_TTL_S = 300


def find_unsent_messages(sessions: sessionmaker[Session], *, older_than: dt.timedelta = SWEEP_AFTER,
                         limit: int = 500) -> list[int]:
    """Outbound messages a per-message task should take: in flight past any call's end,
    waiting for a retry whose task was lost, or never taken by their number's sender.
    `older_than` (tests pass 0) caps every one of the three ages."""
    now = utcnow()
    retry_cutoff = now - older_than
    in_flight_cutoff = now - min(older_than, IN_FLIGHT_SWEEP_AFTER)
    never_tried_cutoff = now - min(older_than, NEVER_TRIED_SWEEP_AFTER)
    with sessions() as session:
        query = (
            select(Message.id)
            # Written as the partial index ix_messages_unsent is, so the planner can use it.
            .where(text("send_state IN ('pending', 'in_flight')"))
            .where(
                ((Message.send_state == IN_FLIGHT) & (Message.attempted_at < in_flight_cutoff))
                | ((Message.send_state == PENDING) & (Message.send_attempts > 0)
                   & (Message.attempted_at < retry_cutoff))
                | ((Message.send_state == PENDING) & (Message.send_attempts == 0)
                   & (Message.created_at < never_tried_cutoff))
            )
            .order_by(Message.id).limit(limit)
        )
        return list(session.scalars(query))


def sweep(runtime, *, older_than: dt.timedelta = SWEEP_AFTER) -> int:
    """Hand lost sends back to the queue (the broker was down at enqueue, or Redis lost
    the task), each at most once per `SWEPT_MARK_TTL_S`. An extra task for a message that
    is merely waiting its turn is harmless: the attempt is claimed by compare-and-set."""
    import redis

    from gateway.broker import OUTBOUND_QUEUE
    from gateway.redis_keys import outbound_swept

    enqueued = 0
    client = redis.Redis.from_url(runtime.redis_url, socket_connect_timeout=1.0, socket_timeout=5.0)
    try:
        for message_id in find_unsent_messages(runtime.sessions, older_than=older_than):
            if not client.set(outbound_swept(message_id), "1", nx=True, ex=SWEPT_MARK_TTL_S):
                continue
            if not runtime.enqueue(OUTBOUND_QUEUE, SEND_ACTOR, message_id):
                client.delete(outbound_swept(message_id))
                break
            enqueued += 1
    except Exception:
        log.exception("outbound sweep failed; will retry")
    finally:
        client.close()
    if enqueued:
        log.info("sweeper re-enqueued unsent messages", extra={"count": enqueued})
    return enqueued
