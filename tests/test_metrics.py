"""GET /metrics: counters that move with the work, backlogs read from the database, and the
worker's metrics served by dramatiq's Prometheus middleware on 127.0.0.1 only."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import requests
from sqlalchemy import select

from gateway.inbound import process_event
from gateway.models import InboundEvent
from tests.conftest import wait_until
from tests.workers.conftest import free_port


def sample(text: str, name: str, **labels) -> float:
    """The sum of a metric's samples whose labels include `labels` (0 when there are none)."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:{{(.*)}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match[1] or "") for k, v in labels.items()):
            total += float(match[2])
    return total


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return response.get_data(as_text=True)


def stored_event_ids(runtime) -> list[int]:
    with runtime.sessions() as session:
        return list(session.scalars(select(InboundEvent.id).order_by(InboundEvent.id)))


def test_a_webhook_and_its_processing_move_the_counters_and_the_backlog(runtime, client, carrier):
    before = scrape(client)

    # Given a text the carrier posts, stored and not yet processed
    assert carrier.inbound("+14155550100", "hello").status_code == 200
    stored = scrape(client)
    assert sample(stored, "gateway_webhooks_total", endpoint="sms", outcome="stored") == \
        sample(before, "gateway_webhooks_total", endpoint="sms", outcome="stored") + 1
    assert sample(stored, "gateway_webhook_ack_seconds_count", endpoint="sms") == \
        sample(before, "gateway_webhook_ack_seconds_count", endpoint="sms") + 1
    assert sample(stored, "gateway_inbound_backlog_events") == 1
    assert sample(stored, "gateway_backlog_up") == 1

    # When a worker threads it
    for event_id in stored_event_ids(runtime):
        process_event(runtime.sessions, runtime.settings, event_id)

    # Then the routing outcome is counted and the backlog is empty again
    processed = scrape(client)
    assert sample(processed, "gateway_routing_outcomes_total", folder_match="none") == \
        sample(before, "gateway_routing_outcomes_total", folder_match="none") + 1
    assert sample(processed, "gateway_inbound_backlog_events") == 0
    assert sample(processed, "gateway_inbound_backlog_oldest_seconds") == 0


def test_the_backlog_gauges_count_stored_unprocessed_events_and_the_oldest_age(runtime, client, carrier):
    for n in range(3):
        assert carrier.inbound(f"+1415555010{n}", f"text {n}").status_code == 200
    process_event(runtime.sessions, runtime.settings, stored_event_ids(runtime)[0])

    text = scrape(client)

    assert sample(text, "gateway_inbound_backlog_events") == 2
    assert sample(text, "gateway_inbound_backlog_oldest_seconds") >= 0
    assert "gateway_notify_backlog_messages" in text
    assert "gateway_event_delivery_backlog" in text
    assert "gateway_outbound_backlog_messages" in text


def test_texts_waiting_for_a_worker_that_knows_their_number_are_counted_apart_from_the_backlog(
        runtime, client, carrier):
    # A text the web stored as routable, to a number this deploy's config no longer has
    # (or not yet): it waits for a worker that has it, and must not age the backlog.
    from gateway.db import transaction

    assert carrier.inbound("+14155550100", "to a number being deployed").status_code == 200
    with transaction(runtime.sessions) as session:
        event = session.get(InboundEvent, stored_event_ids(runtime)[0])
        event.to_number = "+15550009999"
        event.received_at -= dt.timedelta(minutes=10)
    assert carrier.inbound("+14155550101", "an ordinary text").status_code == 200

    text = scrape(client)

    assert sample(text, "gateway_inbound_waiting_for_number_events") == 1
    assert sample(text, "gateway_inbound_backlog_events") == 1
    assert sample(text, "gateway_inbound_backlog_oldest_seconds") < 60


def test_metrics_still_answer_when_the_database_is_unreachable(runtime):
    from gateway.app import create_app
    from gateway.runtime import Runtime

    unreachable = Runtime(runtime.settings.model_copy(
        update={"database_url": "postgresql://nobody@127.0.0.1:1/none"}))

    text = scrape(create_app(runtime=unreachable).test_client())

    assert sample(text, "gateway_backlog_up") == 0
    assert "gateway_webhooks_total" in text


@pytest.mark.processes
def test_a_worker_process_serves_its_counters_on_loopback_only(runtime, carrier, workers, tmp_path):
    port = free_port()
    workers(dramatiq_prom_port=str(port), dramatiq_prom_db=str(tmp_path / "worker-metrics"))

    assert carrier.inbound("+14155550100", "hello").status_code == 200

    def routed() -> str | None:
        try:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except requests.RequestException:
            return None  # the exposition server is still starting
        done = (sample(text, "gateway_routing_outcomes_total", folder_match="none") >= 1
                and sample(text, "dramatiq_messages_total", queue_name="inbound") >= 1)
        return text if done else None

    # The gateway's routing counter and dramatiq's own metrics, in one scrape
    wait_until(routed, message="the worker's counters on its metrics port")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.2:{port}/metrics", timeout=5)


def test_rejections_are_counted_under_the_same_endpoint_label_as_stored_webhooks(client, carrier):
    before = scrape(client)

    assert carrier.post("/webhooks/twilio/sms", {"From": "+14155550100"}, signature="bad").status_code == 403

    after = scrape(client)
    assert sample(after, "gateway_webhooks_total", endpoint="sms", outcome="invalid_signature") == \
        sample(before, "gateway_webhooks_total", endpoint="sms", outcome="invalid_signature") + 1


def test_a_webhook_the_database_cannot_take_gets_a_503_to_retry_and_is_counted(runtime, monkeypatch):
    from gateway import group_commit
    from gateway.app import create_app
    from gateway.runtime import Runtime
    from tests.conftest import Carrier

    monkeypatch.setattr(group_commit, "STORE_RETRY_WINDOW_S", 0.3)  # the hold, shortened for the test
    unreachable = Runtime(runtime.settings.model_copy(
        update={"database_url": "postgresql://nobody@127.0.0.1:1/none"}))
    client = create_app(runtime=unreachable).test_client()
    before = scrape(client)

    response = Carrier(client).inbound("+14155550100", "hello")

    assert response.status_code == 503
    assert response.json["error"]["code"] == "database_unavailable"
    after = scrape(client)
    assert sample(after, "gateway_webhooks_total", endpoint="sms", outcome="database_unavailable") == \
        sample(before, "gateway_webhooks_total", endpoint="sms", outcome="database_unavailable") + 1


@pytest.mark.processes
def test_a_worker_forgets_the_metrics_of_processes_that_are_gone(runtime, workers, tmp_path):
    import subprocess
    import sys

    directory = tmp_path / "worker-metrics"
    directory.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (directory / f"counter_{gone}.db").write_bytes(b"\0" * 8)
    (directory / f"gauge_livesum_{gone}.db").write_bytes(b"\0" * 8)

    workers(dramatiq_prom_port=str(free_port()), dramatiq_prom_db=str(directory))

    wait_until(lambda: not (directory / f"counter_{gone}.db").exists()
               and any(directory.glob("counter_*.db")), message="the dead process's files to go")
    assert not (directory / f"gauge_livesum_{gone}.db").exists()
