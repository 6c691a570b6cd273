"""Live notifications: Redis pub/sub as a doorbell, the database as the source.

A worker commits a user's notifications, then publishes their ids on the user's channel
(gateway/redis_keys.py). Each open stream of that user, in whatever web process, wakes
up and reads the rows from the database, so a stream only ever shows committed rows and
a resuming client (`Last-Event-ID`) gets the same rows the live path would have sent.

Server-Sent Events, one notification per event: `id: <notification id>` and `data:` the
notification's JSON. A comment line every `HEARTBEAT_S` keeps proxies from closing an
idle stream and lets the server notice a client that went away.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator

import redis
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.models import Notification
from gateway.redis_keys import notification_channel

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0
# How long one wait for the doorbell lasts; also the database poll interval while
# Redis is unreachable, so a stream degrades to polling instead of going silent.
WAKE_S = 1.0
REPLAY_LIMIT = 500
SENT_MEMORY = 2000
REDIS_TIMEOUTS = {"socket_connect_timeout": 1.0, "socket_timeout": 5.0}

_publishers: dict[str, redis.Redis] = {}
_publishers_lock = threading.Lock()


def publish(redis_url: str, ids_by_user: dict[int, list[int]]) -> None:
    """Ring each user's doorbell with the ids of their notifications just committed."""
    client = shared_client(redis_url)
    for user_id, ids in ids_by_user.items():
        client.publish(notification_channel(user_id), ",".join(str(i) for i in ids))


def shared_client(redis_url: str) -> redis.Redis:
    """One pooled, thread-safe client per URL for short commands (not for subscribing)."""
    with _publishers_lock:
        if redis_url not in _publishers:
            _publishers[redis_url] = redis.Redis.from_url(redis_url, **REDIS_TIMEOUTS)
        return _publishers[redis_url]


class NotificationStream:
    """One client's stream. Subscribe first, then replay, so nothing falls in between."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        redis_url: str,
        user_id: int,
        after_id: int,
        to_json: Callable[[Notification], dict],
        heartbeat_s: float = HEARTBEAT_S,
        still_allowed: Callable[[], bool] = lambda: True,
    ):
        self.sessions, self.user_id, self.to_json = sessions, user_id, to_json
        self.still_allowed = still_allowed
        self.after_id, self.heartbeat_s = after_id, heartbeat_s
        self.sent: set[int] = set()
        self.client = redis.Redis.from_url(redis_url, socket_connect_timeout=1.0)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self._subscribe()

    def events(self) -> Iterator[str]:
        try:
            yield f"retry: {int(WAKE_S * 2000)}\n\n"
            yield from self._send(self._read(()))
            last_beat = time.monotonic()
            while True:
                rung = self._wait_for_doorbell()
                if rung is not None:
                    yield from self._send(self._read(rung))
                if time.monotonic() - last_beat >= self.heartbeat_s:
                    if not self.still_allowed():
                        # Its token was revoked: the stream ends, and the client's reconnect gets a 401.
                        log.info("notification stream closed: its token was revoked", extra={"user_id": self.user_id})
                        return
                    # Also a safety net: a doorbell lost to a Redis hiccup costs one beat.
                    yield from self._send(self._read(()))
                    yield ": heartbeat\n\n"
                    last_beat = time.monotonic()
        finally:
            self.close()

    def close(self) -> None:
        try:
            self.pubsub.close()
            self.client.close()
        except Exception:
            log.warning("closing a notification stream's redis connection failed", exc_info=True)

    def _subscribe(self) -> bool:
        try:
            self.pubsub.subscribe(notification_channel(self.user_id))
            return True
        except redis.RedisError:
            log.warning("notification stream cannot subscribe; polling the database",
                        extra={"user_id": self.user_id}, exc_info=True)
            return False

    def _wait_for_doorbell(self) -> tuple[int, ...] | None:
        """The ids just rung (possibly none), or None when the wait timed out quietly."""
        try:
            if not self.pubsub.subscribed and not self._subscribe():
                time.sleep(WAKE_S)  # Redis is down: fall back to polling the database
                return ()
            message = self.pubsub.get_message(timeout=WAKE_S)
        except redis.RedisError:
            log.warning("notification stream lost redis; resubscribing", exc_info=True)
            self.pubsub.reset()
            return ()
        if message is None:
            return None
        return tuple(int(i) for i in str(message["data"], "ascii").split(",") if i)

    def _read(self, rung: tuple[int, ...]) -> list[Notification]:
        """Rows after the last one sent, plus any rung id that committed out of id order."""
        newer = Notification.id > self.after_id
        wanted = or_(newer, Notification.id.in_(rung)) if rung else newer
        with self.sessions() as session:
            rows = session.scalars(
                select(Notification)
                .where(Notification.user_id == self.user_id, wanted)
                .order_by(Notification.id)
                .limit(REPLAY_LIMIT)
            )
            return [row for row in rows if row.id not in self.sent]

    def _send(self, rows: list[Notification]) -> Iterator[str]:
        for row in rows:
            self.sent.add(row.id)
            self.after_id = max(self.after_id, row.id)
            yield f"id: {row.id}\ndata: {json.dumps(self.to_json(row), separators=(',', ':'))}\n\n"
        if len(self.sent) > SENT_MEMORY:
            # Only a rung id can be at or below after_id, and only a recent one.
            self.sent = {i for i in self.sent if i > self.after_id - SENT_MEMORY // 2}
