"""Drill 1: a worker is killed with SIGKILL every few seconds during an inbound burst."""

from __future__ import annotations

import time

import pytest
import requests

from tests.conftest import wait_until
from tests.drills.conftest import (
    Burst,
    audit_inbound,
    processed_count,
    signed_webhooks,
    sized,
    wait_until_processed,
)
from tests.test_metrics import sample as metric_total

pytestmark = pytest.mark.drill

MESSAGES = sized(5000, 600)
BURST_S = sized(40.0, 15.0)  # the burst is spread over this long, so kills land while texts still arrive
KILL_EVERY_S = 3.0
MAX_KILLS = sized(40, 5)


def due_for_a_kill(gateway, started: float, done_at_start: int):
    """True once the whole burst is processed, or the worker has had its few seconds and made progress."""
    def due() -> bool:
        done = processed_count(gateway)
        return done >= MESSAGES or (time.monotonic() - started >= KILL_EVERY_S and done > done_at_start)

    return due


def test_workers_killed_every_few_seconds_during_a_burst_lose_nothing_and_double_nothing(make_gateway):
    # Given the Procfile's web, worker and scheduler on private PostgreSQL and Redis
    gateway = make_gateway()
    gateway.start_web()
    gateway.start_sweeper()
    worker = gateway.start_worker()

    # When a burst of signed webhooks comes in from 8 client threads, spread over BURST_S,
    # and the worker is SIGKILLed every few seconds (once it has made progress), a new one
    # started after each kill
    burst = Burst(gateway.base_url, signed_webhooks(MESSAGES), threads=8, rate=MESSAGES / BURST_S).start()
    kills = kills_during_ingest = 0
    while kills < MAX_KILLS:
        wait_until(due_for_a_kill(gateway, time.monotonic(), processed_count(gateway)), timeout=120,
                   interval=0.2, message="the worker to make progress before the next kill")
        if processed_count(gateway) >= MESSAGES:
            break
        worker.kill()
        kills += 1
        kills_during_ingest += burst.posted() < MESSAGES
        worker = gateway.start_worker()
    burst.join()

    # Then every webhook was answered 200, and after recovery every MessageSid is one message
    assert kills >= 2, "the burst was processed before a second kill: nothing was tested"
    assert kills_during_ingest >= 1, "no kill landed while texts were still arriving"
    assert burst.non_2xx() == {}
    wait_until_processed(gateway, MESSAGES, timeout=240)
    audit_inbound(gateway, burst.sids)

    # and /metrics counted every webhook, whichever gunicorn process answered it
    scrape = requests.get(f"{gateway.base_url}/metrics", timeout=10).text
    assert metric_total(scrape, "gateway_webhooks_total", endpoint="sms", outcome="stored") == MESSAGES
    assert metric_total(scrape, "gateway_inbound_backlog_events") == 0
