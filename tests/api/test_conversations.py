"""GET /api/v1/conversations and /messages: who sees what, filters, pages, errors."""

from __future__ import annotations

import pytest

from tests.conftest import SALES_NUMBER, SERVICE_NUMBER
from tests.test_inbound import add_folder, receive


def listed(client, headers, **params):
    response = client.get("/api/v1/conversations", headers=headers, query_string=params)
    assert response.status_code == 200, response.json
    return response.json


@pytest.mark.parametrize(
    "headers, message",
    [
        ({}, "missing bearer token (Authorization: Bearer <token>)"),
        ({"Authorization": "Bearer gw_not-a-token"}, "invalid or revoked token"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing bearer token (Authorization: Bearer <token>)"),
    ],
)
def test_no_token_or_a_bad_token_gets_401(client, headers, message):
    response = client.get("/api/v1/conversations", headers=headers)

    assert response.status_code == 401
    assert response.json == {"error": {"code": "unauthorized", "message": message}}


def test_conversations_filter_by_status_folder_match_and_business_number(
    runtime, carrier, client, admin_headers
):
    add_folder(runtime, "one", "+14155550001")
    add_folder(runtime, "two-a", "+14155550002")
    add_folder(runtime, "two-b", "+14155550002")
    receive(runtime, carrier, "+14155550001")
    receive(runtime, carrier, "+14155550002")
    receive(runtime, carrier, "+14155550003", to=SALES_NUMBER)

    def numbers(**params):
        return sorted(c["contact"]["number"] for c in listed(client, admin_headers, **params)["data"])

    assert numbers() == ["+14155550001", "+14155550002", "+14155550003"]
    assert numbers(status="assigned") == ["+14155550001"]
    assert numbers(status="unassigned") == ["+14155550002", "+14155550003"]
    assert numbers(status="closed") == []
    assert numbers(folder_match="ambiguous") == ["+14155550002"]
    assert numbers(folder_match="none") == ["+14155550003"]
    assert numbers(business_number="5552349000") == ["+14155550003"]


@pytest.mark.parametrize(
    "params, message",
    [
        ({"status": "open"}, "status must be one of all, unassigned, assigned, closed"),
        ({"folder_match": "maybe"}, "folder_match must be one of matched, none, ambiguous"),
        ({"limit": "0"}, "limit must be a whole number from 1 to 200"),
        ({"limit": "many"}, "limit must be a whole number from 1 to 200"),
        ({"cursor": "not-a-cursor"}, "cursor is not one this API issued"),
    ],
)
def test_bad_list_parameters_get_400_with_the_reason(client, admin_headers, params, message):
    response = client.get("/api/v1/conversations", headers=admin_headers, query_string=params)

    assert response.status_code == 400
    assert response.json == {"error": {"code": "bad_request", "message": message}}


def test_conversations_page_newest_activity_first_without_gaps_or_repeats(
    runtime, carrier, client, admin_headers
):
    for n in range(7):
        receive(runtime, carrier, f"+1415555{n:04d}")
    receive(runtime, carrier, "+14155550002", "bumps this one to the top")

    seen, cursor = [], None
    while True:
        page = listed(client, admin_headers, limit=3, **({"cursor": cursor} if cursor else {}))
        seen += [c["contact"]["number"] for c in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == [
        "+14155550002",
        "+14155550006",
        "+14155550005",
        "+14155550004",
        "+14155550003",
        "+14155550001",
        "+14155550000",
    ]


def test_messages_list_oldest_first_and_before_loads_older_ones(runtime, carrier, client, admin_headers):
    for n in range(5):
        receive(runtime, carrier, "+14155550100", f"text {n}")
    [conversation] = listed(client, admin_headers)["data"]
    url = f"/api/v1/conversations/{conversation['id']}/messages"

    newest = client.get(url, headers=admin_headers, query_string={"limit": 2}).json
    older = client.get(
        url, headers=admin_headers, query_string={"limit": 2, "before": newest["next_cursor"]}
    ).json
    oldest = client.get(
        url, headers=admin_headers, query_string={"limit": 2, "before": older["next_cursor"]}
    ).json

    assert [m["body"] for m in newest["data"]] == ["text 3", "text 4"]
    assert [m["body"] for m in older["data"]] == ["text 1", "text 2"]
    assert [m["body"] for m in oldest["data"]] == ["text 0"]
    assert oldest["next_cursor"] is None


def test_an_agent_sees_their_teams_unowned_work_and_nothing_else(runtime, carrier, client, make_user):
    add_folder(runtime, "cust", "+14155550001")
    receive(runtime, carrier, "+14155550001", to=SERVICE_NUMBER)  # service, matched, nobody owns it
    receive(runtime, carrier, "+14155550002", to=SERVICE_NUMBER)  # service, unassigned
    receive(runtime, carrier, "+14155550003", to=SALES_NUMBER)  # sales, unassigned
    _, service_agent = make_user("sam", "agent", ["service"])
    _, sales_agent = make_user("sally", "agent", ["sales"])
    _, supervisor = make_user("sue", "supervisor", [])

    def numbers(headers):
        return sorted(c["contact"]["number"] for c in listed(client, headers)["data"])

    assert numbers(service_agent) == ["+14155550001", "+14155550002"]
    assert numbers(sales_agent) == ["+14155550003"]
    assert numbers(supervisor) == ["+14155550001", "+14155550002", "+14155550003"]
    hidden = listed(client, sales_agent)["data"][0]["id"] - 1
    assert client.get(f"/api/v1/conversations/{hidden}", headers=sales_agent).status_code == 404
    assert client.get(f"/api/v1/conversations/{hidden}/messages", headers=sales_agent).status_code == 404


def test_an_agent_sees_a_conversation_assigned_to_them_in_another_team(runtime, carrier, client, make_user):
    from sqlalchemy import update

    from gateway.db import transaction
    from gateway.models import Conversation, ConversationStatus

    receive(runtime, carrier, "+14155550003", to=SALES_NUMBER)
    agent_id, service_agent = make_user("sam", "agent", ["service"])
    with transaction(runtime.sessions) as session:
        session.execute(update(Conversation).values(assignee_id=agent_id, status=ConversationStatus.assigned))

    [conversation] = listed(client, service_agent)["data"]
    assert (conversation["assignee"], conversation["status"]) == (agent_id, "assigned")


def test_health_and_readiness(client):
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["checks"] == {"database": "ok", "broker": "ok"}


def test_readiness_fails_while_the_broker_is_unreachable(runtime):
    from gateway.app import create_app
    from gateway.runtime import Runtime

    unreachable = Runtime(runtime.settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
    response = create_app(runtime=unreachable).test_client().get("/readyz")

    assert response.status_code == 503
    assert response.json["checks"]["database"] == "ok"
    assert response.json["checks"]["broker"].startswith("error: ")
    unreachable.engine.dispose()
