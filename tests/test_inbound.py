"""The routing worker's rules, seen through the API: threading, folders, keywords, media."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select, update

from gateway.db import transaction
from gateway.inbound import process_event
from gateway.models import (
    Contact,
    Conversation,
    ConversationStatus,
    Folder,
    FolderPhone,
    InboundEvent,
    Message,
)
from tests.conftest import SALES_NUMBER, SERVICE_NUMBER


def add_folder(runtime, external_id: str, *phones: str) -> int:
    with transaction(runtime.sessions) as session:
        folder = Folder(
            external_id=external_id,
            name=f"Folder {external_id}",
            phones=[FolderPhone(number=p) for p in phones],
        )
        session.add(folder)
        session.flush()
        return folder.id


def receive(runtime, carrier, sender: str, body: str = "hello", **kwargs) -> int:
    """Deliver a webhook and run the routing worker's task on it, as a worker would."""
    assert carrier.inbound(sender, body, **kwargs).status_code == 200
    with runtime.sessions() as session:
        event_id = session.scalar(select(func.max(InboundEvent.id)))
    process_event(runtime.sessions, runtime.settings, event_id)
    return event_id


def conversations(client, headers, **params) -> list[dict]:
    response = client.get("/api/v1/conversations", headers=headers, query_string=params)
    assert response.status_code == 200, response.json
    return response.json["data"]


def thread(client, headers, conversation_id: int) -> list[dict]:
    response = client.get(f"/api/v1/conversations/{conversation_id}/messages", headers=headers)
    assert response.status_code == 200, response.json
    return response.json["data"]


def test_a_sender_on_exactly_one_folder_is_matched_to_it(runtime, carrier, client, admin_headers):
    folder_id = add_folder(runtime, "cust-1", "+14155550100")

    receive(runtime, carrier, "+14155550100", "Is my order ready?")

    [conversation] = conversations(client, admin_headers)
    assert conversation["status"] == "assigned"
    assert conversation["folder_match"] == "matched"
    assert conversation["folder"] == {"id": folder_id, "name": "Folder cust-1"}
    assert conversation["candidate_folder_ids"] == [folder_id]
    assert conversation["business_number"] == SERVICE_NUMBER
    assert conversation["contact"]["number"] == "+14155550100"
    assert conversation["team"] == "service"
    assert conversation["unread"] is True
    [message] = thread(client, admin_headers, conversation["id"])
    assert (message["direction"], message["body"], message["from"], message["to"]) == (
        "inbound",
        "Is my order ready?",
        "+14155550100",
        SERVICE_NUMBER,
    )


def test_a_sender_on_several_folders_is_left_unassigned_with_the_candidates(
    runtime, carrier, client, admin_headers
):
    first = add_folder(runtime, "cust-1", "+14155550100")
    second = add_folder(runtime, "cust-2", "+14155550100", "+14155550111")

    receive(runtime, carrier, "+14155550100")

    [conversation] = conversations(client, admin_headers)
    assert (conversation["status"], conversation["folder_match"], conversation["folder"]) == (
        "unassigned",
        "ambiguous",
        None,
    )
    assert conversation["candidate_folder_ids"] == [first, second]


def test_an_unknown_sender_is_left_unassigned_for_the_numbers_team(runtime, carrier, client, admin_headers):
    add_folder(runtime, "cust-1", "+14155550100")

    receive(runtime, carrier, "+14155550999", to=SALES_NUMBER)

    [conversation] = conversations(client, admin_headers)
    assert (conversation["status"], conversation["folder_match"], conversation["team"]) == (
        "unassigned",
        "none",
        "sales",
    )
    assert conversation["candidate_folder_ids"] == []


def test_texts_from_one_sender_thread_into_one_conversation_in_arrival_order(
    runtime, carrier, client, admin_headers
):
    for body in ("first", "second", "third"):
        receive(runtime, carrier, "+14155550100", body)

    [conversation] = conversations(client, admin_headers)
    assert [m["body"] for m in thread(client, admin_headers, conversation["id"])] == [
        "first",
        "second",
        "third",
    ]


def test_the_same_sender_on_two_business_numbers_has_two_conversations(
    runtime, carrier, client, admin_headers
):
    receive(runtime, carrier, "+14155550100", to=SERVICE_NUMBER)
    receive(runtime, carrier, "+14155550100", to=SALES_NUMBER)

    listed = conversations(client, admin_headers)
    assert sorted(c["business_number"] for c in listed) == sorted([SERVICE_NUMBER, SALES_NUMBER])
    assert len({c["contact"]["id"] for c in listed}) == 1


def test_a_closed_conversation_never_reopens_a_new_text_opens_a_new_one(
    runtime, carrier, client, admin_headers
):
    receive(runtime, carrier, "+14155550100", "before")
    with transaction(runtime.sessions) as session:
        session.execute(update(Conversation).values(status=ConversationStatus.closed))

    receive(runtime, carrier, "+14155550100", "after")

    newest, closed = conversations(client, admin_headers)
    assert (closed["status"], newest["status"]) == ("closed", "unassigned")
    assert [m["body"] for m in thread(client, admin_headers, closed["id"])] == ["before"]
    assert [m["body"] for m in thread(client, admin_headers, newest["id"])] == ["after"]


