"""Outbound sending: one queued text through its carrier (gateway/delivery.py).

Waiting (for a rate-limit slot, an older message of the conversation, or a retry after a
temporary carrier error) re-enqueues this actor with a delay and returns; it never raises
for those, so dramatiq's retries stay for real faults (database or Redis down), where
redoing the turn is harmless.
"""

from __future__ import annotations

import dramatiq

from gateway import delivery
from gateway.broker import OUTBOUND_QUEUE
from gateway.ratelimit import limiter_for
from gateway.runtime import get_runtime


@dramatiq.actor(actor_name=delivery.SEND_ACTOR, queue_name=OUTBOUND_QUEUE, max_retries=50)
def send_outbound_message(message_id: int, slot_ms: int | None = None, route: list | None = None) -> None:
    runtime = get_runtime()
    later = delivery.deliver(
        runtime.sessions, runtime.settings, limiter_for(runtime.redis_url), message_id, slot_ms, route
    )
    if later is not None:
        route = list(later.route) if later.route else None
        send_outbound_message.send_with_options(args=(message_id, later.slot_ms, route), delay=later.delay_ms)
