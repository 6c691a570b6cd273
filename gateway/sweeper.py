"""The sweeper: nothing stored is left behind.

Every few seconds it (1) enqueues stored inbound events that no worker has taken, because
the broker was down when the webhook came or Redis lost the message, and (2) runs the
broker's maintenance, which gives a dead worker's unacknowledged messages back to their
queue. Both are safe to repeat: processing is idempotent.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from gateway import delivery, media, notifications, number_sender
from gateway.broker import DEFAULT_HEARTBEAT_TIMEOUT_MS, INBOUND_QUEUE, build_broker, run_maintenance
from gateway.inbound import find_unenqueued_events, mark_not_enqueued
from gateway.inbound_batch import PROCESS_INBOUND_BATCH_ACTOR
from gateway.runtime import Runtime

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 2.0
# The webhook enqueues right after its commit; give it this long before stepping in.
DEFAULT_GRACE = dt.timedelta(seconds=2)
# Enqueued but not processed for this long: assume the broker lost it. Long enough that
# a real backlog is not enqueued twice (harmless, but wasted work); a restarted Redis that
# forgot its queues is caught at once instead, by its changed run id.
DEFAULT_STALE_AFTER = dt.timedelta(minutes=2)
NOW = dt.timedelta(0)
SWEEP_BATCH = 100  # events per re-enqueued task (gateway/inbound_batch.py)


class Sweeper:
    def __init__(
        self,
        runtime: Runtime,
        *,
        grace=DEFAULT_GRACE,
        stale_after=DEFAULT_STALE_AFTER,
        heartbeat_timeout_ms: int = DEFAULT_HEARTBEAT_TIMEOUT_MS,
    ):
        self.runtime = runtime
        self.grace, self.stale_after = grace, stale_after
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self._maintenance_broker = None
        self._broker_run_id: str | None = None

    def sweep_once(self) -> int:
        """One pass; returns how many events it enqueued."""
        enqueued = 0
        stale_after = NOW if self._broker_forgot_its_queues() else self.stale_after
        event_ids = find_unenqueued_events(self.runtime.sessions, grace=self.grace, stale_after=stale_after)
        # A backlog (after a broker outage, say) goes to the workers in batches: the batch
        # path threads 100 events in about the time the one-event path takes for a few.
        for start in range(0, len(event_ids), SWEEP_BATCH):
            batch = event_ids[start:start + SWEEP_BATCH]
            if self.runtime.enqueue(INBOUND_QUEUE, PROCESS_INBOUND_BATCH_ACTOR, batch):
                enqueued += len(batch)
            else:
                # The broker is down: un-mark this batch and the ones after it, or they
                # would wait out `stale_after` (minutes) before the next pass tried them again.
                mark_not_enqueued(self.runtime.sessions, *event_ids[enqueued:])
                break
        if enqueued:
            log.info("sweeper re-enqueued stored events", extra={"count": enqueued})
        notifications.sweep(self.runtime)  # lost notify tasks and event deliveries
        media.sweep(self.runtime)  # attachments still pending: lost or failed tasks
        delivery.sweep(self.runtime)  # outbound texts whose send task was lost
        number_sender.wake_waiting_numbers(self.runtime)  # numbers whose leader died or wake was lost
        self._maintain_broker()
        return enqueued

    def _broker_forgot_its_queues(self) -> bool:
        """True once after Redis restarted: a new run id means whatever was queued or in
        flight before may be gone (a Redis without persistence keeps nothing), so every
        stored event not yet processed is enqueued again now, not after `stale_after`."""
        try:
            run_id = self._broker().client.info("server")["run_id"]
        except Exception:
            log.warning("broker unreachable; the sweeper will retry", exc_info=True)
            return False
        restarted = self._broker_run_id is not None and run_id != self._broker_run_id
        if restarted:
            log.warning("broker restarted: re-enqueueing every unprocessed event",
                        extra={"run_id": run_id})
        self._broker_run_id = run_id
        return restarted

    def _broker(self):
        if self._maintenance_broker is None:
            self._maintenance_broker = build_broker(
                self.runtime.redis_url,
                heartbeat_timeout_ms=self.heartbeat_timeout_ms,
                always_maintain=True,
                middleware=[],
            )
        return self._maintenance_broker

    def _maintain_broker(self) -> None:
        try:
            run_maintenance(self._broker())
        except Exception:
            log.warning("broker maintenance failed; will retry", exc_info=True)

    def run_forever(self, stop: threading.Event, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        log.info("sweeper started", extra={"interval_s": interval_s})
        while not stop.is_set():
            try:
                self.sweep_once()
            except Exception:
                log.exception("sweep failed; will retry")
            stop.wait(interval_s)
