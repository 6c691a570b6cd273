"""A new text tells the people responsible, each once, and shows in their inbox and badges."""

from __future__ import annotations

import logging
import threading

from sqlalchemy import func, select

from gateway.db import transaction
from gateway.inbound import process_event
from gateway.models import Conversation, EventDelivery, InboundEvent
from gateway.notifications import notify_inbound
from tests.conftest import SALES_NUMBER
from tests.notify.conftest import (
    add_folder,
    arrive,
    badges,
    forget_notified,
    notifications,
    receive,
    subscribe_all,
)

CUSTOMER = "+14155550100"


def kinds(client, headers) -> list[tuple[str, int]]:
    return [(n["kind"], n["message_id"]) for n in notifications(client, headers)]


def test_a_text_to_a_folders_number_tells_its_resources_and_the_subscribers_each_once(
    runtime, carrier, client, make_user
):
    # Given a folder whose sales and service resources are users, a subscriber on the
    # number's team, a subscriber on another team, and a colleague who is neither
    _, sam = make_user("sam", "agent", ["sales"])
    _, sue = make_user("sue", "agent", ["service"])
    _, fan = make_user("fan", "agent", ["service"])
    _, far = make_user("far", "agent", ["sales"])
    _, bob = make_user("bob", "agent", ["service"])
    subscribe_all(client, fan)
    subscribe_all(client, far)
    add_folder(runtime, "cust-1", [CUSTOMER], sales="sam", service="sue")

    # When the customer texts the service desk
    message_id = receive(runtime, carrier, CUSTOMER, "Is my order ready?")

    # Then exactly sam, sue and the service subscriber are told, once each
    for headers in (sam, sue, fan):
        assert kinds(client, headers) == [("message.received", message_id)]
        assert badges(client, headers)["unread_notifications"] == 1
    for headers in (far, bob):
        assert kinds(client, headers) == []


def test_a_redelivered_or_lost_notify_task_tells_nobody_twice(runtime, carrier, client, make_user):
    _, sam = make_user("sam", "agent", ["sales"])
    _, sue = make_user("sue", "agent", ["service"])
    add_folder(runtime, "cust-1", [CUSTOMER], sales="sam", service="sue")
    message_id = receive(runtime, carrier, CUSTOMER)

    # The routing task is redelivered, and the notify task runs again after a worker
    # died before marking the message notified.
    with runtime.sessions() as session:
        event_id = session.scalar(select(InboundEvent.id))
    assert process_event(runtime.sessions, runtime.settings, event_id) == message_id
    notify_inbound(runtime.sessions, runtime.settings, message_id)
    forget_notified(runtime, message_id)
    notify_inbound(runtime.sessions, runtime.settings, message_id)

    for headers in (sam, sue):
        assert kinds(client, headers) == [("message.received", message_id)]
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(EventDelivery)) == 1


def race(fn, *args) -> None:
    """Run fn(*args) in two real threads released at the same moment."""
    start, errors = threading.Barrier(2), []

    def run():
        try:
            start.wait(timeout=10)
            fn(*args)
        except BaseException as exc:  # re-raised below in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []


def test_two_workers_racing_on_one_message_tell_each_recipient_once(runtime, carrier, client, make_user):
    _, sam = make_user("sam", "agent", ["sales"])
    _, sue = make_user("sue", "agent", ["service"])
    _, fan = make_user("fan", "agent", ["service"])
    subscribe_all(client, fan)
    add_folder(runtime, "cust-1", [CUSTOMER], sales="sam", service="sue")
    message_ids = [arrive(runtime, carrier, CUSTOMER, f"text {n}") for n in range(5)]

    for message_id in message_ids:
        race(notify_inbound, runtime.sessions, runtime.settings, message_id)

    for headers in (sam, sue, fan):
        assert sorted(n["message_id"] for n in notifications(client, headers)) == sorted(message_ids)
    with runtime.sessions() as session:
        event_ids = session.scalars(select(EventDelivery.event_id)).all()
    assert len(event_ids) == len(set(event_ids)) == len(message_ids)


def test_a_text_nobody_owns_tells_the_numbers_team_there_is_unassigned_work(
    runtime, carrier, client, make_user
):
    _, sue = make_user("sue", "agent", ["service"])
    _, sam = make_user("sam", "agent", ["sales"])

    message_id = receive(runtime, carrier, CUSTOMER)

    assert kinds(client, sue) == [("conversation.unassigned", message_id)]
    assert kinds(client, sam) == []
    assert badges(client, sue)["unassigned"] == 1


def test_a_folder_resource_that_names_no_user_is_logged_and_the_others_are_told(
    runtime, carrier, client, make_user, caplog
):
    _, sue = make_user("sue", "agent", ["service"])
    add_folder(runtime, "cust-1", [CUSTOMER], sales="nobody-by-this-name", service="sue")

    with caplog.at_level(logging.WARNING, logger="gateway.notifications"):
        message_id = receive(runtime, carrier, CUSTOMER)

    assert kinds(client, sue) == [("message.received", message_id)]
    [warning] = [r for r in caplog.records if r.msg == "folder resource names no user; not notified"]
    assert warning.resource == "nobody-by-this-name"


def test_the_owner_of_a_conversation_is_told_instead_of_the_folder_resources(
    runtime, carrier, client, make_user
):
    ann_id, ann = make_user("ann", "agent", ["service"])
    _, sam = make_user("sam", "agent", ["sales"])
    add_folder(runtime, "cust-1", [CUSTOMER], sales="sam")
    first = receive(runtime, carrier, CUSTOMER, "first")
    with transaction(runtime.sessions) as session:
        session.scalar(select(Conversation)).assignee_id = ann_id

    second = receive(runtime, carrier, CUSTOMER, "second")

    assert kinds(client, ann) == [("message.received", second)]
    assert kinds(client, sam) == [("message.received", first)]
    assert badges(client, ann)["unread_assigned"] == 1


def test_subscribers_hear_only_of_numbers_their_teams_may_see(runtime, carrier, client, make_user):
    _, fan = make_user("fan", "agent", ["service"])
    subscribe_all(client, fan)

    receive(runtime, carrier, CUSTOMER, "to sales", to=SALES_NUMBER)

    assert kinds(client, fan) == []
