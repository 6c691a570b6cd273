"""Every Redis key the gateway itself uses, built and documented in one place.

dramatiq owns its own keys under its namespace (`dramatiq:*`: queues, delay queues,
`__acks__.<worker>.<queue>` sets and the `__heartbeats__` sorted set); the gateway only
touches `__heartbeats__`, to keep a busy worker alive (see gateway/workers/middleware.py).

    dramatiq:__heartbeats__      zset  broker id -> last heartbeat (ms); owned by dramatiq

Notifications (gateway/notifications.py, gateway/live.py):

    gateway:notifications:user:<user id>   pub/sub channel  a doorbell: the comma-separated
                                           ids of that user's notifications just committed;
                                           each open stream then reads them from the database
    gateway:notify:swept:<message id>      string, 5 min TTL  set (SET NX) when the sweeper
                                           re-enqueues an un-notified message, so two sweepers
                                           or two passes do not both enqueue it
    gateway:stream-ticket:<sha256>         string, 10 min TTL  a notification stream ticket
                                           (its SHA-256, never the ticket) -> the hash of the
                                           API token it was made with (gateway/stream_tickets.py)

Outbound rate limits (gateway/ratelimit.py), one pair per business number, shared by
every worker process and host:

    gateway:ratelimit:next:<number>    string, ms   the next free send slot: a message
                                                    reserves its turn here (no polling)
    gateway:ratelimit:sends:<number>   zset         sends admitted in the last window,
                                                    member "<segments>:<message id>:<n>",
                                                    score = admission time (ms); the
                                                    gate that no window exceeds the limit
    gateway:outbound:lead:<number>     string, TTL  the task sending the number's texts
    gateway:outbound:again:<number>    string, TTL  texts queued while the lead was held
    gateway:outbound:woken:<number>    string, TTL  a wake task is on its way
                                                    (these three: gateway/send_lead.py)
    gateway:outbound:swept:<message id>  string, 5 min TTL  set (SET NX) when the sweeper
                                                    re-enqueues an unsent outbound message
"""

from __future__ import annotations

DRAMATIQ_NAMESPACE = "dramatiq"


def dramatiq_heartbeats(namespace: str = DRAMATIQ_NAMESPACE) -> str:
    return f"{namespace}:__heartbeats__"


def notification_channel(user_id: int) -> str:
    return f"gateway:notifications:user:{user_id}"


def stream_ticket(ticket_hash: str) -> str:
    return f"gateway:stream-ticket:{ticket_hash}"


def notify_swept(message_id: int) -> str:
    return f"gateway:notify:swept:{message_id}"


def send_rate_window(business_number: str) -> str:
    """Sorted set of the sends of one business number in the current rate window.

    Members are "<segments>:<message id>:<attempt>", scores the Redis server time (ms)
    the send was admitted. See gateway/ratelimit.py.
    """
    return f"gateway:ratelimit:sends:{business_number}"


def send_rate_schedule(business_number: str) -> str:
    """String: the next free send slot of a business number (Redis server time, ms)."""
    return f"gateway:ratelimit:next:{business_number}"


def outbound_swept(message_id: int) -> str:
    """String, 5 min TTL: set (SET NX) when the sweeper re-enqueues an unsent message."""
    return f"gateway:outbound:swept:{message_id}"


def send_lead(business_number: str) -> str:
    """String, TTL: the token of the task that holds the number's sending turn."""
    return f"gateway:outbound:lead:{business_number}"


def send_again(business_number: str) -> str:
    """String, TTL: set when texts were queued for the number while its lead was held."""
    return f"gateway:outbound:again:{business_number}"


def send_woken(business_number: str) -> str:
    """String, TTL: a wake task for the number is on its way (no need for another)."""
    return f"gateway:outbound:woken:{business_number}"
