"""Drill 2: Redis is stopped for 10 s during ingest, then started again."""

from __future__ import annotations

import time

import pytest
import requests

from tests.conftest import wait_until
from tests.drills.conftest import Burst, audit_inbound, signed_webhooks, sized, wait_until_processed

pytestmark = pytest.mark.drill

OUTAGE_S = sized(10.0, 4.0)
# A fetch that Redis ran as it went down, whose reply the worker never got, leaves its
# tasks in a live worker's "acks" set: dramatiq gives those back only when that worker
# dies. The sweeper sees the restarted Redis's new run id and enqueues every unprocessed
# event again at once, so recovery takes seconds, not `stale_after`.
RECOVERY_TIMEOUT_S = 120
MESSAGES = sized(3000, 400)
RATE = MESSAGES / (3 * OUTAGE_S)  # the burst lasts three outages: before, during and after


def readiness(gateway) -> int:
    return requests.get(f"{gateway.base_url}/readyz", timeout=10).status_code


def test_webhooks_are_answered_while_redis_is_down_and_processed_once_after_it_returns(
    make_gateway, private_redis
):
    # Given the Procfile's processes on a private Redis, and a burst spread over time
    gateway = make_gateway()
    gateway.start_web()
    gateway.start_sweeper()
    gateway.start_worker()
    burst = Burst(gateway.base_url, signed_webhooks(MESSAGES), threads=8, rate=RATE).start()
    wait_until(lambda: burst.posted() >= MESSAGES // 3, timeout=60, message="a third of the burst posted")

    # When Redis is stopped for the outage, in the middle of the burst
    private_redis.stop()
    stopped = time.monotonic()
    posted_before = burst.posted()
    assert readiness(gateway) == 503  # the broker is unreachable: not ready
    wait_until(lambda: time.monotonic() - stopped >= OUTAGE_S, timeout=OUTAGE_S + 5, interval=0.2,
               message="the outage to last its length")
    posted_during = burst.posted() - posted_before
    private_redis.start()
    burst.join()

    # Then every webhook was answered 200 on its first try, during the outage too
    assert posted_during > 0, "no webhook arrived during the outage: nothing was tested"
    assert burst.non_2xx() == {}
    # and, once Redis is back, everything is processed, each MessageSid exactly once
    wait_until_processed(gateway, MESSAGES, timeout=RECOVERY_TIMEOUT_S)
    audit_inbound(gateway, burst.sids)
    assert readiness(gateway) == 200
