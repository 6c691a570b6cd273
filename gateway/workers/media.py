"""MMS media: download one attachment from the carrier and keep it (gateway/media.py)."""

from __future__ import annotations

import logging

import dramatiq

from gateway import media
from gateway.broker import MEDIA_QUEUE
from gateway.runtime import get_runtime

log = logging.getLogger(__name__)

# Twilio's media may 404 for a moment after the webhook: the first retry comes soon.
MIN_BACKOFF_MS = 5_000
MAX_BACKOFF_MS = 60_000


@dramatiq.actor(
    actor_name=media.FETCH_ATTACHMENT_ACTOR, queue_name=MEDIA_QUEUE,
    min_backoff=MIN_BACKOFF_MS, max_backoff=MAX_BACKOFF_MS,
)
def fetch_attachment(attachment_id: int) -> None:
    try:
        media.fetch_attachment(get_runtime(), attachment_id)
    except media.RetryableMediaError as exc:
        log.info("attachment download will be retried",
                 extra={"attachment_id": attachment_id, "reason": exc.reason})
        # Retry: backoff as for any failure, without an error-level traceback in the log.
        raise dramatiq.Retry(exc.reason) from None
