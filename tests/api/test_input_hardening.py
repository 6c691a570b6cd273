"""Crafted input gets a clear 4xx, never a 500, and changes nothing."""

from __future__ import annotations

import base64
import json

import pytest

from tests.test_inbound import receive


def crafted_cursor(*parts) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    crafted_cursor("2026-01-01T00:00:00", "x"),
    crafted_cursor("2026-01-01T00:00:00", [1]),
    crafted_cursor("2026-01-01T00:00:00", 10**20),
    crafted_cursor(12, 3),
    crafted_cursor("' OR 1=1--", 3),
])
def test_a_crafted_cursor_is_a_400(client, admin_headers, cursor):
    for path, name in [("/api/v1/conversations", "cursor"), ("/api/v1/notifications", "cursor"),
                       ("/api/v1/unroutable", "cursor"), ("/api/v1/conversations/1/messages", "before")]:
        response = client.get(path, headers=admin_headers, query_string={name: cursor})
        assert response.status_code in (400, 404), (path, response.status_code)


def test_ids_past_64_bits_are_not_found(client, admin_headers):
    response = client.get(f"/api/v1/conversations/{10**20}", headers=admin_headers)

    assert (response.status_code, response.json["error"]["code"]) == (404, "not_found")


def test_a_last_event_id_that_is_not_a_plain_number_is_a_400(client, admin_headers):
    response = client.get("/api/v1/notifications/stream", headers={**admin_headers, "Last-Event-ID": "²"})

    assert response.status_code == 400


@pytest.mark.parametrize("field, value", [("to", 14155550005), ("business_number", 5552345678)])
def test_numbers_written_as_json_numbers_are_a_422(client, admin_headers, field, value):
    body = {"business_number": "+15552345678", "to": "+14155550005", "body": "hi", field: value}

    response = client.post("/api/v1/messages", headers=admin_headers, json=body)

    assert (response.status_code, response.json["error"]["code"]) == (422, f"invalid_{field}")


def test_an_agent_closes_only_what_they_own(runtime, carrier, client, make_user):
    receive(runtime, carrier, "+14155550100")
    _, sam = make_user("sam", "agent", ["service"])
    [conversation] = client.get("/api/v1/conversations", headers=sam).json["data"]
    url = f"/api/v1/conversations/{conversation['id']}"

    refused = client.post(f"{url}/close", headers=sam)
    client.post(f"{url}/claim", headers=sam)
    closed = client.post(f"{url}/close", headers=sam)

    assert (refused.status_code, refused.json["error"]["code"]) == (403, "forbidden")
    assert (closed.status_code, closed.json["status"]) == (200, "closed")
