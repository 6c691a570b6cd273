"""Prometheus metrics, one per thing an operator asks about.

Where each number comes from:

- Counters of things that happen (webhooks, routing outcomes, sends, media failures) are
  counted in the process where they happen. Under gunicorn and dramatiq that is several
  processes, so both run prometheus_client's *multiprocess mode*: each process writes its
  values to files in `PROMETHEUS_MULTIPROC_DIR`, and a scrape sums the files.
  - web: `gunicorn.conf.py` sets the directory (a fresh one, wiped at start) before any
    worker imports prometheus_client; `GET /metrics` sums it.
  - workers: `gateway.worker_metrics` points the directory at dramatiq's Prometheus
    middleware's, whose exposition server (127.0.0.1:9191 by default) serves dramatiq's
    own metrics and the gateway's worker-side counters together.
- Backlogs (stored work not yet done) are gauges read from the database at scrape time,
  so they are right whichever process or host did the work, and survive restarts.

The mode is chosen when prometheus_client is first imported, so `MULTIPROCESS` is read
here, at import, exactly as prometheus_client reads it.
"""

from __future__ import annotations

import functools
import logging
import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select

from gateway.models import (
    Attachment,
    AttachmentStatus,
    Direction,
    EventDelivery,
    EventStatus,
    InboundEvent,
    Message,
    utcnow,
)

log = logging.getLogger(__name__)

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

