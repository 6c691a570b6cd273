"""Worker behaviour that is not any one actor's business."""

from __future__ import annotations

import logging
import threading

from dramatiq.common import current_millis
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Middleware,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from gateway.logs import clear_message
from gateway.redis_keys import dramatiq_heartbeats

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_INTERVAL_S = 2.0
DEFAULT_TIME_LIMIT_MS = 120_000
DEFAULT_MAX_RETRIES = 20
DEFAULT_MAX_BACKOFF_MS = 60_000


def default_middleware() -> list[Middleware]:
    # dramatiq's own defaults minus Prometheus (bound separately, see the metrics issue),
    # with retries bounded so a poison event backs off instead of spinning.
    return [
        AgeLimit(),
        TimeLimit(time_limit=DEFAULT_TIME_LIMIT_MS),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(max_retries=DEFAULT_MAX_RETRIES, max_backoff=DEFAULT_MAX_BACKOFF_MS),
        CurrentMessage(),
    ]


class MessageLogContext(Middleware):
    """Each task starts with no message in its log context (gateway.logs.bind_message).

    Worker threads live for many tasks: without this, a task that names no message would
    log under the SID of the one the thread ran before.
    """

    def before_process_message(self, broker, message):
        clear_message()

    def after_process_message(self, broker, message, *, result=None, exception=None):
        clear_message()

    after_skip_message = after_process_message


class WorkerHeartbeat(Middleware):
    """Keeps this worker's heartbeat fresh while all of its threads are busy.

    dramatiq's Redis consumer only beats when it talks to Redis; with every thread busy
    and the prefetch full it goes quiet, and with the short heartbeat timeout the
    gateway uses, a live worker would look dead and its messages would be redelivered.
    A killed worker stops beating at once, which is what lets its messages come back.
    """

    def __init__(self, interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S):
        self.interval_s = interval_s
        self._stop = threading.Event()

    def after_worker_boot(self, broker, worker):
        thread = threading.Thread(target=self._beat, args=(broker,), name="heartbeat", daemon=True)
        thread.start()

    def before_worker_shutdown(self, broker, worker):
        self._stop.set()

    def _beat(self, broker) -> None:
        key = dramatiq_heartbeats(broker.namespace)
        while not self._stop.wait(self.interval_s):
            try:
                broker.client.zadd(key, {broker.broker_id: current_millis()})
            except Exception:
                log.warning("worker heartbeat failed", exc_info=True)
