"""The inbox side: notifications unread first, marking read, badges, and /me."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from gateway.db import transaction
from gateway.models import Conversation, Direction
from tests.notify.conftest import add_folder, badges, notifications, receive

CUSTOMER = "+14155550100"


@pytest.fixture
def sam(runtime, make_user):
    add_folder(runtime, "cust-1", [CUSTOMER], sales="sam")
    return make_user("sam", "agent", ["sales"])[1]


def test_notifications_list_unread_first_then_newest_in_pages(runtime, carrier, client, sam):
    ids = [receive(runtime, carrier, CUSTOMER, f"text {n}") for n in range(5)]
    # sam reads the newest and the oldest
    listed = notifications(client, sam)
    by_message = {n["message_id"]: n["id"] for n in listed}
    for message_id in (ids[0], ids[4]):
        response = client.post(f"/api/v1/notifications/{by_message[message_id]}/read", headers=sam)
        assert response.status_code == 200

    pages, cursor = [], None
    while True:
        response = client.get("/api/v1/notifications", headers=sam,
                              query_string={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200
        pages.append([n["message_id"] for n in response.json["data"]])
        cursor = response.json["next_cursor"]
        if cursor is None:
            break

    assert pages == [[ids[3], ids[2]], [ids[1], ids[4]], [ids[0]]]
    first = listed[0]
    assert set(first) == {"id", "kind", "conversation_id", "message_id", "created_at", "read_at"}


def test_marking_one_read_stamps_it_and_lowers_the_badge(runtime, carrier, client, sam):
    receive(runtime, carrier, CUSTOMER)
    [notification] = notifications(client, sam)
    assert notification["read_at"] is None

    response = client.post(f"/api/v1/notifications/{notification['id']}/read", headers=sam)

    assert response.status_code == 200
    assert response.json["id"] == notification["id"]
    assert response.json["read_at"] is not None
    assert badges(client, sam)["unread_notifications"] == 0


def test_marking_all_read_clears_the_badge(runtime, carrier, client, sam):
    for n in range(3):
        receive(runtime, carrier, CUSTOMER, f"text {n}")

    response = client.post("/api/v1/notifications/read-all", headers=sam)

    assert response.status_code == 200
    assert response.json == {"marked_read": 3}
    assert all(n["read_at"] for n in notifications(client, sam))
    assert badges(client, sam)["unread_notifications"] == 0


def test_another_users_notification_cannot_be_marked_read(runtime, carrier, client, sam, make_user):
    _, sue = make_user("sue", "agent", ["service"])
    receive(runtime, carrier, CUSTOMER)
    [notification] = notifications(client, sam)

    response = client.post(f"/api/v1/notifications/{notification['id']}/read", headers=sue)

    assert response.status_code == 404
    assert response.json["error"] == {"code": "not_found", "message": "notification not found"}
    assert notifications(client, sam)[0]["read_at"] is None


def test_a_cursor_the_api_never_issued_is_a_clear_400(runtime, client, sam):
    response = client.get("/api/v1/notifications", headers=sam, query_string={"cursor": "bm9wZQ"})

    assert response.status_code == 400
    assert response.json["error"]["message"] == "cursor is not one this API issued"


def test_badges_count_unassigned_and_unresponded_work_the_user_can_see(
    runtime, carrier, client, make_user
):
    sue_id, sue = make_user("sue", "agent", ["service"])
    _, sam = make_user("sam", "agent", ["sales"])
    # Three customers text the service desk; sue is given the second and answers the third
    for n in range(3):
        receive(runtime, carrier, f"+1415555010{n}", f"text {n}")
    with transaction(runtime.sessions) as session:
        first, second, third = session.scalars(select(Conversation).order_by(Conversation.id))
        second.assignee_id, second.status = sue_id, "assigned"
        third.last_message_direction = Direction.outbound

    assert badges(client, sue) == {
        "unread_notifications": 3,   # unassigned work, once per text
        "unread_assigned": 1,        # the second
        "unassigned": 2,             # the first and third
        "unresponded": 2,            # the first and second: the customer spoke last
    }
    assert badges(client, sam) == {
        "unread_notifications": 0, "unread_assigned": 0, "unassigned": 0, "unresponded": 0,
    }


def test_me_shows_the_user_and_subscribe_all_can_be_switched(runtime, client, make_user):
    user_id, sue = make_user("sue", "agent", ["service"])

    assert client.get("/api/v1/me", headers=sue).json == {
        "id": user_id, "name": "sue", "role": "agent", "teams": ["service"], "subscribe_all": False}
    response = client.patch("/api/v1/me", json={"subscribe_all": True}, headers=sue)

    assert response.status_code == 200
    assert response.json["subscribe_all"] is True
    assert client.get("/api/v1/me", headers=sue).json["subscribe_all"] is True


@pytest.mark.parametrize(
    "label, body, message",
    [
        ("a string for a boolean", {"subscribe_all": "yes"}, "field 'subscribe_all' must be true or false"),
        ("a number for a boolean", {"subscribe_all": 1}, "field 'subscribe_all' must be true or false"),
        ("null", {"subscribe_all": None}, "field 'subscribe_all' must be true or false"),
        ("a field that is not a preference", {"role": "admin"}, "field 'role' cannot be changed here"),
        ("not an object", [True], 'send a JSON object, e.g. {"subscribe_all": true}'),
    ],
)
def test_a_bad_me_update_is_a_422_and_changes_nothing(runtime, client, make_user, label, body, message):
    _, sue = make_user("sue", "agent", ["service"])

    response = client.patch("/api/v1/me", json=body, headers=sue)

    assert response.status_code == 422
    assert response.json["error"]["message"] == message
    assert client.get("/api/v1/me", headers=sue).json["subscribe_all"] is False
    assert client.get("/api/v1/me", headers=sue).json["role"] == "agent"
