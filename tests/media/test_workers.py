"""Media end to end: a running gateway, `gateway simulate inbound`, real worker processes."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from werkzeug.serving import make_server

from gateway import media
from gateway.app import create_app
from gateway.cli import main
from gateway.models import Attachment
from gateway.runtime import Runtime
from tests.conftest import SERVICE_NUMBER, wait_until
from tests.media.conftest import attachment_ids, receive_mms
from tests.media.hosts import JPEG, PNG, file, redirect, with_carrier_auth

pytestmark = pytest.mark.processes


@pytest.fixture
def gateway_url(runtime):
    """The web app on a real port, with PUBLIC_URL set to it so that signatures match."""
    # Bind first to learn the port, then build the app that knows its own URL.
    server = make_server("127.0.0.1", 0, app=None, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    server_runtime = Runtime(runtime.settings.model_copy(update={"public_url": base}))
    server.app = create_app(runtime=server_runtime)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield base
    server.shutdown()
    server_runtime.engine.dispose()


def attachment_states(runtime) -> list[tuple[str, str | None]]:
    with runtime.sessions() as session:
        rows = session.scalars(select(Attachment).order_by(Attachment.id))
        return [(str(a.status), a.error) for a in rows]


def test_an_mms_with_two_images_simulated_from_the_cli_ends_with_two_stored_attachments(
    runtime, client, hosts, gateway_url, workers, admin_headers
):
    images = {"ME1.jpg": (JPEG, "image/jpeg"), "ME2.png": (PNG, "image/png")}
    urls = []
    for name, (body, content_type) in images.items():
        cdn_url = hosts.cdn.route(f"/cdn/{name}", file(body, content_type))
        urls.append(hosts.carrier.route(f"/Media/{name}", with_carrier_auth(redirect(cdn_url))))
    workers(threads=2)

    result = CliRunner().invoke(main, [
        "simulate", "inbound", "--from", "+14155550100", "--to", SERVICE_NUMBER, "--body", "the damage",
        "--media", urls[0], "--media", urls[1], "--url", gateway_url,
    ])

    assert result.exit_code == 0, result.output
    wait_until(lambda: attachment_states(runtime) == [("stored", None), ("stored", None)],
               message="both attachments stored")
    conversation = client.get("/api/v1/conversations", headers=admin_headers).json["data"][0]
    [message] = client.get(f"/api/v1/conversations/{conversation['id']}/messages",
                           headers=admin_headers).json["data"]
    served = [client.get(a["url"], headers=admin_headers).data for a in message["attachments"]]
    assert served == [JPEG, PNG]


def test_the_sweeper_hands_a_worker_the_media_a_lost_task_left_pending(
    runtime, carrier, client, hosts, workers, admin_headers
):
    # Routed in this process, as if the worker died before enqueueing the media task.
    url = hosts.cdn.route("/ME1.jpg", file(JPEG, "image/jpeg"))
    [attachment_id] = attachment_ids(runtime, receive_mms(runtime, carrier, [url]))
    workers(threads=1)

    assert media.sweep(runtime, grace=dt.timedelta(0)) == 1

    wait_until(lambda: attachment_states(runtime) == [("stored", None)], message="the attachment stored")
    assert client.get(f"/api/v1/attachments/{attachment_id}", headers=admin_headers).data == JPEG
    assert media.sweep(runtime, grace=dt.timedelta(0)) == 0  # nothing pending is left
