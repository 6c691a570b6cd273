"""Inbound processing: one stored webhook event into its conversation."""

from __future__ import annotations

import dramatiq

from gateway import inbound, inbound_batch, media
from gateway.broker import INBOUND_QUEUE, NOTIFY_QUEUE
from gateway.notifications import NOTIFY_INBOUND_ACTOR
from gateway.runtime import get_runtime


@dramatiq.actor(actor_name=inbound.PROCESS_INBOUND_ACTOR, queue_name=INBOUND_QUEUE)
def process_inbound_event(event_id: int) -> None:
    runtime = get_runtime()
    message_id = inbound.process_event(runtime.sessions, runtime.settings, event_id)
    if message_id is not None:
        # A redelivered event returns its message again: notifying it twice is a no-op.
        # If this enqueue is lost, the sweeper finds the message not yet notified.
        runtime.enqueue(NOTIFY_QUEUE, NOTIFY_INBOUND_ACTOR, message_id)
        # Media is fetched apart, after routing: a slow or broken media host never holds
        # up the message. Lost tasks are found again by the sweeper.
        media.enqueue_pending_attachments(runtime, message_id)


@dramatiq.actor(actor_name=inbound_batch.PROCESS_INBOUND_BATCH_ACTOR, queue_name=INBOUND_QUEUE)
def process_inbound_events(event_ids: list[int]) -> None:
    """Events the webhook's group commit or the sweeper handed over: threaded and notified as one batch."""
    runtime = get_runtime()
    result = inbound_batch.process_events(runtime.sessions, runtime.settings, event_ids)
    for message_id in result.to_notify:
        runtime.enqueue(NOTIFY_QUEUE, NOTIFY_INBOUND_ACTOR, message_id)
    for message_id in result.with_media:
        media.enqueue_pending_attachments(runtime, message_id)
