"""Events pushed to other systems: `[[notify.webhooks]]`, signed, retried, at least once.

`emit(session, type, data)` writes one outbox row (`EventDelivery`) per configured receiver
that wants the type, in the caller's transaction: the event exists exactly when the change
it reports does. After the commit the delivery is enqueued on the `events` queue;
`deliver(...)` POSTs the stored body, signed with the receiver's secret, and on anything
but a 2xx schedules another attempt with exponential backoff, for up to `RETRY_WINDOW`.
The sweeper re-enqueues deliveries whose scheduled attempt was lost.

Event types: `message.received` (gateway/notifications.py), `message.status`,
`conversation.assigned`, `conversation.closed` (emitted by the code that makes those
changes). The body is `{"id", "type", "created_at", "data"}`; `id` is stable across
attempts (and, given a `key`, across repeated emits of one change), so the receiver can
deduplicate. The signature header is `X-Gateway-Signature: sha256=<hex HMAC-SHA256 of the
exact body bytes, keyed with the receiver's secret>`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from gateway.after_commit import call_after_commit
from gateway.broker import EVENTS_QUEUE
from gateway.db import insert_ignoring_conflicts, is_sqlite, transaction
from gateway.models import EventDelivery, utcnow
from gateway.settings import EventWebhook, Settings

log = logging.getLogger(__name__)

DELIVER_EVENT_ACTOR = "deliver_event"
SIGNATURE_HEADER = "X-Gateway-Signature"

MESSAGE_RECEIVED = "message.received"
MESSAGE_STATUS = "message.status"
CONVERSATION_ASSIGNED = "conversation.assigned"
CONVERSATION_CLOSED = "conversation.closed"

RETRY_WINDOW = dt.timedelta(hours=24)
MAX_BACKOFF = dt.timedelta(hours=1)
# Connect and read timeouts: a slow receiver holds one worker thread for at most this.
TIMEOUTS_S = (3.05, 10.0)
# An attempt in progress owns its row this long; after it (worker killed mid-request)
# the row is due again and the sweeper gives it to another worker.
ATTEMPT_LEASE = dt.timedelta(seconds=60)
# A delayed retry may be consumed a little before its time on another host's clock.
CLOCK_SLACK = dt.timedelta(seconds=2)
# A due delivery nobody attempted for this long lost its task: the sweeper re-enqueues it.
OVERDUE_AFTER = dt.timedelta(seconds=15)
EVENT_ID_NAMESPACE = uuid.UUID("5f0b6f8e-8d0c-4d55-9c56-2f3f0c6a1e10")


def emit(session: Session, type: str, data: dict, *, key: str | None = None,
         settings: Settings | None = None) -> str:
    """Record an event for every receiver that wants it; returns the event id.

    `key` names the change (e.g. `message:42`): emitting twice with one key (a redelivered
    task, two racing workers) makes one event, not two.
    """
    if settings is None:
        from gateway.runtime import get_runtime

        settings = get_runtime().settings
    event_id = "evt_" + (uuid.uuid5(EVENT_ID_NAMESPACE, f"{type}/{key}") if key else uuid.uuid4()).hex
    receivers = [w for w in settings.config.notify.webhooks if wants(w, type)]
    if not receivers:
        return event_id
    now = utcnow()
    body = json.dumps(
        {"id": event_id, "type": type, "created_at": now.isoformat().replace("+00:00", "Z"), "data": data},
        separators=(",", ":"), sort_keys=True, default=str,
    )
    for receiver in receivers:
        delivery_id = insert_ignoring_conflicts(
            session, EventDelivery,
            {"event_id": event_id, "type": type, "url": receiver.url, "body": body, "attempts": 0,
             "next_attempt_at": now, "created_at": now},
            index_elements=["event_id", "url"],
        )
        if delivery_id is not None:
            call_after_commit(session, enqueue_delivery, delivery_id)
    return event_id


def wants(receiver: EventWebhook, type: str) -> bool:
    return receiver.events is None or type in receiver.events


def enqueue_delivery(delivery_id: int) -> None:
    from gateway.runtime import get_runtime

    get_runtime().enqueue(EVENTS_QUEUE, DELIVER_EVENT_ACTOR, delivery_id)


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def backoff(attempts: int) -> dt.timedelta:
    """1 s, 2 s, 4 s ... doubling up to an hour between attempts."""
    return min(dt.timedelta(seconds=2 ** max(attempts - 1, 0)), MAX_BACKOFF)


@dataclass(frozen=True)
class Attempt:
    delivery_id: int
    event_id: str
    url: str
    body: str
    attempts: int
    created_at: dt.datetime


def deliver(sessions: sessionmaker[Session], settings: Settings, delivery_id: int) -> dt.timedelta | None:
    """One attempt; returns how long to wait before the next, or None when there is none."""
    attempt = _claim(sessions, delivery_id)
    if attempt is None:
        return None
    receiver = next((w for w in settings.config.notify.webhooks if w.url == attempt.url), None)
    if receiver is None:
        error = "no [[notify.webhooks]] entry has this url any more"
    else:
        error = post_event(attempt, receiver.secret.get_secret_value())
    return _record(sessions, attempt, error, give_up=receiver is None)


def post_event(attempt: Attempt, secret: str) -> str | None:
    """POST the stored body; None on a 2xx, else what went wrong (for admins)."""
    if urlsplit(attempt.url).scheme not in ("http", "https"):
        return "only http and https receivers are supported"
    body = attempt.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "sms-gateway-events/1",
        SIGNATURE_HEADER: sign(body, secret),
        "X-Gateway-Event-Id": attempt.event_id,
    }
    try:
        # No redirects: a receiver that moved must be reconfigured, not followed blindly.
        with requests.post(attempt.url, data=body, headers=headers, timeout=TIMEOUTS_S,
                           allow_redirects=False, stream=True) as response:
            if 200 <= response.status_code < 300:
                return None
            return f"receiver answered HTTP {response.status_code}"
    except requests.RequestException as exc:
        return without_url_secrets(f"{type(exc).__name__}: {exc}", attempt.url)


def without_url_secrets(text: str, url: str) -> str:
    """`text` (an error shown to admins and logged) without the parts of `url` that often
    carry a secret: user info, path and query (many receivers put their token there)."""
    parts = urlsplit(url)
    path = parts.path if parts.path not in ("", "/") else ""
    secrets = set(filter(None, (parts.query, path, parts.username, parts.password)))
    # requests quotes the URL again before it names it in an error: match that form too.
    secrets |= {requests.utils.requote_uri(secret) for secret in secrets}
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    return text


def _claim(sessions: sessionmaker[Session], delivery_id: int) -> Attempt | None:
    """Take the delivery if it is due and not done; a duplicate task finds it taken."""
    now = utcnow()
    with transaction(sessions) as session:
        row = session.get(EventDelivery, delivery_id, with_for_update=not is_sqlite(session))
        if row is None or row.delivered_at is not None or row.abandoned_at is not None:
            return None
        if row.next_attempt_at > now + CLOCK_SLACK:
            return None  # another task holds it, or its retry is not due yet
        row.attempts += 1
        row.next_attempt_at = now + ATTEMPT_LEASE
        return Attempt(row.id, row.event_id, row.url, row.body, row.attempts, row.created_at)


def _record(sessions, attempt: Attempt, error: str | None, give_up: bool) -> dt.timedelta | None:
    now = utcnow()
    values: dict = {"last_error": error}
    wait = None
    if error is None:
        values["delivered_at"] = now
    elif give_up or now - attempt.created_at >= RETRY_WINDOW:
        values["abandoned_at"] = now
    else:
        wait = backoff(attempt.attempts)
        values["next_attempt_at"] = now + wait
    with transaction(sessions) as session:
        session.execute(update(EventDelivery).where(EventDelivery.id == attempt.delivery_id).values(**values))
    if error is not None:
        log.warning(
            "event delivery failed",
            extra={"event_id": attempt.event_id, "delivery_id": attempt.delivery_id,
                   "attempts": attempt.attempts, "error": error, "gave_up": wait is None},
        )
    return wait


def find_overdue_deliveries(sessions: sessionmaker[Session], limit: int = 500) -> list[int]:
    """Deliveries whose attempt is overdue (task lost, worker killed); marks them due now."""
    now = utcnow()
    with transaction(sessions) as session:
        query = (
            select(EventDelivery.id)
            .where(
                EventDelivery.delivered_at.is_(None),
                EventDelivery.abandoned_at.is_(None),
                EventDelivery.next_attempt_at < now - OVERDUE_AFTER,
            )
            .order_by(EventDelivery.id)
            .limit(limit)
        )
        if not is_sqlite(session):
            query = query.with_for_update(skip_locked=True)
        ids = list(session.scalars(query))
        if ids:
            # Due now, not overdue: the next sweep leaves them to the task enqueued here.
            session.execute(update(EventDelivery).where(EventDelivery.id.in_(ids)).values(next_attempt_at=now))
    return ids


DELIVERY_FILTERS = {
    # Not delivered and the last attempt failed, whether still retrying or given up.
    "failing": lambda: EventDelivery.delivered_at.is_(None) & EventDelivery.last_error.is_not(None),
    "pending": lambda: EventDelivery.delivered_at.is_(None) & EventDelivery.abandoned_at.is_(None),
    "abandoned": lambda: EventDelivery.abandoned_at.is_not(None),
    "delivered": lambda: EventDelivery.delivered_at.is_not(None),
    "all": lambda: None,
}


def list_deliveries(session: Session, status: str, cursor: str | None, limit: int):
    """Deliveries with the given status, newest first."""
    from gateway.pagination import CursorError, newest_first

    if status not in DELIVERY_FILTERS:
        raise CursorError(f"status must be one of {', '.join(DELIVERY_FILTERS)}")
    query = select(EventDelivery)
    condition = DELIVERY_FILTERS[status]()
    if condition is not None:
        query = query.where(condition)
    return newest_first(session, query, EventDelivery.id, cursor, limit)
