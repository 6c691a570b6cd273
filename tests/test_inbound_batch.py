"""The batch path of the routing worker (gateway/inbound_batch.py), seen through the API.

Webhooks are stored by the real webhook (no worker runs, so the events wait), then a
batch of them is processed as `process_inbound_events` does. On SQLite the batch is the
one-event path in a loop; on PostgreSQL it is set-based, which is what these rules test.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import func, select

from gateway.db import transaction
from gateway.inbound_batch import process_events
from gateway.models import (
    Contact,
    Conversation,
    EventStatus,
    Folder,
    FolderPhone,
    InboundEvent,
    Message,
    Notification,
)
from gateway.notifications import find_unnotified_messages, notify_inbound
from tests.conftest import SERVICE_NUMBER
from tests.test_inbound import conversations, thread


def stored_event_ids(runtime) -> list[int]:
    with runtime.sessions() as session:
        return list(session.scalars(select(InboundEvent.id).order_by(InboundEvent.id)))


def process(runtime, event_ids) -> None:
    """What the batch actor does: thread the batch, then notify what the batch left to notify."""
    result = process_events(runtime.sessions, runtime.settings, event_ids)
    for message_id in result.to_notify:
        notify_inbound(runtime.sessions, runtime.settings, message_id)


def count(runtime, model, *where) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def add_folder(runtime, external_id: str, *phones: str, sales: str | None = None) -> int:
    with transaction(runtime.sessions) as session:
        folder = Folder(external_id=external_id, name=f"Folder {external_id}", sales_resource=sales,
                        phones=[FolderPhone(number=p) for p in phones])
        session.add(folder)
        session.flush()
        return folder.id


def test_a_batch_threads_each_sender_into_one_conversation_in_arrival_order(
    runtime, carrier, client, admin_headers
):
    # Given six texts from two senders, stored and waiting
    for n in range(6):
        assert carrier.inbound(f"+1415555010{n % 2}", f"text {n}").status_code == 200

    # When they are processed as one batch
    process(runtime, stored_event_ids(runtime))

    # Then each sender has one conversation holding its texts oldest first
    listed = conversations(client, admin_headers)
    assert sorted(c["contact"]["number"] for c in listed) == ["+14155550100", "+14155550101"]
    for conversation in listed:
        bodies = [m["body"] for m in thread(client, admin_headers, conversation["id"])]
        offset = int(conversation["contact"]["number"][-1])
        assert bodies == [f"text {n}" for n in range(offset, 6, 2)]
        assert conversation["status"] == "unassigned" and conversation["unread"] is True
    assert count(runtime, InboundEvent, InboundEvent.status == EventStatus.processed) == 6


def test_two_batches_racing_on_one_sender_meet_in_one_conversation(runtime, carrier, client, admin_headers):
    # Given forty texts from one new sender, split into two batches
    for n in range(40):
        assert carrier.inbound("+14155550100", f"text {n}").status_code == 200
    ids = stored_event_ids(runtime)
    halves = [ids[0::2], ids[1::2]]

    # When two workers process the two batches at the same moment
    barrier = threading.Barrier(2)
    errors = []

    def work(batch):
        barrier.wait()
        try:
            process(runtime, batch)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(half,)) for half in halves]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)

    # Then there is one contact, one conversation and every text once, in arrival order
    assert errors == []
    assert count(runtime, Contact) == 1
    [conversation] = conversations(client, admin_headers)
    bodies = [m["body"] for m in thread(client, admin_headers, conversation["id"])]
    assert bodies == [f"text {n}" for n in range(40)]


def test_a_redelivered_batch_changes_nothing(runtime, carrier, make_user):
    # Given a sender on a folder whose sales resource is a user, and a processed batch
    make_user("sam", "agent")
    add_folder(runtime, "cust-1", "+14155550100", sales="sam")
    for n in range(3):
        carrier.inbound("+14155550100", f"text {n}")
    ids = stored_event_ids(runtime)
    process(runtime, ids)

    # When the same batch is delivered again
    process(runtime, ids)

    # Then nothing is doubled: three messages, each notified once
    assert count(runtime, Message) == 3
    assert count(runtime, Conversation) == 1
    assert count(runtime, Notification) == 3


def test_a_batch_matches_folders_and_notifies_the_people_responsible(runtime, carrier, client, make_user):
    # Given a folder for one sender, with a user as its sales resource, and a subscriber
    sam, sam_headers = make_user("sam", "agent")
    folder_id = add_folder(runtime, "cust-1", "+14155550100", sales="sam")
    add_folder(runtime, "cust-2", "+14155550111")
    add_folder(runtime, "cust-3", "+14155550111")
    carrier.inbound("+14155550100", "matched")
    carrier.inbound("+14155550111", "ambiguous")
    carrier.inbound("+14155550122", "nobody's")

    # When the three are processed as one batch
    process(runtime, stored_event_ids(runtime))

    # Then each conversation has its folder outcome, sam is told of the matched text,
    # and no text is left for the sweeper to notify again
    _, admin = make_user("root", "admin", ())
    outcomes = {c["contact"]["number"]: (c["folder_match"], c["folder"] and c["folder"]["id"], c["status"])
                for c in conversations(client, admin)}
    assert outcomes == {
        "+14155550100": ("matched", folder_id, "assigned"),
        "+14155550111": ("ambiguous", None, "unassigned"),
        "+14155550122": ("none", None, "unassigned"),
    }
    told = client.get("/api/v1/notifications", headers=sam_headers).json["data"]
    matched = next(c for c in conversations(client, admin) if c["folder_match"] == "matched")
    assert {(n["kind"], n["conversation_id"]) for n in told} >= {("message.received", matched["id"])}
    assert find_unnotified_messages(runtime.sessions, grace=dt.timedelta(0)) == []


def test_keywords_in_one_batch_apply_in_arrival_order(runtime, carrier):
    carrier.inbound("+14155550100", "STOP")
    carrier.inbound("+14155550100", "START")
    carrier.inbound("+14155550111", "START")
    carrier.inbound("+14155550111", "STOP")

    process(runtime, stored_event_ids(runtime))

    with runtime.sessions() as session:
        opted_out = dict(session.execute(select(Contact.number, Contact.opted_out)).all())
    assert opted_out == {"+14155550100": False, "+14155550111": True}


def test_a_text_after_a_close_opens_a_new_conversation_in_a_batch(runtime, carrier, client, admin_headers):
    carrier.inbound("+14155550100", "first")
    process(runtime, stored_event_ids(runtime))
    [first] = conversations(client, admin_headers)
    assert client.post(f"/api/v1/conversations/{first['id']}/close", headers=admin_headers).status_code == 200

    carrier.inbound("+14155550100", "again")
    process(runtime, stored_event_ids(runtime))

    listed = {c["id"]: c for c in conversations(client, admin_headers)}
    assert len(listed) == 2
    [second_id] = [i for i in listed if i != first["id"]]
    assert [m["body"] for m in thread(client, admin_headers, second_id)] == ["again"]
    assert listed[second_id]["business_number"] == SERVICE_NUMBER


def test_an_event_that_cannot_be_processed_holds_up_only_itself(runtime, carrier, client, admin_headers):
    # Given a batch of four stored texts, one of them with a payload no worker can read
    for n in range(4):
        carrier.inbound(f"+1415555010{n}", f"text {n}")
    ids = stored_event_ids(runtime)
    with transaction(runtime.sessions) as session:
        session.get(InboundEvent, ids[1]).payload = {"not": "a message"}

    # When the batch is processed, the task fails (and will be retried)...
    with pytest.raises(TypeError):
        process(runtime, ids)

    # ...but the three readable texts are threaded and notified, and only the poison waits
    bodies = sorted(c["contact"]["number"] for c in conversations(client, admin_headers))
    assert bodies == ["+14155550100", "+14155550102", "+14155550103"]
    assert count(runtime, InboundEvent, InboundEvent.status == EventStatus.received) == 1
    assert find_unnotified_messages(runtime.sessions, grace=dt.timedelta(0)) == []


@pytest.mark.parametrize("path", ["one event", "batch"])
def test_a_text_to_a_number_this_workers_config_lacks_waits_for_one_that_has_it(runtime, carrier, path):
    # The web process's config knew the number (it stored the text as routable); this
    # worker's does not yet (a rolling deploy).
    from gateway.inbound import UNKNOWN_NUMBER_GRACE, process_event
    from gateway.settings import Settings

    assert carrier.inbound("+14155550100", "hello").status_code == 200
    [event_id] = stored_event_ids(runtime)
    config = runtime.settings.config.model_copy(update={"business_numbers": []})
    stale = Settings(**{**runtime.settings.model_dump(), "config": config})

    def run(settings):
        if path == "batch":
            process_events(runtime.sessions, settings, [event_id])
        else:
            process_event(runtime.sessions, settings, event_id)

    def status():
        with runtime.sessions() as session:
            return session.get(InboundEvent, event_id).status

    run(stale)
    assert status() == EventStatus.received          # left for a worker that knows the number
    run(runtime.settings)
    assert status() == EventStatus.processed         # and that one threads it
    assert count(runtime, Message) == 1

    # A text no worker learns the number of in time is given up as unroutable.
    assert carrier.inbound("+14155550101", "anyone?").status_code == 200
    event_id = max(stored_event_ids(runtime))
    with transaction(runtime.sessions) as session:
        session.get(InboundEvent, event_id).received_at -= UNKNOWN_NUMBER_GRACE
    run(stale)
    assert status() == EventStatus.unroutable
