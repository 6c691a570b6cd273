"""Inbound processing: one stored webhook event into its conversation."""

from __future__ import annotations

import dramatiq

from gateway import inbound
from gateway.broker import INBOUND_QUEUE
from gateway.runtime import get_runtime


@dramatiq.actor(actor_name=inbound.PROCESS_INBOUND_ACTOR, queue_name=INBOUND_QUEUE)
def process_inbound_event(event_id: int) -> None:
    runtime = get_runtime()
    inbound.process_event(runtime.sessions, runtime.settings, event_id)
