"""Events pushed to [[notify.webhooks]]: signed, retried until accepted, one stable id."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from gateway.db import transaction
from gateway.events import emit
from tests.conftest import wait_until
from tests.notify.conftest import RECEIVER_SECRET, receive

CUSTOMER = "+14155550100"


def deliveries(client, headers, status: str) -> list[dict]:
    response = client.get("/api/v1/admin/event-deliveries", headers=headers, query_string={"status": status})
    assert response.status_code == 200, response.json
    return response.json["data"]


def valid_signature(request: dict) -> bool:
    expected = "sha256=" + hmac.new(RECEIVER_SECRET.encode(), request["body"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(request["headers"]["X-Gateway-Signature"], expected)


@pytest.mark.processes
def test_a_receiver_that_fails_first_gets_the_event_once_it_accepts_signed_with_one_id(
    runtime, carrier, client, admin_headers, receiver, workers
):
    # Given a receiver that answers 503, and a worker process
    receiver.status = 503
    workers(threads=2)

    # When a text arrives
    assert carrier.inbound(CUSTOMER, "Is my order ready?").status_code == 200

    # Then admins see the delivery failing, with the receiver's answer
    wait_until(lambda: deliveries(client, admin_headers, "failing"), message="a failing delivery")
    [failing] = deliveries(client, admin_headers, "failing")
    assert failing["type"] == "message.received"
    assert failing["last_error"] == "receiver answered HTTP 503"
    assert failing["delivered_at"] is None

    # When the receiver recovers, the retry gets through, and nothing comes after it
    receiver.status = 200
    wait_until(lambda: deliveries(client, admin_headers, "delivered"), message="the delivery to succeed")
    [delivered] = deliveries(client, admin_headers, "delivered")
    attempts = receiver.received()
    assert [r["answered"] for r in attempts][-1] == 200
    assert [r["answered"] for r in attempts].count(200) == 1
    assert delivered["attempts"] == len(attempts) >= 2
    assert deliveries(client, admin_headers, "failing") == []

    # Every attempt carried the same event, byte for byte, validly signed
    assert len({r["body"] for r in attempts}) == 1
    assert all(valid_signature(r) for r in attempts)
    event = json.loads(attempts[-1]["body"])
    assert event["id"] == failing["event_id"] == delivered["event_id"]
    assert attempts[-1]["headers"]["X-Gateway-Event-Id"] == event["id"]
    assert event["type"] == "message.received"
    assert event["data"]["message"]["body"] == "Is my order ready?"
    assert event["data"]["message"]["from"] == CUSTOMER


def test_a_text_received_twice_over_makes_one_event(runtime, carrier, client, admin_headers):
    receive(runtime, carrier, CUSTOMER, sid="SM" + "b" * 32)
    assert carrier.inbound(CUSTOMER, sid="SM" + "b" * 32).status_code == 200

    assert len(deliveries(client, admin_headers, "pending")) == 1


def test_events_other_code_emits_are_recorded_for_the_receivers_that_want_them(
    runtime, client, admin_headers
):
    with transaction(runtime.sessions) as session:
        first = emit(session, "conversation.closed", {"conversation": {"id": 7}}, key="closed:7")
        again = emit(session, "conversation.closed", {"conversation": {"id": 7}}, key="closed:7")

    [pending] = deliveries(client, admin_headers, "pending")
    assert first == again == pending["event_id"]
    assert pending["type"] == "conversation.closed"


def test_only_admins_see_event_deliveries(runtime, client, make_user):
    _, agent = make_user("sue", "agent", ["service"])

    response = client.get("/api/v1/admin/event-deliveries", headers=agent)

    assert response.status_code == 403
    assert response.json["error"]["code"] == "forbidden"


def test_an_unknown_delivery_status_is_a_clear_400(runtime, client, admin_headers):
    response = client.get("/api/v1/admin/event-deliveries", headers=admin_headers,
                          query_string={"status": "stuck"})

    assert response.status_code == 400
    assert "status must be one of" in response.json["error"]["message"]


def test_closing_a_conversation_records_one_conversation_closed_event(
    runtime, carrier, client, admin_headers
):
    receive(runtime, carrier, CUSTOMER)
    conversation_id = client.get("/api/v1/conversations", headers=admin_headers).json["data"][0]["id"]

    for _ in range(2):
        client.post(f"/api/v1/conversations/{conversation_id}/close", headers=admin_headers)

    closed = [d for d in deliveries(client, admin_headers, "all") if d["type"] == "conversation.closed"]
    assert len(closed) == 1


def test_each_status_a_sent_message_reaches_is_one_message_status_event(
    runtime, carrier, client, admin_headers
):
    from sqlalchemy import select, update

    from gateway.models import EventDelivery, Message
    from tests.conftest import ACCOUNT_SID

    receive(runtime, carrier, CUSTOMER)
    conversation_id = client.get("/api/v1/conversations", headers=admin_headers).json["data"][0]["id"]
    reply = client.post(f"/api/v1/conversations/{conversation_id}/messages", headers=admin_headers,
                        json={"body": "On our way"})
    assert reply.status_code == 202, reply.json
    with transaction(runtime.sessions) as session:  # as the send worker records the carrier's SID
        session.execute(update(Message).where(Message.id == reply.json["id"])
                        .values(carrier_message_id="SM" + "d" * 32, status="sent"))

    for status in ("delivered", "delivered", "sent"):
        form = {"MessageSid": "SM" + "d" * 32, "MessageStatus": status, "AccountSid": ACCOUNT_SID}
        assert carrier.post("/webhooks/twilio/status", form).status_code == 200

    with runtime.sessions() as session:
        bodies = session.scalars(select(EventDelivery.body).where(EventDelivery.type == "message.status"))
        events = [json.loads(body) for body in bodies]
    reached = [(e["data"]["status"], e["data"]["message"]["id"]) for e in events]
    assert reached == [("delivered", reply.json["id"])]


def test_an_unreachable_receivers_error_names_no_secret_from_its_url():
    from gateway.events import Attempt, post_event

    port = _closed_port()
    url = f"http://hook-user:hook-pass@127.0.0.1:{port}/services/T0/B0/s3cr3tpath?token=s3cr3tquery"
    attempt = Attempt(1, "evt", url, "{}", 1, None)

    error = post_event(attempt, "signing-secret")

    assert error.startswith("ConnectionError")
    assert "127.0.0.1" in error   # still says where it failed
    for secret in ("s3cr3tpath", "s3cr3tquery", "hook-pass", "hook-user"):
        assert secret not in error


def test_a_receiver_url_that_requests_quotes_again_is_hidden_in_its_quoted_form_too():
    from gateway.events import Attempt, post_event

    url = f"http://127.0.0.1:{_closed_port()}/hook/tök en?token=a|b^c"

    error = post_event(Attempt(1, "evt", url, "{}", 1, None), "signing-secret")

    assert "t%C3%B6k" not in error and "a%7Cb" not in error and "tök" not in error


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
