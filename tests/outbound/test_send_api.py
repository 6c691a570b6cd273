"""Creating sends over the API: what is queued, what is refused, and that refusals change nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update

from gateway.db import transaction
from gateway.inbound import process_event
from gateway.models import Conversation, ConversationStatus, InboundEvent, Message
from tests.conftest import SALES_NUMBER, SERVICE_NUMBER

CUSTOMER = "+14155550100"
FOOTER = "Reply STOP to opt out."


def inbound_conversation(runtime, carrier, sender=CUSTOMER, body="Is my order ready?") -> int:
    """A customer's text, stored by the webhook and threaded as a worker would."""
    assert carrier.inbound(sender, body).status_code == 200
    with runtime.sessions() as session:
        event_id = session.scalar(select(func.max(InboundEvent.id)))
    message_id = process_event(runtime.sessions, runtime.settings, event_id)
    with runtime.sessions() as session:
        return session.get(Message, message_id).conversation_id


def message_count(runtime) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count(Message.id)))


def test_a_reply_is_queued_with_the_footer_and_marks_the_conversation_read(
    runtime, carrier, client, admin_headers
):
    conversation_id = inbound_conversation(runtime, carrier)

    response = client.post(f"/api/v1/conversations/{conversation_id}/messages",
                           json={"body": "Yes, it ships today."}, headers=admin_headers)

    assert response.status_code == 202
    sent = response.json
    assert sent["body"] == f"Yes, it ships today.\n{FOOTER}"
    assert (sent["direction"], sent["status"], sent["segments"], sent["encoding"]) == (
        "outbound", "queued", 1, "gsm7")
    assert (sent["from"], sent["to"], sent["conversation_id"]) == (SERVICE_NUMBER, CUSTOMER, conversation_id)
    conversation = client.get(f"/api/v1/conversations/{conversation_id}", headers=admin_headers).json
    assert conversation["unread"] is False


def test_the_footer_counts_toward_segments(runtime, carrier, client, admin_headers):
    conversation_id = inbound_conversation(runtime, carrier)
    body = "a" * (160 - len(FOOTER))   # fits one segment alone, not with the footer

    response = client.post(f"/api/v1/conversations/{conversation_id}/messages",
                           json={"body": body}, headers=admin_headers)

    assert response.status_code == 202
    assert response.json["segments"] == 2


def test_a_new_conversation_creates_the_contact_and_follows_the_default_region(
    runtime, client, admin_headers
):
    response = client.post("/api/v1/messages", json={
        "business_number": SALES_NUMBER, "to": "14155550123", "body": "Your quote is ready."
    }, headers=admin_headers)

    assert response.status_code == 202
    assert response.json["to"] == "+14155550123"
    assert response.json["body"] == "Your quote is ready."   # the sales line has no appended message
    conversation = client.get(f"/api/v1/conversations/{response.json['conversation_id']}",
                              headers=admin_headers).json
    assert conversation["contact"]["number"] == "+14155550123"
    assert conversation["business_number"] == SALES_NUMBER

    again = client.post("/api/v1/messages", json={
        "business_number": SALES_NUMBER, "to": "+1 415 555 0123", "body": "One more thing."
    }, headers=admin_headers)
    assert again.json["conversation_id"] == response.json["conversation_id"]


def test_a_repeated_post_with_one_idempotency_key_creates_one_message(runtime, client, admin_headers):
    request = {"business_number": SERVICE_NUMBER, "to": CUSTOMER, "body": "Once only"}
    headers = {**admin_headers, "Idempotency-Key": "order-42-ready"}

    first = client.post("/api/v1/messages", json=request, headers=headers)
    second = client.post("/api/v1/messages", json=request, headers=headers)

    assert first.status_code == second.status_code == 202
    assert first.json["id"] == second.json["id"]
    assert message_count(runtime) == 1


@pytest.mark.parametrize(
    "label, request_body, status, code",
    [
        ("empty body without media", {"body": "  "}, 422, "empty_message"),
        ("only invisible characters", {"body": "\u200b\u200d\ufeff \u2060"}, 422, "empty_message"),
        ("only blank letters", {"body": "\u3164\u2800\u034f"}, 422, "empty_message"),
        ("a control character", {"body": "hi\x00there"}, 422, "invalid_body"),
        ("over 1,600 characters once the footer is appended", {"body": "a" * (1600 - len(FOOTER))},
         422, "message_too_long"),
        ("media that is not a URL", {"body": "hi", "media_urls": ["file:///etc/passwd"]},
         422, "invalid_media"),
        ("invalid destination", {"to": "+1"}, 422, "invalid_destination"),
        ("a number that is not ours", {"business_number": "+15550001111"}, 422, "invalid_business_number"),
    ],
)
def test_a_refused_new_message_gets_a_clear_error_and_queues_nothing(
    runtime, client, admin_headers, label, request_body, status, code
):
    request = {"business_number": SERVICE_NUMBER, "to": CUSTOMER, "body": "hello", **request_body}

    response = client.post("/api/v1/messages", json=request, headers=admin_headers)

    assert response.status_code == status, label
    assert response.json["error"]["code"] == code
    assert response.json["error"]["message"]
    assert message_count(runtime) == 0


