"""Drill 1b: the worker is killed with SIGKILL every few seconds during an outbound burst.

The kills land while a number's leader has a batch claimed and its carrier calls are
waiting on the carrier: the carrier takes texts whose answers nobody reads. The audit: every
text queued is accepted by the carrier exactly once, and the gateway holds its SID.
"""

from __future__ import annotations

import collections
import time

import pytest
import requests

from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, SERVICE_NUMBER, wait_until
from tests.drills.conftest import sized
from tests.drills.test_carrier_outage import bearer_token
from tests.standins.twilio_api import TwilioStandIn

pytestmark = pytest.mark.drill

MESSAGES = sized(3000, 600)
KILL_EVERY_S = 2.0
KILLS = sized(15, 4)
LATENCY_S = 1.0   # each batch waits on the carrier long enough for a kill to land in it


@pytest.fixture
def slow_carrier():
    with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, latency=LATENCY_S) as server:
        yield server


def test_workers_killed_during_an_outbound_burst_send_every_text_exactly_once(make_gateway, slow_carrier):
    # Given the Procfile's processes, sending through a carrier answering after 1 s
    gateway = make_gateway(api_base=slow_carrier.url)
    gateway.start_web()
    gateway.start_sweeper()
    headers = bearer_token(gateway)

    # When a burst of texts to different people is queued through the API (before the
    # worker starts: else it sends them as fast as they are posted, and the burst can be
    # over before the drill gets to kill anything)
    bodies = [f"drill send {n}" for n in range(MESSAGES)]
    api = requests.Session()
    for n, body in enumerate(bodies):
        response = api.post(f"{gateway.base_url}/api/v1/messages", headers=headers, timeout=15, json={
            "business_number": SERVICE_NUMBER, "to": f"+1415557{n:04d}", "body": body})
        assert response.status_code == 202, response.text
    worker = gateway.start_worker()

    # and the worker is SIGKILLed every few seconds while it sends, a new one started after each
    kills = 0
    while kills < KILLS and len(slow_carrier.accepted) < MESSAGES:
        seen = len(slow_carrier.accepted)
        wait_until(lambda: len(slow_carrier.accepted) > seen, timeout=90, interval=0.1,  # noqa: B023
                   message="the worker to send something before the next kill")
        time.sleep(KILL_EVERY_S)
        worker.kill()
        kills += 1
        worker = gateway.start_worker()
    assert kills >= 2, "the burst finished before the drill could kill the worker twice"

    # Then every text is accepted by the carrier exactly once
    wait_until(lambda: len(slow_carrier.accepted) >= MESSAGES, timeout=240, interval=0.5,
               message=f"all {MESSAGES} texts to be accepted")
    time.sleep(1.0)   # a late duplicate would arrive now
    accepted = collections.Counter(m.field("Body") for m in slow_carrier.accepted)
    assert sorted(accepted) == sorted(bodies)
    assert max(accepted.values()) == 1, [body for body, n in accepted.items() if n > 1][:5]
    # and the gateway holds the carrier's SID for each: answers lost to a kill were looked up
    wait_until(lambda: gateway.scalar("SELECT count(*) FROM messages WHERE send_state = 'submitted'")
               == MESSAGES, timeout=120, interval=0.5, message="every send recorded")
    with gateway.engine.connect() as connection:
        sids = set(connection.exec_driver_sql(
            "SELECT carrier_message_id FROM messages WHERE direction = 'outbound'").scalars())
    assert sids == {m.sid for m in slow_carrier.accepted}
    # and the kills did land on calls in flight: some answers were lost and looked up
    lookups = [path for method, path, _ in slow_carrier.requests if method == "GET"]
    assert lookups, "no kill landed on a call in flight (the carrier is busy >95% of the time)"
