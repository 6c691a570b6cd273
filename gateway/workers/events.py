"""Event webhooks: one delivery attempt per task; a failed one schedules its own retry.

The retry is a delayed message, not a raised exception: the backoff runs for up to a day
(gateway/events.py), far past dramatiq's retry limits, and a receiver's error is not
a worker's failure. The sweeper re-enqueues a delivery whose delayed retry was lost.
"""

from __future__ import annotations

import dramatiq

from gateway import events
from gateway.broker import EVENTS_QUEUE
from gateway.runtime import get_runtime


@dramatiq.actor(actor_name=events.DELIVER_EVENT_ACTOR, queue_name=EVENTS_QUEUE)
def deliver_event(delivery_id: int) -> None:
    runtime = get_runtime()
    wait = events.deliver(runtime.sessions, runtime.settings, delivery_id)
    if wait is not None:
        deliver_event.send_with_options(args=(delivery_id,), delay=int(wait.total_seconds() * 1000))
