"""Outbound sending (gateway/number_sender.py, gateway/delivery.py).

`send_due_messages` sends a business number's queued texts in batches, run by the task
that holds the number's lead; creating a text wakes it. `send_outbound_message` carries
one text through what the batches hand over: a retry after a temporary carrier error, an
unknown outcome to reconcile, a text the sweeper found lost.

Waiting (for the rate-limit window, an older message of the conversation, or a retry)
re-enqueues the actor with a delay and returns; it never raises for those, so dramatiq's
retries stay for real faults (database or Redis down), where redoing the turn is harmless.
"""

from __future__ import annotations

import dramatiq

from gateway import delivery, number_sender
from gateway.broker import OUTBOUND_QUEUE
from gateway.ratelimit import limiter_for
from gateway.runtime import get_runtime
from gateway.send_lead import leads_for


@dramatiq.actor(actor_name=number_sender.SEND_DUE_ACTOR, queue_name=OUTBOUND_QUEUE, max_retries=50)
def send_due_messages(number: str, token: str | None = None) -> None:
    runtime = get_runtime()
    resume = number_sender.send_due(
        runtime.sessions, runtime.settings, limiter_for(runtime.redis_url), leads_for(runtime.redis_url),
        number, _hand_over, token,
    )
    if resume is not None:
        send_due_messages.send_with_options(args=(number, resume.token), delay=resume.delay_ms)


@dramatiq.actor(actor_name=delivery.SEND_ACTOR, queue_name=OUTBOUND_QUEUE, max_retries=50)
def send_outbound_message(message_id: int, slot_ms: int | None = None, route: list | None = None) -> None:
    runtime = get_runtime()
    later = delivery.deliver(
        runtime.sessions, runtime.settings, limiter_for(runtime.redis_url), message_id, slot_ms, route
    )
    if later is not None:
        route = list(later.route) if later.route else None
        send_outbound_message.send_with_options(args=(message_id, later.slot_ms, route), delay=later.delay_ms)
    else:
        # Done with this text: the next one of its conversation is due now.
        number = route[0] if route else delivery.business_number_of(runtime.sessions, message_id)
        if number:
            number_sender.wake(runtime, number)


def _hand_over(message_id: int, number: str, segments: int, later: delivery.Later) -> None:
    send_outbound_message.send_with_options(args=(message_id, None, [number, segments]), delay=later.delay_ms)
