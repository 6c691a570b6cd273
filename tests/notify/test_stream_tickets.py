"""Stream tickets: a browser's EventSource opens the notification stream without the token."""

from __future__ import annotations

import redis
import requests

from gateway.accounts import hash_token, revoke_tokens
from gateway.db import transaction
from gateway.live import shared_client
from tests.conftest import wait_until
from tests.notify.conftest import add_folder, receive
from tests.notify.test_notification_stream import CUSTOMER, Stream, open_stream, server  # noqa: F401


def ticket_for(client, headers) -> dict:
    response = client.post("/api/v1/notifications/stream-tickets", headers=headers)
    assert response.status_code == 201, response.json
    return response.json


def test_a_ticket_opens_the_stream_with_no_authorization_header(runtime, carrier, server, make_user):  # noqa: F811
    _, sam = make_user("sam", "agent", ["sales"])
    add_folder(runtime, "cust-1", [CUSTOMER], sales="sam")
    issued = requests.post(f"{server}/api/v1/notifications/stream-tickets", headers=sam, timeout=10).json()

    # What EventSource does: a GET of the stream URL, no headers of ours
    assert issued["stream_url"] == f"/api/v1/notifications/stream?ticket={issued['ticket']}"
    stream = Stream(server, {}, params={"ticket": issued["ticket"]})
    try:
        message_id = receive(runtime, carrier, CUSTOMER, "hello")
        wait_until(lambda: stream.events, message="the notification on the ticket's stream")
    finally:
        stream.close()

    assert issued["ticket"].startswith("gwst_") and issued["expires_in"] == 600
    assert stream.events[0]["data"]["message_id"] == message_id


def test_a_ticket_opens_nothing_but_the_stream(runtime, client, make_user):
    _, sam = make_user("sam", "agent", ["sales"])
    ticket = ticket_for(client, sam)["ticket"]

    for path in ("/api/v1/notifications", "/api/v1/conversations", "/api/v1/me"):
        response = client.get(f"{path}?ticket={ticket}")
        assert response.status_code == 401
        assert response.json["error"]["message"].startswith("missing bearer token")
    assert client.post("/api/v1/notifications/stream-tickets", query_string={"ticket": ticket}).status_code == 401


def test_unknown_expired_and_revoked_tickets_are_refused(runtime, client, make_user):
    _, sam = make_user("sam", "agent", ["sales"])
    token = sam["Authorization"].removeprefix("Bearer ")
    expired, revoked = ticket_for(client, sam)["ticket"], ticket_for(client, sam)["ticket"]
    shared_client(runtime.redis_url).delete(f"gateway:stream-ticket:{hash_token(expired)}")  # as its TTL would
    with transaction(runtime.sessions) as session:
        revoke_tokens(session, [token])

    for ticket in ("gwst_" + "x" * 43, "not-a-ticket", expired, revoked):
        response = client.get("/api/v1/notifications/stream", query_string={"ticket": ticket})
        assert response.status_code == 401, ticket
        assert response.json["error"]["message"] == "invalid or expired stream ticket: ask for a new one"


def test_a_ticket_is_kept_hashed_with_its_expiry(runtime, client, make_user):
    _, sam = make_user("sam", "agent", ["sales"])

    ticket = ticket_for(client, sam)["ticket"]

    store = shared_client(runtime.redis_url)
    [key] = store.keys("gateway:stream-ticket:*")
    assert key.decode() == f"gateway:stream-ticket:{hash_token(ticket)}"
    assert ticket.encode() not in store.get(key)
    assert 590 <= store.ttl(key) <= 600


def test_issuing_a_ticket_needs_the_token_and_redis(runtime, client, make_user, monkeypatch):
    _, sam = make_user("sam", "agent", ["sales"])
    assert client.post("/api/v1/notifications/stream-tickets").status_code == 401

    def unreachable(*args, **kwargs):
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    monkeypatch.setattr(redis.Redis, "set", unreachable)
    response = client.post("/api/v1/notifications/stream-tickets", headers=sam)

    assert response.status_code == 503
    assert response.json["error"] == {"code": "unavailable",
                                      "message": "stream tickets are unavailable right now; retry"}


def test_an_open_stream_ends_within_a_heartbeat_once_its_token_is_revoked(runtime, server, open_stream, make_user):  # noqa: F811
    _, sam = make_user("sam", "agent", ["sales"])
    by_token = open_stream(sam)
    ticket = requests.post(f"{server}/api/v1/notifications/stream-tickets", headers=sam, timeout=10).json()["ticket"]
    by_ticket = Stream(server, {}, params={"ticket": ticket})

    with transaction(runtime.sessions) as session:
        revoke_tokens(session, [sam["Authorization"].removeprefix("Bearer ")])

    # (the server fixture beats every second) both streams end; a reconnect is refused
    for stream in (by_token, by_ticket):
        stream.thread.join(timeout=15)
        assert not stream.thread.is_alive()
    assert requests.get(f"{server}/api/v1/notifications/stream", params={"ticket": ticket},
                        timeout=10).status_code == 401
    by_ticket.close()
