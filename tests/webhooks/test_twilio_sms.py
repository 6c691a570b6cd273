"""POST /webhooks/twilio/sms: what the carrier gets back and what is stored."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from gateway.models import EventStatus, InboundEvent
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, SERVICE_NUMBER, Carrier, inbound_form

TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'


def stored_events(runtime) -> list[InboundEvent]:
    with runtime.sessions() as session:
        return list(session.scalars(select(InboundEvent).order_by(InboundEvent.id)))


def test_a_signed_text_is_stored_and_answered_with_empty_twiml(runtime, carrier):
    response = carrier.inbound("+14155550100", "Is my order ready?", sid="SM" + "a" * 32)

    assert response.status_code == 200
    assert response.mimetype == "text/xml"
    assert response.data == TWIML
    [event] = stored_events(runtime)
    assert (event.carrier_message_id, event.from_number, event.to_number) == (
        "SM" + "a" * 32,
        "+14155550100",
        SERVICE_NUMBER,
    )
    assert event.status == EventStatus.received
    assert event.payload["body"] == "Is my order ready?"


@pytest.mark.parametrize(
    "label, change, status, code, message",
    [
        (
            "forged signature",
            {"signature": "bm90IGEgc2lnbmF0dXJl"},
            403,
            "invalid_signature",
            "invalid request signature",
        ),
        (
            "missing signature",
            {"signature": None},
            403,
            "missing_signature",
            "missing X-Twilio-Signature header",
        ),
        (
            "signed with another token",
            {"token": "not-" + AUTH_TOKEN},
            403,
            "invalid_signature",
            "invalid request signature",
        ),
        (
            "unknown account",
            {"form": {"AccountSid": "AC" + "9" * 32}},
            403,
            "unknown_account",
            f"AccountSid AC{'9' * 32} is not a configured carrier",
        ),
        (
            "missing MessageSid",
            {"form": {"MessageSid": None}},
            400,
            "missing_MessageSid",
            "field 'MessageSid' is required",
        ),
        ("missing From", {"form": {"From": None}}, 400, "missing_From", "field 'From' is required"),
        ("missing To", {"form": {"To": None}}, 400, "missing_To", "field 'To' is required"),
        (
            "missing AccountSid",
            {"form": {"AccountSid": None}},
            400,
            "missing_AccountSid",
            "field 'AccountSid' is required",
        ),
    ],
)
def test_a_rejected_webhook_gets_its_reason_and_stores_nothing(
    runtime, client, label, change, status, code, message
):
    form = inbound_form("+14155550100")
    for name, value in change.get("form", {}).items():
        if value is None:
            form.pop(name)
        else:
            form[name] = value
    response = Carrier(client).post(
        "/webhooks/twilio/sms", form, signature=change.get("signature", "sign"), token=change.get("token")
    )

    assert response.status_code == status, label
    assert response.json == {"error": {"code": code, "message": message}}
    assert stored_events(runtime) == []


def test_a_body_over_the_limit_gets_413_and_stores_nothing(runtime, carrier):
    response = carrier.inbound("+14155550100", "x" * 100_000)

    assert response.status_code == 413
    assert response.json["error"]["code"] == "request_entity_too_large"
    assert stored_events(runtime) == []


def test_numbers_without_plus_follow_the_default_region(runtime, carrier):
    form = inbound_form("14155550100")
    form["To"] = SERVICE_NUMBER.lstrip("+")

    assert carrier.post("/webhooks/twilio/sms", form).status_code == 200
    [event] = stored_events(runtime)
    assert (event.from_number, event.to_number) == ("+14155550100", SERVICE_NUMBER)


@pytest.mark.parametrize("sender, kind", [("384387", "shortcode"), ("ACME", "alphanumeric")])
def test_short_codes_and_sender_ids_are_kept_as_they_are_and_flagged(runtime, carrier, sender, kind):
    assert carrier.inbound(sender).status_code == 200
    [event] = stored_events(runtime)
    assert (event.from_number, event.from_kind) == (sender, kind)


def test_a_text_to_a_number_that_is_not_ours_is_kept_as_unroutable(runtime, carrier, make_user):
    response = carrier.inbound("+14155550100", "wrong number", to="+15550001111")

    assert response.status_code == 200
    [event] = stored_events(runtime)
    assert event.status == EventStatus.unroutable
    _, admin = make_user("root", "admin", ())
    listed = carrier.client.get("/api/v1/unroutable", headers=admin).json["data"]
    assert [(e["from"], e["to"], e["body"]) for e in listed] == [
        ("+14155550100", "+15550001111", "wrong number")
    ]
    _, agent = make_user("agent", "agent")
    assert carrier.client.get("/api/v1/unroutable", headers=agent).status_code == 403


def test_a_carrier_retry_is_stored_once_and_answered_again(runtime, carrier):
    first = carrier.inbound("+14155550100", sid="SM" + "b" * 32)
    again = carrier.inbound("+14155550100", sid="SM" + "b" * 32)

    assert (first.status_code, again.status_code) == (200, 200)
    assert again.data == TWIML
    assert len(stored_events(runtime)) == 1


def test_parallel_copies_of_one_message_are_stored_once(runtime, app):
    # Given eight copies of one webhook, sent at the same moment from eight threads
    form = inbound_form("+14155550100", sid="SM" + "c" * 32)
    barrier = threading.Barrier(8)
    statuses = []

    def deliver():
        carrier = Carrier(app.test_client())
        barrier.wait()
        statuses.append(carrier.post("/webhooks/twilio/sms", form).status_code)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then every copy is answered 200 and exactly one is stored
    assert statuses == [200] * 8
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(InboundEvent)) == 1


def test_the_signature_is_checked_against_the_public_url_not_the_host_header(runtime, client):
    form = inbound_form("+14155550100")
    from gateway.carriers import twilio

    # Signed over the URL a proxy forwarded to, not the public URL Twilio called
    signature = twilio.sign("http://localhost/webhooks/twilio/sms", form, AUTH_TOKEN)
    response = client.post("/webhooks/twilio/sms", data=form, headers={twilio.SIGNATURE_HEADER: signature})

    assert response.status_code == 403
    assert ACCOUNT_SID  # the account is configured; only the URL differs
