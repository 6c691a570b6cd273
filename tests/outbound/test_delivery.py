"""Sending through real worker processes to the Twilio stand-in: what the carrier received,
and what the API shows afterwards."""

from __future__ import annotations

import pytest

from tests.conftest import PUBLIC_URL, SERVICE_NUMBER, wait_until

CUSTOMER = "+14155550100"
FOOTER = "Reply STOP to opt out."

pytestmark = pytest.mark.processes

# How long to wait for worker processes on a shared, loaded machine: a bound, not a timing claim.
PATIENCE_S = 60.0


def eventually(predicate, message: str):
    return wait_until(predicate, timeout=PATIENCE_S, message=message)


def thread_of(client, headers, sender=CUSTOMER) -> dict:
    """The conversation a worker threaded the customer's text into."""
    def found():
        rows = client.get("/api/v1/conversations", headers=headers).json["data"]
        return next((c for c in rows if c["contact"]["number"] == sender and c["status"] != "closed"), None)

    return eventually(found, message=f"a conversation with {sender}")


def message(client, headers, message_id: int) -> dict:
    conversation_id = client.get("/api/v1/conversations?limit=100", headers=headers).json["data"]
    for conversation in conversation_id:
        rows = client.get(f"/api/v1/conversations/{conversation['id']}/messages?limit=100",
                          headers=headers).json["data"]
        for row in rows:
            if row["id"] == message_id:
                return row
    raise AssertionError(f"message {message_id} not found")


def send(client, headers, body: str, to: str = CUSTOMER, **extra):
    response = client.post("/api/v1/messages", json={
        "business_number": SERVICE_NUMBER, "to": to, "body": body, **extra}, headers=headers)
    assert response.status_code == 202, response.json
    return response.json


def test_a_reply_reaches_the_carrier_with_footer_and_callback_url_then_shows_delivered(
    runtime, carrier, client, admin_headers, workers, callbacks
):
    workers()
    assert carrier.inbound(CUSTOMER, "Is my order ready?").status_code == 200
    conversation = thread_of(client, admin_headers)
    note = client.post(f"/api/v1/conversations/{conversation['id']}/notes",
                       json={"body": "VIP customer"}, headers=admin_headers)
    assert note.status_code == 201

    reply = client.post(f"/api/v1/conversations/{conversation['id']}/messages",
                        json={"body": "Yes, it ships today."}, headers=admin_headers).json

    [received] = eventually(lambda: callbacks.accepted, message="the reply at the carrier")
    assert received.field("Body") == f"Yes, it ships today.\n{FOOTER}"
    assert (received.field("From"), received.field("To")) == (SERVICE_NUMBER, CUSTOMER)
    assert received.field("StatusCallback") == PUBLIC_URL + "/webhooks/twilio/status"
    eventually(lambda: message(client, admin_headers, reply["id"])["carrier_message_id"] == received.sid,
               message="the carrier's SID stored")

    for status in ("sent", "delivered"):
        assert callbacks.send_status(received.sid, status).status_code == 200

    shown = message(client, admin_headers, reply["id"])
    assert (shown["status"], shown["carrier_message_id"]) == ("delivered", received.sid)
    assert len(callbacks.accepted) == 1   # the note never left


@pytest.mark.parametrize("status", [500, 429])
def test_temporary_carrier_errors_are_retried_into_exactly_one_accepted_send(
    runtime, client, admin_headers, workers, standin, status
):
    standin.fail_next(2, status)
    workers()

    sent = send(client, admin_headers, "Your table is ready")

    [received] = eventually(lambda: standin.accepted, message="the send accepted after the failures")
    eventually(lambda: message(client, admin_headers, sent["id"])["carrier_message_id"] == received.sid,
               message="the SID stored")
    creates = [r for r in standin.requests if r[0] == "POST"]
    assert [r[2] for r in creates] == [status, status, 201]
    assert len(standin.accepted) == 1


def test_an_answer_lost_after_the_carrier_took_the_message_is_reconciled_not_resent(
    runtime, client, admin_headers, workers, standin
):
    standin.stall_seconds = 2.5   # longer than the gateway's 1 s carrier timeout
    standin.stall_next(1)
    workers()

    sent = send(client, admin_headers, "Sent once, answered never")

    [received] = eventually(lambda: standin.accepted, message="the stalled send at the carrier")
    stored = eventually(
        lambda: message(client, admin_headers, sent["id"])["carrier_message_id"],
        message="the lost answer reconciled",
    )
    assert stored == received.sid
    assert len(standin.accepted) == 1
    assert [r[0] for r in standin.requests].count("POST") == 1