def test_a_folder_imported_later_claims_an_unplaced_conversation_on_the_next_text(
    runtime, carrier, client, admin_headers
):
    receive(runtime, carrier, "+14155550100", "who is this?")
    folder_id = add_folder(runtime, "cust-1", "+14155550100")

    receive(runtime, carrier, "+14155550100", "it's me again")

    [conversation] = conversations(client, admin_headers)
    assert (conversation["folder_match"], conversation["folder"]["id"]) == ("matched", folder_id)


@pytest.mark.parametrize(
    "keyword", ["STOP", "stop", "  Unsubscribe ", "STOPALL", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"]
)
def test_an_opt_out_keyword_opts_the_contact_out_and_is_still_stored(
    runtime, carrier, client, admin_headers, keyword
):
    receive(runtime, carrier, "+14155550100", keyword)

    [conversation] = conversations(client, admin_headers)
    assert conversation["contact"]["opted_out"] is True
    [message] = thread(client, admin_headers, conversation["id"])
    assert (message["body"], message["keyword"]) == (keyword, "opt_out")


def test_start_after_stop_opts_the_contact_back_in(runtime, carrier, client, admin_headers):
    receive(runtime, carrier, "+14155550100", "STOP")
    receive(runtime, carrier, "+14155550100", "start")

    [conversation] = conversations(client, admin_headers)
    assert conversation["contact"]["opted_out"] is False
    assert [m["keyword"] for m in thread(client, admin_headers, conversation["id"])] == ["opt_out", "opt_in"]


def test_a_sentence_with_stop_in_it_is_not_an_opt_out(runtime, carrier, client, admin_headers):
    receive(runtime, carrier, "+14155550100", "please stop by tomorrow")

    [conversation] = conversations(client, admin_headers)
    assert conversation["contact"]["opted_out"] is False


def test_help_is_noted_on_the_message(runtime, carrier, client, admin_headers):
    receive(runtime, carrier, "+14155550100", "HELP")

    [conversation] = conversations(client, admin_headers)
    assert thread(client, admin_headers, conversation["id"])[0]["keyword"] == "help"


def test_mms_media_is_kept_as_pending_attachments_and_summarised(runtime, carrier, client, admin_headers):
    media = (
        "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1",
        "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME2.png",
    )

    receive(runtime, carrier, "+14155550100", "", media=media)

    [conversation] = conversations(client, admin_headers)
    [message] = thread(client, admin_headers, conversation["id"])
    assert message["summary"] == "Attachments (2)"
    assert [(a["status"], a["content_type"]) for a in message["attachments"]] == [
        ("pending", "application/octet-stream"),
        ("pending", "image/png"),
    ]


def test_a_redelivered_event_changes_nothing_the_second_time(runtime, carrier, client, admin_headers):
    event_id = receive(runtime, carrier, "+14155550100", "once")

    again = process_event(runtime.sessions, runtime.settings, event_id)

    [conversation] = conversations(client, admin_headers)
    [message] = thread(client, admin_headers, conversation["id"])
    assert again == message["id"]


def test_two_workers_on_one_sender_at_the_same_moment_make_one_conversation(runtime, carrier):
    # Given many senders, each with several texts stored and not yet processed
    senders = [f"+1415555{n:04d}" for n in range(12)]
    for sender in senders:
        for n in range(3):
            assert carrier.inbound(sender, f"text {n}").status_code == 200
    with runtime.sessions() as session:
        event_ids = list(session.scalars(select(InboundEvent.id).order_by(InboundEvent.id)))

    # When six workers process them all at once, released together
    barrier = threading.Barrier(6)
    errors = []

    def work(ids):
        barrier.wait()
        for event_id in ids:
            try:
                process_event(runtime.sessions, runtime.settings, event_id)
            except Exception as exc:  # collected, then asserted below
                errors.append(exc)

    # Round-robin so the texts of one sender land on different workers at once.
    threads = [threading.Thread(target=work, args=(event_ids[i::6],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # Then each sender has exactly one open conversation holding all three texts
    assert errors == []
    with runtime.sessions() as session:
        per_contact = session.execute(
            select(Contact.number, func.count(func.distinct(Conversation.id)), func.count(Message.id))
            .join(Conversation, Conversation.contact_id == Contact.id)
            .join(Message, Message.conversation_id == Conversation.id)
            .group_by(Contact.number)
        ).all()
    assert sorted(per_contact) == [(sender, 1, 3) for sender in senders]


@pytest.mark.parametrize("path", ["one event at a time", "separate batches"])
def test_the_last_stop_or_start_to_arrive_wins_whatever_order_workers_handle_them(
    runtime, carrier, client, admin_headers, path
):
    from gateway.inbound_batch import process_events

    # Given STOP, then START, from one sender: stored, not yet processed
    for body in ("STOP", "START"):
        assert carrier.inbound("+14155550100", body).status_code == 200
    with runtime.sessions() as session:
        stop_id, start_id = session.scalars(select(InboundEvent.id).order_by(InboundEvent.id))

    # When a worker handles the later START first, and the STOP after it
    for event_id in (start_id, stop_id):
        if path == "one event at a time":
            process_event(runtime.sessions, runtime.settings, event_id)
        else:
            process_events(runtime.sessions, runtime.settings, [event_id])

    # Then the contact is opted in, as their last word said, and both texts are in the thread
    [conversation] = conversations(client, admin_headers)
    assert conversation["contact"]["opted_out"] is False
    assert [m["body"] for m in thread(client, admin_headers, conversation["id"])] == ["STOP", "START"]
