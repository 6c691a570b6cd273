"""Notifications: tell the people responsible for a new text (gateway/notifications.py)."""

from __future__ import annotations

import dramatiq

from gateway import notifications
from gateway.broker import NOTIFY_QUEUE
from gateway.runtime import get_runtime


@dramatiq.actor(actor_name=notifications.NOTIFY_INBOUND_ACTOR, queue_name=NOTIFY_QUEUE)
def notify_inbound(message_id: int) -> None:
    runtime = get_runtime()
    notifications.notify_inbound(runtime.sessions, runtime.settings, message_id)
