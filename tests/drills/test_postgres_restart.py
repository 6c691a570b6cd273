"""Drill 3: PostgreSQL is restarted while webhooks arrive and workers process them.

The webhook holds a request through the outage, retrying its commit for up to 10 s
(gateway/inbound.py, README "A database outage during ingest"). The outage here lasts
longer than that on purpose, so both paths are drilled: requests that arrive late in
the outage are held and answered 200 once the database is back; requests that arrive at
its start get a 500 after 10 s, and are sent again by the carrier (the burst client).
"""

from __future__ import annotations

import time

import pytest
import requests

from tests.conftest import wait_until
from tests.drills.conftest import Burst, audit_inbound, signed_webhooks, sized, wait_until_processed

pytestmark = pytest.mark.drill

OUTAGE_S = 13.0  # past the webhook's 10 s hold, inside the carrier's 15 s timeout plus a retry
MESSAGES = sized(2000, 400)
RATE = MESSAGES / (2.5 * OUTAGE_S)


def readiness(gateway) -> int:
    return requests.get(f"{gateway.base_url}/readyz", timeout=10).status_code


def test_webhooks_that_arrive_while_postgresql_restarts_are_not_lost(make_gateway, private_postgres):
    # Given the Procfile's processes on a private PostgreSQL cluster, and a burst spread over time
    gateway = make_gateway()
    gateway.start_web()
    gateway.start_sweeper()
    gateway.start_worker()
    burst = Burst(gateway.base_url, signed_webhooks(MESSAGES), threads=8, rate=RATE).start()
    wait_until(lambda: burst.posted() >= MESSAGES // 4, timeout=60, message="a quarter of the burst posted")

    # When PostgreSQL is stopped (fast shutdown) in the middle of it, and started again later
    private_postgres.stop()
    stopped = time.monotonic()
    try:
        ready_during_outage = readiness(gateway)
        wait_until(lambda: time.monotonic() - stopped >= OUTAGE_S, timeout=OUTAGE_S + 5, interval=0.2,
                   message="the outage to last its length")
    finally:
        private_postgres.start()  # the cluster is the session's: later drills need it up
    burst.join()

    assert ready_during_outage == 503  # the database was unreachable: not ready

    # Then requests were held through the outage and answered 200 once it ended,
    assert burst.held, "no webhook was held through the outage"
    # those answered with an error were retried until answered 200,
    refused = burst.non_2xx()
    assert refused, "no webhook outlasted the 10 s hold: the retry path was not drilled"
    assert all(answers[-1] == 200 for answers in refused.values())
    # and every MessageSid, retried or not, is one message exactly
    wait_until_processed(gateway, MESSAGES, timeout=240)
    audit_inbound(gateway, burst.sids)
    assert readiness(gateway) == 200
