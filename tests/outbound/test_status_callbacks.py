"""POST /webhooks/twilio/status: signed, stored before the 200, and only ever forward."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from gateway.db import transaction
from gateway.models import Message, StatusEvent
from tests.conftest import ACCOUNT_SID, SERVICE_NUMBER

CUSTOMER = "+14155550100"
SID = "SM" + "5" * 32


@pytest.fixture
def sent_message(runtime, client, admin_headers) -> dict:
    """A queued message the carrier has taken under SID (as the worker records it)."""
    sent = client.post("/api/v1/messages", json={
        "business_number": SERVICE_NUMBER, "to": CUSTOMER, "body": "Your order shipped"},
        headers=admin_headers)
    assert sent.status_code == 202
    with transaction(runtime.sessions) as session:
        session.execute(update(Message).where(Message.id == sent.json["id"])
                        .values(carrier_message_id=SID, send_state="submitted"))
    return sent.json


def status_form(status: str, sid: str = SID, **extra) -> dict[str, str]:
    return {"AccountSid": ACCOUNT_SID, "MessageSid": sid, "SmsSid": sid, "MessageStatus": status,
            "SmsStatus": status, "From": SERVICE_NUMBER, "To": CUSTOMER, "ApiVersion": "2010-04-01", **extra}


def shown(client, headers, message: dict) -> dict:
    rows = client.get(f"/api/v1/conversations/{message['conversation_id']}/messages",
                      headers=headers).json["data"]
    return next(m for m in rows if m["id"] == message["id"])


def stored_events(runtime) -> list[StatusEvent]:
    with runtime.sessions() as session:
        return list(session.scalars(select(StatusEvent).order_by(StatusEvent.id)))


@pytest.mark.parametrize(
    "label, arrivals, final",
    [
        ("in order", ["queued", "sent", "delivered"], "delivered"),
        ("a late sent after delivered", ["delivered", "sent"], "delivered"),
        ("a late queued after sent", ["sent", "queued", "sending"], "sent"),
        ("failed after undelivered keeps the first outcome", ["undelivered", "failed"], "undelivered"),
        ("read after delivered", ["delivered", "read", "sent"], "read"),
    ],
)
def test_statuses_only_move_forward_whatever_order_they_arrive_in(
    runtime, carrier, client, admin_headers, sent_message, label, arrivals, final
):
    for status in arrivals:
        assert carrier.post("/webhooks/twilio/status", status_form(status)).status_code == 200

    assert shown(client, admin_headers, sent_message)["status"] == final, label
    assert [e.carrier_status for e in stored_events(runtime)] == arrivals


def test_an_error_code_is_kept_and_21610_opts_the_contact_out(
    runtime, carrier, client, admin_headers, sent_message
):
    response = carrier.post("/webhooks/twilio/status", status_form("undelivered", ErrorCode="21610"))

    assert response.status_code == 200
    message = shown(client, admin_headers, sent_message)
    assert (message["status"], message["error_code"]) == ("undelivered", "21610")
    conversation = client.get(f"/api/v1/conversations/{sent_message['conversation_id']}",
                              headers=admin_headers).json
    assert conversation["contact"]["opted_out"] is True


@pytest.mark.parametrize(
    "label, form",
    [("an unknown status", status_form("teleported")),
     ("an unknown SID", status_form("delivered", sid="SM" + "9" * 32))],
)
def test_unknown_statuses_and_sids_are_answered_200_and_recorded(
    runtime, carrier, client, admin_headers, sent_message, label, form
):
    response = carrier.post("/webhooks/twilio/status", form)

    assert response.status_code == 200, label
    [event] = stored_events(runtime)
    assert event.carrier_message_id == form["MessageSid"]
    assert event.carrier_status == form["MessageStatus"]
    assert event.applied is False
    assert shown(client, admin_headers, sent_message)["status"] == "queued"


def test_a_badly_signed_callback_is_refused_and_stores_nothing(runtime, carrier, sent_message):
    response = carrier.post("/webhooks/twilio/status", status_form("delivered"), signature="bm90IGEgc2ln")

    assert response.status_code == 403
    assert response.json["error"]["code"] == "invalid_signature"
    assert stored_events(runtime) == []