def test_a_body_that_fits_exactly_with_the_footer_is_accepted(runtime, client, admin_headers):
    body = "a" * (1600 - len(FOOTER) - 1)   # the newline before the footer counts too

    response = client.post("/api/v1/messages", json={
        "business_number": SERVICE_NUMBER, "to": CUSTOMER, "body": body}, headers=admin_headers)

    assert response.status_code == 202
    assert len(response.json["body"]) == 1600


def test_media_without_a_body_is_sent_with_the_footer(runtime, client, admin_headers):
    response = client.post("/api/v1/messages", json={
        "business_number": SERVICE_NUMBER, "to": CUSTOMER, "body": "",
        "media_urls": ["https://example.com/invoice.pdf"]}, headers=admin_headers)

    assert response.status_code == 202
    assert response.json["body"] == FOOTER
    assert len(response.json["attachments"]) == 1


def test_an_opted_out_contact_is_refused_409(runtime, carrier, client, admin_headers):
    conversation_id = inbound_conversation(runtime, carrier, body="STOP")
    before = message_count(runtime)

    reply = client.post(f"/api/v1/conversations/{conversation_id}/messages",
                        json={"body": "Sorry to see you go"}, headers=admin_headers)
    new = client.post("/api/v1/messages", json={
        "business_number": SALES_NUMBER, "to": CUSTOMER, "body": "Hello from sales"}, headers=admin_headers)

    assert (reply.status_code, reply.json["error"]["code"]) == (409, "opted_out")
    assert (new.status_code, new.json["error"]["code"]) == (409, "opted_out")
    assert message_count(runtime) == before


def test_a_closed_conversation_refuses_replies_and_notes_409(runtime, carrier, client, admin_headers):
    conversation_id = inbound_conversation(runtime, carrier)
    with transaction(runtime.sessions) as session:
        session.execute(update(Conversation).where(Conversation.id == conversation_id)
                        .values(status=ConversationStatus.closed))

    reply = client.post(f"/api/v1/conversations/{conversation_id}/messages",
                        json={"body": "hello?"}, headers=admin_headers)
    note = client.post(f"/api/v1/conversations/{conversation_id}/notes",
                       json={"body": "called them"}, headers=admin_headers)

    assert (reply.status_code, reply.json["error"]["code"]) == (409, "conversation_closed")
    assert (note.status_code, note.json["error"]["code"]) == (409, "conversation_closed")
    assert message_count(runtime) == 1


def test_a_note_is_stored_in_the_thread_and_never_queued(runtime, carrier, client, admin_headers):
    conversation_id = inbound_conversation(runtime, carrier)

    response = client.post(f"/api/v1/conversations/{conversation_id}/notes",
                           json={"body": "Customer prefers mornings"}, headers=admin_headers)

    assert response.status_code == 201
    assert (response.json["direction"], response.json["body"]) == ("note", "Customer prefers mornings")
    with runtime.sessions() as session:
        assert session.get(Message, response.json["id"]).send_state is None


def test_business_numbers_list_what_the_user_may_send_from_with_the_footer(runtime, client, make_user):
    _, admin = make_user("ada", "admin", ())
    _, agent = make_user("sam", "agent", ("sales",))

    everything = client.get("/api/v1/business-numbers", headers=admin).json["data"]
    sales_only = client.get("/api/v1/business-numbers", headers=agent).json["data"]

    assert [(n["number"], n["appended_message"]) for n in everything] == [
        (SERVICE_NUMBER, FOOTER), (SALES_NUMBER, "")]
    assert [n["number"] for n in sales_only] == [SALES_NUMBER]


def test_an_agent_cannot_send_from_another_teams_number(runtime, client, make_user):
    _, agent = make_user("sam", "agent", ("sales",))

    response = client.post("/api/v1/messages", json={
        "business_number": SERVICE_NUMBER, "to": CUSTOMER, "body": "hi"}, headers=agent)

    assert (response.status_code, response.json["error"]["code"]) == (403, "forbidden")


