"""Prometheus counters and histograms, one per thing an operator asks about."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

WEBHOOKS = Counter(
    "gateway_webhooks_total",
    "Carrier webhooks by endpoint and outcome (stored, duplicate, unroutable, or the rejection).",
    ["carrier", "endpoint", "outcome"],
)
WEBHOOK_ACK_SECONDS = Histogram(
    "gateway_webhook_ack_seconds",
    "Time from request to answer for carrier webhooks that were stored.",
    ["carrier", "endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
ROUTING_OUTCOMES = Counter(
    "gateway_routing_outcomes_total", "Inbound messages threaded, by folder match.", ["folder_match"]
)
