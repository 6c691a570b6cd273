"""Notification fixtures: a local event receiver the config points at, folders with
resources, texts that arrive through the webhook and are processed as a worker would."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import func, select

from gateway.db import transaction
from gateway.inbound import process_event
from gateway.models import Folder, FolderPhone, InboundEvent, Message
from gateway.notifications import notify_inbound

RECEIVER_SECRET = "receiver-secret"


class EventReceiver:
    """A real HTTP server on 127.0.0.1 that records each POST and answers `status`."""

    def __init__(self):
        self.requests: list[dict] = []
        self.status = 200
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    status = receiver.status
                    receiver.requests.append(
                        {"headers": dict(self.headers), "body": body, "answered": status}
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/sms"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def received(self) -> list[dict]:
        with self.lock:
            return list(self.requests)

    def events(self, answered: int | None = None) -> list[dict]:
        return [json.loads(r["body"]) for r in self.received() if answered in (None, r["answered"])]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = EventReceiver()
    yield server
    server.stop()


@pytest.fixture
def config_dir(config_dir, receiver):
    """The suite's config, plus one [[notify.webhooks]] receiver for every event."""
    config = config_dir / "gateway.toml"
    config.write_text(
        config.read_text() + f'\n[[notify.webhooks]]\nurl = "{receiver.url}"\nsecret = "{RECEIVER_SECRET}"\n'
    )
    return config_dir


def add_folder(runtime, external_id: str, phones=(), sales: str | None = None, service: str | None = None):
    with transaction(runtime.sessions) as session:
        folder = Folder(external_id=external_id, name=f"Folder {external_id}", sales_resource=sales,
                        service_resource=service, phones=[FolderPhone(number=p) for p in phones])
        session.add(folder)
        session.flush()
        return folder.id


def arrive(runtime, carrier, sender: str, body: str = "hello", **kwargs) -> int:
    """A text through the webhook, threaded as the routing worker would; its message id."""
    assert carrier.inbound(sender, body, **kwargs).status_code == 200
    with runtime.sessions() as session:
        event_id = session.scalar(select(func.max(InboundEvent.id)))
    return process_event(runtime.sessions, runtime.settings, event_id)


def receive(runtime, carrier, sender: str, body: str = "hello", **kwargs) -> int:
    """A text that arrives, is threaded and is notified, as the workers would do it."""
    message_id = arrive(runtime, carrier, sender, body, **kwargs)
    notify_inbound(runtime.sessions, runtime.settings, message_id)
    return message_id


def forget_notified(runtime, message_id: int) -> None:
    """As if the worker died after telling people but before marking the message."""
    with transaction(runtime.sessions) as session:
        session.get(Message, message_id).notified_at = None


def notifications(client, headers, **params) -> list[dict]:
    response = client.get("/api/v1/notifications", headers=headers, query_string=params)
    assert response.status_code == 200, response.json
    return response.json["data"]


def badges(client, headers) -> dict:
    response = client.get("/api/v1/badges", headers=headers)
    assert response.status_code == 200, response.json
    return response.json


def subscribe_all(client, headers) -> None:
    response = client.patch("/api/v1/me", json={"subscribe_all": True}, headers=headers)
    assert response.status_code == 200, response.json
