"""Drill 5: the media host is down for 30 s while MMS come in.

Temporary trouble (a refused connection) is retried with backoff until the message is
`give_up_after_minutes` old (60 min by default). A 30 s outage is far inside that
horizon, so every attachment must end `stored`; `failed` (with its reason) is only for
media still unreachable an hour after the text came.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import wait_until
from tests.drills.conftest import (
    Burst,
    audit_inbound,
    free_port,
    signed_webhooks,
    sized,
    wait_until_processed,
)
from tests.media.hosts import JPEG

pytestmark = pytest.mark.drill

OUTAGE_S = sized(30.0, 6.0)
MESSAGES = sized(500, 60)


class MediaHost:
    """Serves a JPEG at any path; can go down and come back on the same port."""

    def __init__(self):
        self.port = free_port()
        self.server: ThreadingHTTPServer | None = None
        self.served = 0

    def url(self, n: int) -> str:
        return f"http://127.0.0.1:{self.port}/media/{n}.jpg"

    def start(self) -> None:
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(JPEG)))
                self.end_headers()
                self.wfile.write(JPEG)
                host.served += 1

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def media_host():
    host = MediaHost()
    yield host
    host.stop()


def attachments(gateway, status: str) -> int:
    return gateway.scalar("SELECT count(*) FROM attachments WHERE status = :status", status=status)


def test_mms_are_threaded_while_the_media_host_is_down_and_their_media_stored_after(
    make_gateway, media_host
):
    # Given the Procfile's processes, and a media host that is down
    gateway = make_gateway()
    gateway.start_web()
    gateway.start_sweeper()
    gateway.start_worker()
    went_down = time.monotonic()

    # When a burst of MMS comes in, each with one picture on that host
    webhooks = []
    for n in range(MESSAGES):
        webhooks += signed_webhooks(1, media=[media_host.url(n)], prefix=f"photo {n}")
    burst = Burst(gateway.base_url, webhooks, threads=4).start().join()

    # Then every text is threaded at once, its attachment pending: media never holds a message back
    wait_until_processed(gateway, MESSAGES, timeout=120)
    audit_inbound(gateway, burst.sids)
    assert attachments(gateway, "pending") == MESSAGES

    # and once the host is back after the outage (at least its length; longer if threading
    # took longer on a busy machine), every attachment is stored, none failed
    wait_until(lambda: time.monotonic() - went_down >= OUTAGE_S, timeout=OUTAGE_S + 5, interval=0.2,
               message="the outage to last its length")
    media_host.start()
    wait_until(lambda: attachments(gateway, "stored") == MESSAGES, timeout=180, interval=0.5,
               message=f"all {MESSAGES} attachments to be stored")
    assert attachments(gateway, "failed") == 0
    assert gateway.scalar("SELECT count(*) FROM attachments") == MESSAGES
    # and every worker log line about an attachment names its message and conversation
    lines = [json.loads(line) for line in (gateway.logs / "worker.log").read_text().splitlines()
             if line.startswith("{")]
    about_media = [line for line in lines if "attachment_id" in line]
    assert about_media
    assert all(line.get("message_sid") and line.get("conversation_id") for line in about_media)