@pytest.mark.parametrize(
    "code, text",
    [(21211, "The 'To' number +14155550100 is not a valid phone number."),
     (21614, "'To' number is not a valid mobile number")],
)
def test_a_permanent_carrier_error_fails_the_message_at_once_with_its_code(
    runtime, client, admin_headers, workers, standin, code, text
):
    standin.fail_next(1, 400, code, text)
    workers()

    sent = send(client, admin_headers, "hello")

    shown = eventually(lambda: (m := message(client, admin_headers, sent["id"]))["status"] == "failed" and m,
                       message="the message failed")
    assert shown["error_code"] == str(code)
    assert text in shown["error_message"]
    assert [r[0] for r in standin.requests].count("POST") == 1


def test_an_unsubscribed_recipient_at_the_carrier_opts_the_contact_out(
    runtime, client, admin_headers, workers, standin
):
    standin.opt_out(CUSTOMER)
    workers()

    sent = send(client, admin_headers, "hello")

    shown = eventually(lambda: (m := message(client, admin_headers, sent["id"]))["status"] == "failed" and m,
                       message="the message failed")
    assert shown["error_code"] == "21610"
    conversation = client.get(f"/api/v1/conversations/{sent['conversation_id']}", headers=admin_headers).json
    assert conversation["contact"]["opted_out"] is True
    refused = client.post("/api/v1/messages", json={
        "business_number": SERVICE_NUMBER, "to": CUSTOMER, "body": "again"}, headers=admin_headers)
    assert (refused.status_code, refused.json["error"]["code"]) == (409, "opted_out")


def test_stop_then_start_refuses_and_then_allows_sending(
    runtime, carrier, client, admin_headers, workers, standin
):
    workers()
    assert carrier.inbound(CUSTOMER, "STOP").status_code == 200
    thread_of(client, admin_headers)
    eventually(lambda: client.get("/api/v1/conversations", headers=admin_headers)
               .json["data"][0]["contact"]["opted_out"], message="the contact opted out")

    refused = client.post("/api/v1/messages", json={
        "business_number": SERVICE_NUMBER, "to": CUSTOMER, "body": "hello?"}, headers=admin_headers)
    assert (refused.status_code, refused.json["error"]["code"]) == (409, "opted_out")

    assert carrier.inbound(CUSTOMER, "START").status_code == 200
    eventually(lambda: not client.get("/api/v1/conversations", headers=admin_headers)
               .json["data"][0]["contact"]["opted_out"], message="the contact opted back in")
    sent = send(client, admin_headers, "Welcome back")

    [received] = eventually(lambda: standin.accepted, message="the send after START")
    assert received.field("Body") == f"Welcome back\n{FOOTER}"
    assert sent["status"] == "queued"


def test_the_sends_of_one_conversation_leave_in_the_order_they_were_created(
    runtime, client, admin_headers, workers, standin
):
    standin.fail_next(1, 500)   # the first one is delayed by a retry; the others must wait for it
    workers(threads=4)

    bodies = [f"part {i}" for i in range(5)]
    for body in bodies:
        send(client, admin_headers, body)

    eventually(lambda: len(standin.accepted) == 5, message="all five at the carrier")
    assert [m.field("Body").split("\n")[0] for m in standin.accepted] == bodies


def test_no_one_second_window_exceeds_the_numbers_limit(runtime, client, admin_headers, workers, standin):
    # The service number allows 2 segments per second (tests/conftest.py).
    workers(threads=8)

    for i in range(8):
        send(client, admin_headers, f"Your appointment is confirmed #{i}", to=f"+1415555{i:04d}")

    eventually(lambda: len(standin.accepted) == 8, message="all eight sends at the carrier")
    arrivals = sorted(m.received_at for m in standin.accepted)
    busiest = max(sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals)
    assert busiest <= 2


def test_a_callback_that_beats_the_workers_record_of_the_sid_is_applied_when_the_sid_is_stored(
    runtime, client, admin_headers, workers, callbacks
):
    callbacks.stall_seconds = 0.8   # the carrier answers late; its callback comes first
    callbacks.stall_next(1)
    workers()

    sent = send(client, admin_headers, "Racing the callback")
    [received] = eventually(lambda: callbacks.accepted, message="the send at the carrier")
    assert message(client, admin_headers, sent["id"])["carrier_message_id"] is None
    assert callbacks.send_status(received.sid, "delivered").status_code == 200

    shown = eventually(
        lambda: (m := message(client, admin_headers, sent["id"]))["carrier_message_id"] and m,
        message="the SID stored",
    )
    assert (shown["carrier_message_id"], shown["status"]) == (received.sid, "delivered")


@pytest.mark.parametrize("retry_horizon_minutes", [0.05])   # 3 s
def test_temporary_errors_past_the_retry_horizon_fail_the_message(
    runtime, client, admin_headers, workers, standin, retry_horizon_minutes
):
    standin.fail_next(1000, 503)
    workers()

    sent = send(client, admin_headers, "Never gets through")

    shown = eventually(lambda: (m := message(client, admin_headers, sent["id"]))["status"] == "failed" and m,
                       message="the message given up")
    assert "gave up: retry horizon passed" in shown["error_message"]
    assert standin.accepted == []
