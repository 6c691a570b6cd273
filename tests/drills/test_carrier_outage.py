"""Drill 4: the carrier's API answers 500 and 429 for 30 s during an outbound send burst."""

from __future__ import annotations

import collections
import itertools
import threading
import time

import pytest
import requests
from sqlalchemy.orm import Session

from gateway.accounts import add_user, create_token
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, SERVICE_NUMBER, wait_until
from tests.drills.conftest import sized
from tests.standins.twilio_api import TwilioError, TwilioStandIn
from tests.test_metrics import sample as metric_total

pytestmark = pytest.mark.drill

OUTAGE_S = sized(30.0, 6.0)
MESSAGES = sized(1000, 150)


class FailingCarrier(TwilioStandIn):
    """The stand-in, answering every create with 500 or 429 (in turn) while `down` is set."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.down = threading.Event()
        self.refused = collections.Counter()
        self._answers = itertools.cycle([500, 429])

    def _create(self, form, arrived):
        if self.down.is_set():
            status = next(self._answers)
            self.refused[status] += 1
            if status == 429:
                raise TwilioError(429, 20429, "Too Many Requests")
            raise TwilioError(500, 20500, "An internal server error has occurred")
        return super()._create(form, arrived)


@pytest.fixture
def failing_carrier():
    with FailingCarrier(ACCOUNT_SID, AUTH_TOKEN) as server:
        yield server


def bearer_token(gateway) -> dict[str, str]:
    with Session(gateway.engine) as session, session.begin():
        add_user(session, "drill", "admin", ["service"], ["service"])
        token = create_token(session, "drill")
    return {"Authorization": f"Bearer {token}"}


def test_every_text_sent_through_a_carrier_outage_is_accepted_exactly_once(make_gateway, failing_carrier):
    # Given the Procfile's processes, sending through the carrier stand-in
    gateway = make_gateway(api_base=failing_carrier.url)
    gateway.start_web()
    gateway.start_sweeper()
    gateway.start_worker()
    headers = bearer_token(gateway)

    # When a burst of texts to different people is queued through the API
    bodies = [f"drill reply {n}" for n in range(MESSAGES)]
    api = requests.Session()
    for n, body in enumerate(bodies):
        if n == MESSAGES // 5:
            # and the carrier starts refusing every send, with 500s and 429s, part-way through
            wait_until(lambda: failing_carrier.accepted, timeout=60, message="the first sends to be accepted")
            failing_carrier.down.set()
            went_down = time.monotonic()
        response = api.post(f"{gateway.base_url}/api/v1/messages", headers=headers, timeout=15, json={
            "business_number": SERVICE_NUMBER, "to": f"+1415556{n:04d}", "body": body})
        assert response.status_code == 202, response.text
    wait_until(lambda: time.monotonic() - went_down >= OUTAGE_S, timeout=OUTAGE_S + 60, interval=0.2,
               message="the outage to last its length")
    failing_carrier.down.clear()

    # Then every text is eventually accepted by the carrier, each exactly once
    wait_until(lambda: len(failing_carrier.accepted) >= MESSAGES, timeout=OUTAGE_S + 120, interval=0.5,
               message=f"all {MESSAGES} texts to be accepted")
    assert failing_carrier.refused[500] and failing_carrier.refused[429], "the outage refused nothing"
    accepted = collections.Counter(m.field("Body").split("\n")[0] for m in failing_carrier.accepted)
    assert sorted(accepted) == sorted(bodies)
    assert max(accepted.values()) == 1, [body for body, n in accepted.items() if n > 1][:5]
    # and the gateway holds the carrier's SID for each
    wait_until(lambda: gateway.scalar("SELECT count(*) FROM messages WHERE send_state = 'submitted'")
               == MESSAGES, timeout=30, message="every send recorded")
    with gateway.engine.connect() as connection:
        sids = set(connection.exec_driver_sql(
            "SELECT carrier_message_id FROM messages WHERE direction = 'outbound'").scalars())
    assert sids == {m.sid for m in failing_carrier.accepted}

    # and the workers' metrics count the refusals by carrier error code, and every send
    scrape = requests.get(f"http://127.0.0.1:{gateway.env['dramatiq_prom_port']}/metrics", timeout=10).text
    assert metric_total(scrape, "gateway_sends_total", outcome="retry", error_code="20429") >= 1
    assert metric_total(scrape, "gateway_sends_total", outcome="retry", error_code="20500") >= 1
    assert metric_total(scrape, "gateway_sends_total", outcome="submitted") == MESSAGES