WEBHOOKS = Counter(
    "gateway_webhooks_total",
    "Carrier webhooks by endpoint and outcome (stored, duplicate, unroutable, or the rejection).",
    ["carrier", "endpoint", "outcome"],
)
WEBHOOK_ACK_SECONDS = Histogram(
    "gateway_webhook_ack_seconds",
    "Time from request to answer for carrier webhooks that were stored.",
    ["carrier", "endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15),
)


# The webhook's children, looked up once per process and label set: `labels()` validates
# and locks on every call, ~3 us a webhook on the ingest path (issue 6). The label values
# come from fixed sets (carriers, endpoints, outcome codes), so the caches stay small.
@functools.lru_cache(maxsize=512)
def webhook_outcome(carrier: str, endpoint: str, outcome: str):
    return WEBHOOKS.labels(carrier, endpoint, outcome)


@functools.lru_cache(maxsize=64)
def webhook_ack_seconds(carrier: str, endpoint: str):
    return WEBHOOK_ACK_SECONDS.labels(carrier, endpoint)


WEBHOOK_STORE_RETRIES = Counter(
    "gateway_webhook_store_retries_total",
    "Commits of an inbound webhook retried inside the request because the database did not answer.",
)
ROUTING_OUTCOMES = Counter(
    "gateway_routing_outcomes_total", "Inbound messages threaded, by folder match.", ["folder_match"]
)
SENDS = Counter(
    "gateway_sends_total",
    "Carrier send calls by outcome (submitted, retry, unknown, failed, reconciled) and carrier error code.",
    ["outcome", "error_code"],
)
MEDIA_FAILURES = Counter(
    "gateway_media_failures_total",
    "Attachment downloads that did not store the file, by outcome (retry, failed) and reason.",
    ["outcome", "reason"],
)

# Media failure reasons are sentences with hosts and sizes in them: a label takes their
# kind, so the series stay few.
_MEDIA_REASONS = (
    ("gave up after", "gave_up"),
    ("not an allowed media host", "host_not_allowed"),
    ("non-public address", "host_not_allowed"),
    ("not an http(s) URL", "host_not_allowed"),
    ("redirects", "too_many_redirects"),
    ("bytes is over", "too_large"),
    ("larger than", "too_large"),
    ("content type", "bad_type"),
    ("the bytes are not", "bad_type"),
    ("compressed body", "bad_type"),
    ("empty file", "empty"),
    ("not found yet", "not_found"),
    ("media host answered", "http_error"),
    ("did not answer in time", "timeout"),
    ("read timeout", "timeout"),
    ("download timeout", "timeout"),
    ("cannot connect", "unreachable"),
    ("cannot resolve", "unreachable"),
    ("connection broken", "unreachable"),
)


def media_reason(reason: str) -> str:
    """The kind of a media failure reason, for the `reason` label."""
    return next((kind for text, kind in _MEDIA_REASONS if text in reason), "other")


# --- scraping ----------------------------------------------------------------------------


def render(runtime) -> bytes:
    """The text a scrape gets: this service's counters, then the backlogs from the database."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        counters = generate_latest(registry)
    else:
        counters = generate_latest(REGISTRY)
    backlog = CollectorRegistry()
    backlog.register(BacklogCollector(runtime))
    return counters + generate_latest(backlog)


class BacklogCollector:
    """Stored work not yet done, read from the database at scrape time."""

    def __init__(self, runtime):
        self.runtime = runtime

    def collect(self):
        up = GaugeMetricFamily("gateway_backlog_up", "1 when the backlogs could be read from the database.")
        try:
            families = list(self._backlogs())
        except Exception:
            log.warning("metrics: backlogs could not be read from the database", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _backlogs(self):
        now = utcnow()
        # Texts to a number this process's config lacks wait for a worker that has it (a
        # rolling deploy, gateway/inbound.py): counted apart, so the backlog's age does not
        # climb, and alert, while they wait for the deploy.
        known = [number.number for number in self.runtime.settings.config.business_numbers]
        with self.runtime.sessions() as session:
            inbound_count, inbound_oldest = session.execute(
                select(func.count(), func.min(InboundEvent.received_at))
                .where(InboundEvent.status == EventStatus.received, InboundEvent.to_number.in_(known))
            ).one()
            waiting_for_number = session.scalar(
                select(func.count()).select_from(InboundEvent)
                .where(InboundEvent.status == EventStatus.received, InboundEvent.to_number.not_in(known))
            )
            unnotified = session.scalar(
                select(func.count()).select_from(Message)
                .join(InboundEvent, InboundEvent.id == Message.inbound_event_id)
                .where(Message.notified_at.is_(None), Message.direction == Direction.inbound,
                       InboundEvent.status == EventStatus.processed)
            )
            deliveries, deliveries_oldest = session.execute(
                select(func.count(), func.min(EventDelivery.created_at))
                .where(EventDelivery.delivered_at.is_(None), EventDelivery.abandoned_at.is_(None))
            ).one()
            unsent = session.scalar(
                select(func.count()).select_from(Message)
                .where(Message.direction == Direction.outbound,
                       Message.send_state.in_(("pending", "in_flight")))
            )
            pending_media = session.scalar(
                select(func.count()).select_from(Attachment)
                .where(Attachment.status == AttachmentStatus.pending)
            )
        yield _gauge("gateway_inbound_backlog_events",
                     "Inbound events stored and not yet processed.", inbound_count)
        yield _gauge("gateway_inbound_backlog_oldest_seconds",
                     "Age of the oldest inbound event stored and not yet processed (0 when none).",
                     _age(now, inbound_oldest))
        yield _gauge("gateway_inbound_waiting_for_number_events",
                     "Inbound events to a business number this process's config lacks, waiting up to "
                     "15 minutes for a worker that has it (not in the backlog above).", waiting_for_number)
        yield _gauge("gateway_notify_backlog_messages",
                     "Inbound messages threaded whose people have not all been notified yet.", unnotified)
        yield _gauge("gateway_event_delivery_backlog",
                     "Event webhook deliveries neither delivered nor abandoned.", deliveries)
        yield _gauge("gateway_event_delivery_backlog_oldest_seconds",
                     "Age of the oldest event webhook delivery still to deliver (0 when none).",
                     _age(now, deliveries_oldest))
        yield _gauge("gateway_outbound_backlog_messages",
                     "Outbound messages not yet accepted or refused by the carrier.", unsent)
        yield _gauge("gateway_media_backlog_attachments", "Attachments still to download.", pending_media)


def _gauge(name: str, documentation: str, value) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value or 0))


def _age(now, oldest) -> float:
    return max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
