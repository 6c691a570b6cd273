"""Nothing is lost: a notify task that never ran is redone; assignments tell the new owner."""

from __future__ import annotations

import datetime as dt

import pytest
import redis
from sqlalchemy import select, update

from gateway.db import transaction
from gateway.models import Conversation, InboundEvent, utcnow
from gateway.notifications import notify_assigned
from gateway.sweeper import Sweeper
from tests.conftest import wait_until
from tests.notify.conftest import add_folder, arrive, notifications

CUSTOMER = "+14155550100"


@pytest.mark.processes
def test_a_text_whose_notify_task_was_lost_is_notified_by_the_sweeper(
    runtime, carrier, client, make_user, workers
):
    # Given a text that was threaded, but whose notify task never reached the broker
    _, sam = make_user("sam", "agent", ["sales"])
    add_folder(runtime, "cust-1", [CUSTOMER], sales="sam")
    message_id = arrive(runtime, carrier, CUSTOMER)
    with transaction(runtime.sessions) as session:
        session.execute(update(InboundEvent).values(processed_at=utcnow() - dt.timedelta(minutes=1)))
    redis.Redis.from_url(runtime.redis_url).flushdb()  # the broker lost every queued task
    workers(threads=2)

    # When the sweeper passes, twice
    sweeper = Sweeper(runtime)
    sweeper.sweep_once()
    sweeper.sweep_once()

    # Then sam is told, once
    wait_until(lambda: notifications(client, sam), message="sam's notification")
    assert [(n["kind"], n["message_id"]) for n in notifications(client, sam)] == [
        ("message.received", message_id)]


def test_a_conversation_given_to_someone_tells_them_and_not_the_giver(
    runtime, carrier, client, make_user, admin_headers
):
    ann_id, ann = make_user("ann", "agent", ["service"])
    sue_id, sue = make_user("sue", "supervisor", ["service"])
    arrive(runtime, carrier, CUSTOMER)

    with transaction(runtime.sessions) as session:
        conversation = session.scalar(select(Conversation))
        conversation.assignee_id = ann_id
        notify_assigned(session, conversation, assigned_by_id=sue_id)

    [told] = notifications(client, ann)
    assert (told["kind"], told["conversation_id"], told["message_id"]) == (
        "conversation.assigned", conversation.id, None)
    assert notifications(client, sue) == []
    [event] = client.get("/api/v1/admin/event-deliveries", headers=admin_headers).json["data"]
    assert event["type"] == "conversation.assigned"


def test_taking_a_conversation_yourself_tells_nobody(runtime, carrier, client, make_user):
    ann_id, ann = make_user("ann", "agent", ["service"])
    arrive(runtime, carrier, CUSTOMER)

    with transaction(runtime.sessions) as session:
        conversation = session.scalar(select(Conversation))
        conversation.assignee_id = ann_id
        notify_assigned(session, conversation, assigned_by_id=ann_id)

    assert notifications(client, ann) == []
