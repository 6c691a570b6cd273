"""Every Redis key the gateway itself uses, built and documented in one place.

dramatiq owns its own keys under its namespace (`dramatiq:*`: queues, delay queues,
`__acks__.<worker>.<queue>` sets and the `__heartbeats__` sorted set); the gateway only
touches `__heartbeats__`, to keep a busy worker alive (see gateway/workers/middleware.py).

    dramatiq:__heartbeats__      zset  broker id -> last heartbeat (ms); owned by dramatiq
"""

from __future__ import annotations

DRAMATIQ_NAMESPACE = "dramatiq"


def dramatiq_heartbeats(namespace: str = DRAMATIQ_NAMESPACE) -> str:
    return f"{namespace}:__heartbeats__"