def test_an_idempotency_key_reused_for_another_request_is_refused(runtime, client, admin_headers):
    headers = {**admin_headers, "Idempotency-Key": "order-43"}
    first = client.post("/api/v1/messages", headers=headers,
                        json={"business_number": "+15552345678", "to": "+14155550123", "body": "first"})
    other = client.post("/api/v1/messages", headers=headers,
                        json={"business_number": "+15552345678", "to": "+14155550124", "body": "second"})
    long_key = client.post("/api/v1/messages", headers={**admin_headers, "Idempotency-Key": "k" * 256},
                           json={"business_number": "+15552345678", "to": "+14155550125", "body": "x"})

    assert first.status_code == 202
    assert (other.status_code, other.json["error"]["code"]) == (422, "idempotency_key_reused")
    assert (long_key.status_code, long_key.json["error"]["code"]) == (422, "invalid_idempotency_key")


def test_an_agent_cannot_text_into_a_colleagues_conversation_by_starting_a_new_one(
    runtime, carrier, client, make_user
):
    from tests.test_inbound import receive

    receive(runtime, carrier, "+14155550001")
    bob_id, bob = make_user("bob", "agent", ["service"])
    _, alice = make_user("alice", "agent", ["service"])
    [conversation] = client.get("/api/v1/conversations", headers=bob).json["data"]
    assert client.post(f"/api/v1/conversations/{conversation['id']}/claim", headers=bob).status_code == 200

    response = client.post("/api/v1/messages", headers=alice,
                           json={"business_number": "+15552345678", "to": "+14155550001", "body": "hi"})

    assert (response.status_code, response.json["error"]["code"]) == (409, "conversation_owned")
    messages = client.get(f"/api/v1/conversations/{conversation['id']}/messages", headers=bob).json["data"]
    assert [m["direction"] for m in messages] == ["inbound"]


def test_whoever_starts_a_conversation_owns_it_and_sees_the_answer_in_their_queue(
    runtime, carrier, client, make_user, monkeypatch
):
    from gateway import events

    emitted = []
    real_emit = events.emit
    monkeypatch.setattr(events, "emit", lambda session, kind, *a, **k: (emitted.append(kind),
                                                                        real_emit(session, kind, *a, **k))[1])
    sam_id, sam = make_user("sam", "agent", ["service"])

    sent = client.post("/api/v1/messages", json={
        "business_number": SERVICE_NUMBER, "to": CUSTOMER, "body": "Your quote is ready"}, headers=sam)
    assert sent.status_code == 202
    assert carrier.inbound(CUSTOMER, "Thanks, booking it").status_code == 200
    with runtime.sessions() as session:
        event_id = session.scalar(select(func.max(InboundEvent.id)))
    process_event(runtime.sessions, runtime.settings, event_id)

    [conversation] = client.get("/api/v1/conversations", headers=sam).json["data"]
    assert (conversation["assignee"], conversation["status"]) == (sam_id, "assigned")
    messages = client.get(f"/api/v1/conversations/{conversation['id']}/messages", headers=sam).json["data"]
    assert {m["direction"] for m in messages} == {"outbound", "inbound"}
    assert emitted.count("conversation.assigned") == 1   # a CRM listening learns who owns it


def test_an_admin_outside_the_numbers_team_who_starts_a_conversation_leaves_it_to_the_team(
    runtime, carrier, client, make_user
):
    _, ada = make_user("ada", "admin", ())
    _, sam = make_user("sam", "agent", ["service"])

    sent = client.post("/api/v1/messages", json={
        "business_number": SERVICE_NUMBER, "to": CUSTOMER, "body": "Your refund is on its way"}, headers=ada)

    assert sent.status_code == 202
    [conversation] = client.get("/api/v1/conversations", headers=sam).json["data"]   # the team sees it
    assert (conversation["assignee"], conversation["status"]) == (None, "unassigned")


def test_texting_into_an_open_conversation_nobody_owns_does_not_take_it(runtime, carrier, client, make_user):
    conversation_id = inbound_conversation(runtime, carrier)
    _, sam = make_user("sam", "agent", ["service"])

    sent = client.post("/api/v1/messages", json={
        "business_number": SERVICE_NUMBER, "to": CUSTOMER, "body": "We are on it"}, headers=sam)

    assert sent.status_code == 202
    with runtime.sessions() as session:
        conversation = session.get(Conversation, conversation_id)
        assert (conversation.assignee_id, conversation.status) == (None, ConversationStatus.unassigned)
