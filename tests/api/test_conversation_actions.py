"""Claim, assign, transfer, close, read and unread, as the inbox's users do them."""

from __future__ import annotations

import threading

import pytest

from tests.conftest import SERVICE_NUMBER
from tests.test_inbound import add_folder, receive


@pytest.fixture
def conversation_id(runtime, carrier, client, admin_headers) -> int:
    receive(runtime, carrier, "+14155550100", "Can someone help?", to=SERVICE_NUMBER)
    return client.get("/api/v1/conversations", headers=admin_headers).json["data"][0]["id"]


def act(client, headers, conversation_id, action, body=None):
    return client.post(f"/api/v1/conversations/{conversation_id}/{action}", headers=headers, json=body)


def test_an_agent_claims_unowned_work_and_a_second_claim_is_refused(client, make_user, conversation_id):
    sam_id, sam = make_user("sam", "agent", ["service"])
    _, sid = make_user("sid", "agent", ["service"])

    first = act(client, sam, conversation_id, "claim")
    second = act(client, sid, conversation_id, "claim")

    assert first.status_code == 200
    assert (first.json["assignee"], first.json["status"]) == (sam_id, "assigned")
    assert second.status_code == 404  # owned by sam now: sid no longer sees it
    assert act(client, sam, conversation_id, "claim").json["error"]["code"] == "already_owned"


def test_two_agents_claiming_at_the_same_moment_one_wins(app, make_user, conversation_id):
    agents = [make_user(f"agent{n}", "agent", ["service"]) for n in range(6)]
    barrier = threading.Barrier(len(agents))
    outcomes = []

    def claim(headers):
        client = app.test_client()
        barrier.wait()
        outcomes.append(act(client, headers, conversation_id, "claim").status_code)

    threads = [threading.Thread(target=claim, args=(headers,)) for _, headers in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(outcomes)[0] == 200
    assert outcomes.count(200) == 1
    assert set(outcomes) - {200} <= {404, 409}


def test_a_supervisor_assigns_and_the_new_owner_is_notified(client, make_user, conversation_id):
    sam_id, sam = make_user("sam", "agent", ["sales"])
    _, sue = make_user("sue", "supervisor", [])

    response = act(client, sue, conversation_id, "assign", {"assignee_id": sam_id})

    assert (response.status_code, response.json["assignee"]) == (200, sam_id)
    kinds = [n["kind"] for n in client.get("/api/v1/notifications", headers=sam).json["data"]]
    assert kinds == ["conversation.assigned"]
    assert [c["id"] for c in client.get("/api/v1/conversations", headers=sam).json["data"]] == [
        conversation_id
    ]


def test_an_agent_transfers_only_what_they_own(client, make_user, conversation_id):
    sam_id, sam = make_user("sam", "agent", ["service"])
    sid_id, sid = make_user("sid", "agent", ["service"])

    refused = act(client, sid, conversation_id, "assign", {"assignee_id": sid_id})
    act(client, sam, conversation_id, "claim")
    transferred = act(client, sam, conversation_id, "assign", {"assignee_id": sid_id})

    assert (refused.status_code, refused.json["error"]["code"]) == (403, "forbidden")
    assert (transferred.status_code, transferred.json["assignee"]) == (200, sid_id)


@pytest.mark.parametrize(
    "body, status, message",
    [
        (None, 422, 'expected {"assignee_id": <user id or null>}'),
        ({"assignee_id": "sam"}, 422, "assignee_id must be a user id or null"),
        ({"assignee_id": True}, 422, "assignee_id must be a user id or null"),
        ({"assignee_id": 999}, 422, "no user with id 999"),
    ],
)
def test_a_bad_assignment_is_refused_and_changes_nothing(
    client, admin_headers, conversation_id, body, status, message
):
    response = act(client, admin_headers, conversation_id, "assign", body)

    assert (response.status_code, response.json["error"]["message"]) == (status, message)
    shown = client.get(f"/api/v1/conversations/{conversation_id}", headers=admin_headers).json
    assert (shown["assignee"], shown["status"]) == (None, "unassigned")


def test_unassigning_a_folder_conversation_keeps_it_assigned_to_the_folder(
    runtime, carrier, client, make_user, admin_headers
):
    add_folder(runtime, "cust", "+14155550222")
    receive(runtime, carrier, "+14155550222")
    [conversation] = [
        c
        for c in client.get("/api/v1/conversations", headers=admin_headers).json["data"]
        if c["contact"]["number"] == "+14155550222"
    ]
    sam_id, _ = make_user("sam", "agent", ["service"])

    act(client, admin_headers, conversation["id"], "assign", {"assignee_id": sam_id})
    response = act(client, admin_headers, conversation["id"], "assign", {"assignee_id": None})

    assert (response.json["assignee"], response.json["status"]) == (None, "assigned")


def test_closed_is_final(client, admin_headers, make_user, conversation_id):
    sam_id, _ = make_user("sam", "agent", ["service"])

    closed = act(client, admin_headers, conversation_id, "close")
    again = act(client, admin_headers, conversation_id, "close")
    assign = act(client, admin_headers, conversation_id, "assign", {"assignee_id": sam_id})
    claim = act(client, admin_headers, conversation_id, "claim")

    assert (closed.status_code, closed.json["status"]) == (200, "closed")
    assert (again.status_code, again.json["status"]) == (200, "closed")
    assert (assign.status_code, assign.json["error"]["code"]) == (409, "conversation_closed")
    assert (claim.status_code, claim.json["error"]["code"]) == (409, "conversation_closed")


def test_read_and_unread(client, admin_headers, conversation_id):
    assert act(client, admin_headers, conversation_id, "read").json["unread"] is False
    assert act(client, admin_headers, conversation_id, "unread").json["unread"] is True


def test_nobody_acts_on_a_conversation_they_cannot_see(client, make_user, conversation_id):
    _, sally = make_user("sally", "agent", ["sales"])

    for action in ("claim", "close", "read", "unread"):
        assert act(client, sally, conversation_id, action).status_code == 404
