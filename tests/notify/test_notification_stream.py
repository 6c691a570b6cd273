"""GET /api/v1/notifications/stream, read by a real HTTP client from a real server."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading

import pytest
import requests
from werkzeug.serving import make_server

from gateway.carriers import twilio
from tests.conftest import AUTH_TOKEN, PUBLIC_URL, inbound_form, wait_until
from tests.notify.conftest import RECEIVER_SECRET, add_folder, notifications, receive

CUSTOMER = "+14155550100"


@pytest.fixture
def server(app):
    """The app on a real socket: 127.0.0.1, a free port, one thread per request."""
    app.config["SSE_HEARTBEAT_S"] = 1.0  # streams whose client left end quickly
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{http.server_port}"
    http.shutdown()
    http.server_close()


class Stream:
    """An SSE client: reads events on a thread into a list the test can wait on."""

    def __init__(self, base_url: str, headers: dict, last_event_id: str | None = None, params=None):
        if last_event_id is not None:
            headers = {**headers, "Last-Event-ID": last_event_id}
        self.response = requests.get(f"{base_url}/api/v1/notifications/stream", headers=headers,
                                     params=params, stream=True, timeout=(5, 30))
        assert self.response.status_code == 200
        assert self.response.headers["Content-Type"].startswith("text/event-stream")
        self.events: list[dict] = []
        self.comments = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        event: dict = {}
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                if line.startswith(":"):
                    self.comments += 1
                elif line.startswith("id: "):
                    event["id"] = line[4:]
                elif line.startswith("data: "):
                    event["data"] = json.loads(line[6:])
                elif line == "" and "data" in event:
                    self.events.append(event)
                    event = {}
        except (requests.RequestException, AttributeError, ValueError):
            pass  # closed by the test

    def close(self) -> None:
        self.response.close()


@pytest.fixture
def open_stream(server):
    opened: list[Stream] = []

    def open_(headers, last_event_id=None) -> Stream:
        stream = Stream(server, headers, last_event_id)
        opened.append(stream)
        return stream

    yield open_
    for stream in opened:
        stream.close()


def post_text(base_url: str, sender: str, body: str) -> None:
    """The carrier's webhook, signed as Twilio signs it, to the real server."""
    form = inbound_form(sender, body)
    path = "/webhooks/twilio/sms"
    signature = twilio.sign(PUBLIC_URL + path, form, AUTH_TOKEN)
    response = requests.post(base_url + path, data=form, headers={twilio.SIGNATURE_HEADER: signature},
                             timeout=10)
    assert response.status_code == 200


@pytest.mark.processes
def test_a_text_pops_up_on_the_open_streams_of_the_people_told(
    runtime, server, open_stream, make_user, workers
):
    # Given sam's folder, sam and bob each with a stream open, and a worker process
    _, sam = make_user("sam", "agent", ["sales"])
    _, bob = make_user("bob", "agent", ["sales"])
    add_folder(runtime, "cust-1", [CUSTOMER], sales="sam")
    workers(threads=2)
    sams, bobs = open_stream(sam), open_stream(bob)

    # When the customer texts, through the webhook, and a worker processes it
    post_text(server, CUSTOMER, "Is my order ready?")

    # Then sam's stream shows the notification the API lists, and bob's shows nothing
    wait_until(lambda: sams.events, message="the notification on sam's stream")
    [listed] = requests.get(f"{server}/api/v1/notifications", headers=sam, timeout=10).json()["data"]
    assert sams.events == [{"id": str(listed["id"]), "data": listed}]
    assert listed["kind"] == "message.received"
    assert bobs.events == []


def test_a_stream_resumed_with_last_event_id_replays_what_it_missed_then_goes_live(
    runtime, carrier, client, server, open_stream, make_user
):
    _, sam = make_user("sam", "agent", ["sales"])
    add_folder(runtime, "cust-1", [CUSTOMER], sales="sam")
    first_stream = open_stream(sam)
    first = receive(runtime, carrier, CUSTOMER, "one")
    wait_until(lambda: first_stream.events, message="the first notification")
    seen = first_stream.events[-1]["id"]
    first_stream.close()

    # While sam is away, two more texts arrive
    missed = [receive(runtime, carrier, CUSTOMER, body) for body in ("two", "three")]
    resumed = open_stream(sam, last_event_id=seen)
    wait_until(lambda: len(resumed.events) >= 2, message="the missed notifications")
    # ... and one more while the resumed stream is open
    live = receive(runtime, carrier, CUSTOMER, "four")
    wait_until(lambda: len(resumed.events) >= 3, message="the live notification")

    assert first_stream.events[0]["data"]["message_id"] == first
    assert [e["data"]["message_id"] for e in resumed.events] == [*missed, live]
    assert [int(e["id"]) for e in resumed.events] == sorted(n["id"] for n in notifications(client, sam))[1:]


def test_an_idle_stream_sends_heartbeat_comments(runtime, server, open_stream, make_user):
    _, sam = make_user("sam", "agent", ["sales"])

    stream = open_stream(sam)

    wait_until(lambda: stream.comments >= 1, message="a heartbeat comment")
    assert stream.events == []


def test_a_stream_rejects_a_last_event_id_it_never_sent(runtime, client, make_user):
    _, sam = make_user("sam", "agent", ["sales"])

    response = client.get("/api/v1/notifications/stream", headers={**sam, "Last-Event-ID": "abc"})

    assert response.status_code == 400
    assert response.json["error"]["code"] == "bad_request"


@pytest.mark.processes
def test_a_text_to_a_folders_number_reaches_its_resources_and_subscribers_everywhere_once(
    runtime, server, open_stream, client, make_user, workers, receiver
):
    # Given a folder with sales and service resources, a subscriber on the number's team,
    # a colleague who is neither, each with a stream open; a receiver; a worker process
    _, sam = make_user("sam", "agent", ["sales"])
    _, sue = make_user("sue", "agent", ["service"])
    _, fan = make_user("fan", "agent", ["service"])
    _, bob = make_user("bob", "agent", ["service"])
    assert client.patch("/api/v1/me", json={"subscribe_all": True}, headers=fan).status_code == 200
    add_folder(runtime, "cust-1", [CUSTOMER], sales="sam", service="sue")
    streams = {name: open_stream(headers) for name, headers in
               {"sam": sam, "sue": sue, "fan": fan, "bob": bob}.items()}
    workers(threads=2)

    # When the customer texts the service desk
    post_text(server, CUSTOMER, "Is my order ready?")

    # Then sam, sue and fan each see it once: on their stream, in their list, in their badges
    told = {"sam": sam, "sue": sue, "fan": fan}
    for name in told:
        wait_until(lambda name=name: streams[name].events, message=f"{name}'s notification")
    wait_until(lambda: receiver.events(answered=200), message="the event at the receiver")
    for name, headers in told.items():
        [listed] = notifications(client, headers)
        assert [e["data"] for e in streams[name].events] == [listed]
        assert listed["kind"] == "message.received"
        assert client.get("/api/v1/badges", headers=headers).json["unread_notifications"] == 1
    assert notifications(client, bob) == [] and streams["bob"].events == []
    # ... and the configured receiver has it, signed
    [event] = receiver.events(answered=200)
    [request] = [r for r in receiver.received() if r["answered"] == 200]
    assert event["type"] == "message.received"
    assert event["data"]["message"]["id"] == listed["message_id"]
    assert request["headers"]["X-Gateway-Signature"] == "sha256=" + hmac.new(
        RECEIVER_SECRET.encode(), request["body"], hashlib.sha256).hexdigest()
