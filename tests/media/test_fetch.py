"""Downloading MMS media: what the media hosts received, and what the API then shows.

Each test posts a signed MMS webhook, routes it, and runs the media task (what the media
worker does) against real local HTTP hosts (tests/media/hosts.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from pathlib import Path

import pytest

from gateway import media
from gateway.models import utcnow
from tests.conftest import wait_until
from tests.media.conftest import MAX_FILE_BYTES, attachment_ids, fetch, receive_mms
from tests.media.hosts import (
    CARRIER_AUTHORIZATION,
    HTML,
    JPEG,
    PDF,
    PNG,
    dripping,
    endless,
    file,
    no_content,
    not_found_at_first,
    redirect,
    silent_until_released,
    status,
    with_carrier_auth,
)

MEDIA_PATH = "/2010-04-01/Accounts/AC/Messages/MM1/Media/"


def carrier_media(hosts, name: str, body: bytes, content_type: str) -> str:
    """A media URL as Twilio sends it: on the API host, behind Basic auth, redirecting to the CDN."""
    cdn_url = hosts.cdn.route(f"/cdn/{name}", file(body, content_type))
    return hosts.carrier.route(MEDIA_PATH + name, with_carrier_auth(redirect(cdn_url)))


def messages_of(client, headers, message_id_conversation: int) -> list[dict]:
    response = client.get(f"/api/v1/conversations/{message_id_conversation}/messages", headers=headers)
    assert response.status_code == 200
    return response.json["data"]


def the_message(client, headers) -> dict:
    conversations = client.get("/api/v1/conversations", headers=headers).json["data"]
    [message] = messages_of(client, headers, conversations[0]["id"])
    return message


def test_an_image_behind_basic_auth_and_a_cdn_redirect_is_stored_and_served_byte_for_byte(
    runtime, carrier, client, hosts, admin_headers
):
    url = carrier_media(hosts, "ME1.jpg", JPEG, "image/jpeg")
    [attachment_id] = attachment_ids(runtime, receive_mms(runtime, carrier, [url]))

    assert fetch(runtime, attachment_id) == "stored"

    response = client.get(f"/api/v1/attachments/{attachment_id}", headers=admin_headers)
    assert response.status_code == 200
    assert response.data == JPEG
    assert response.mimetype == "image/jpeg"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    [attachment] = the_message(client, admin_headers)["attachments"]
    assert attachment == {
        "id": attachment_id, "content_type": "image/jpeg", "size": len(JPEG), "status": "stored",
        "url": f"/api/v1/attachments/{attachment_id}", "error": None,
    }
    digest = hashlib.sha256(JPEG).hexdigest()
    assert (Path(runtime.settings.media_dir) / digest[:2] / digest).read_bytes() == JPEG


def test_credentials_go_to_the_carrier_api_only_never_to_the_cdn_it_redirects_to(
    runtime, carrier, hosts
):
    url = carrier_media(hosts, "ME1.jpg", JPEG, "image/jpeg")
    [attachment_id] = attachment_ids(runtime, receive_mms(runtime, carrier, [url]))

    fetch(runtime, attachment_id)

    assert [seen.authorization for seen in hosts.carrier.requested(MEDIA_PATH + "ME1.jpg")] == [
        CARRIER_AUTHORIZATION
    ]
    [cdn_request] = hosts.cdn.requested("/cdn/ME1.jpg")
    assert cdn_request.authorization is None


@pytest.mark.parametrize("where", ["another loopback address", "localhost, a name not on the list"])
def test_a_media_url_on_a_host_that_is_not_allowed_is_never_requested(
    runtime, carrier, client, hosts, admin_headers, where
):
    if where == "another loopback address":
        host, url = hosts.forbidden, hosts.forbidden.route("/ME1.jpg", file(JPEG, "image/jpeg"))
        name = "127.0.0.3"
    else:  # the carrier's own server, named by a name that is not allowlisted
        hosts.carrier.route("/ME1.jpg", file(JPEG, "image/jpeg"))
        host, url, name = hosts.carrier, f"http://localhost:{hosts.carrier.port}/ME1.jpg", "localhost"
    [attachment_id] = attachment_ids(runtime, receive_mms(runtime, carrier, [url]))

    assert fetch(runtime, attachment_id) == "failed"

    assert host.requests == []
    [attachment] = the_message(client, admin_headers)["attachments"]
    assert (attachment["status"], attachment["error"]) == ("failed", f"{name} is not an allowed media host")


@pytest.mark.parametrize("allowed_hosts", [["localhost", "127.0.0.2"]])
def test_an_allowed_name_that_resolves_to_an_unlisted_loopback_address_is_never_requested(
    runtime, carrier, client, hosts, admin_headers
):
    # "localhost" is allowed by name, but its address 127.0.0.1 is not listed.
    hosts.carrier.route("/ME1.jpg", file(JPEG, "image/jpeg"))
    url = f"http://localhost:{hosts.carrier.port}/ME1.jpg"
    [attachment_id] = attachment_ids(runtime, receive_mms(runtime, carrier, [url]))

    assert fetch(runtime, attachment_id) == "failed"

    assert hosts.carrier.requests == []
    error = the_message(client, admin_headers)["attachments"][0]["error"]
    assert re.fullmatch(r"localhost resolves to (127\.0\.0\.1|::1): a non-public address, not allowed", error)


def test_a_redirect_to_a_host_that_is_not_allowed_is_refused_before_it_is_requested(
    runtime, carrier, client, hosts, admin_headers
):
    forbidden_url = hosts.forbidden.route("/stolen.jpg", file(JPEG, "image/jpeg"))
    url = hosts.carrier.route(MEDIA_PATH + "ME1.jpg", with_carrier_auth(redirect(forbidden_url)))
    [attachment_id] = attachment_ids(runtime, receive_mms(runtime, carrier, [url]))

    assert fetch(runtime, attachment_id) == "failed"

    assert hosts.forbidden.requests == []
    [attachment] = the_message(client, admin_headers)["attachments"]
    assert attachment["error"] == "127.0.0.3 is not an allowed media host"


def test_more_than_three_redirects_are_refused(runtime, carrier, client, hosts, admin_headers):
    hops = [hosts.cdn.route("/hop4.jpg", file(JPEG, "image/jpeg"))]
    for n in (3, 2, 1):
        hops.append(hosts.cdn.route(f"/hop{n}.jpg", redirect(hops[-1])))
    url = hosts.carrier.route(MEDIA_PATH + "ME1.jpg", with_carrier_auth(redirect(hops[-1])))
    [attachment_id] = attachment_ids(runtime, receive_mms(runtime, carrier, [url]))

    assert fetch(runtime, attachment_id) == "failed"

    assert hosts.cdn.requested("/hop4.jpg") == []
    assert the_message(client, admin_headers)["attachments"][0]["error"] == "more than 3 redirects"


def test_an_oversize_body_is_cut_off_while_streaming(runtime, carrier, client, hosts, admin_headers):
    total = 64 * 1024 * 1024
    url = hosts.cdn.route("/big.jpg", endless(hosts.cdn, JPEG[:20], "image/jpeg", total))
    [attachment_id] = attachment_ids(runtime, receive_mms(runtime, carrier, [url]))

    assert fetch(runtime, attachment_id) == "failed"

    # The host noticed the gateway hang up: it could not send the whole body.
    [sent] = wait_until(lambda: hosts.cdn.bytes_sent_before_hangup, message="the host to finish")
    assert sent < total
    [attachment] = the_message(client, admin_headers)["attachments"]
    assert attachment["error"] == f"larger than the per-file limit of {MAX_FILE_BYTES} bytes"
    assert list(Path(runtime.settings.media_dir).rglob("*")) == []  # no partial file left behind


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(
    runtime, carrier, client, hosts, admin_headers
):
    url = carrier_media(hosts, "ME1.jpg", JPEG + b"\x00" * MAX_FILE_BYTES, "image/jpeg")
    [attachment_id] = attachment_ids(runtime, receive_mms(runtime, carrier, [url]))

    assert fetch(runtime, attachment_id) == "failed"

    error = the_message(client, admin_headers)["attachments"][0]["error"]
    assert error == f"{len(JPEG) + MAX_FILE_BYTES} bytes is over the per-file limit of {MAX_FILE_BYTES} bytes"


def test_the_files_of_one_message_share_the_per_message_limit(runtime, carrier, client, hosts, admin_headers):
    big = JPEG + b"\x01" * 160_000  # two of these are over the 300 000-byte message limit
    urls = [carrier_media(hosts, "ME1.jpg", big, "image/jpeg"),
            carrier_media(hosts, "ME2.jpg", JPEG + b"\x02" * 160_000, "image/jpeg")]
    first, second = attachment_ids(runtime, receive_mms(runtime, carrier, urls))

    assert fetch(runtime, first) == "stored"
    assert fetch(runtime, second) == "failed"

    attachments = the_message(client, admin_headers)["attachments"]
    assert [a["status"] for a in attachments] == ["stored", "failed"]
    remaining = 300_000 - len(big)
    assert attachments[1]["error"] == (
        f"{len(big)} bytes is over the message's remaining media allowance of {remaining} bytes"
    )


@pytest.mark.parametrize(
    "label, declared, sent, body, reason",
    [
        ("a PDF posing as a JPEG", "ME1.jpg", "image/jpeg", PDF,
         "the bytes are not image/jpeg (they look like application/pdf)"),
        ("an HTML page posing as a JPEG", "ME1.jpg", "image/jpeg", HTML,
         "the bytes are not image/jpeg (they look like text/html)"),
        ("the host contradicts the carrier", "ME1.jpg", "application/pdf", PDF,
         "content type mismatch: declared image/jpeg, the host sent application/pdf"),
        ("an HTML page", "page.html", "text/html", HTML, "content type text/html is not allowed"),
        ("an SVG image, which can carry script", "logo.svg", "image/svg+xml", b"<svg></svg>",
         "content type image/svg+xml is not allowed"),
        ("a vCard that is not one", "card.vcf", "text/vcard", b"hello there",
         "the bytes are not text/vcard (they look like unknown data)"),
    ],
)
def test_a_file_whose_type_does_not_check_out_fails_with_the_reason_and_the_message_stays(
    runtime, carrier, client, hosts, make_user, label, declared, sent, body, reason
):
    url = carrier_media(hosts, declared, body, sent)
    [attachment_id] = attachment_ids(runtime, receive_mms(runtime, carrier, [url]))

    assert fetch(runtime, attachment_id) == "failed", label

    _, agent = make_user("ana", "agent", ("service",))
    message = the_message(client, agent)
    assert message["body"] == "photos of the job"
    [attachment] = message["attachments"]
    assert (attachment["status"], attachment["error"]) == ("failed", reason)
    response = client.get(f"/api/v1/attachments/{attachment_id}", headers=agent)
    assert response.status_code == 409
    assert response.json["error"] == {"code": "attachment_failed",
                                      "message": f"the file could not be stored: {reason}"}


@pytest.mark.parametrize(
    "name, body, content_type",
    [("ME1.png", PNG, "image/png"), ("ME1.pdf", PDF, "application/pdf"),
     ("card.vcf", b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Jane Doe\r\nEND:VCARD\r\n", "text/vcard"),
     ("note.txt", "Gate code 4321 – thanks!".encode(), "text/plain; charset=utf-8")],
)
def test_images_documents_contacts_and_text_are_kept(runtime, carrier, client, hosts, admin_headers,
                                                     name, body, content_type):
    url = carrier_media(hosts, name, body, content_type)
    [attachment_id] = attachment_ids(runtime, receive_mms(runtime, carrier, [url]))

    assert fetch(runtime, attachment_id) == "stored"

    response = client.get(f"/api/v1/attachments/{attachment_id}", headers=admin_headers)
    assert (response.status_code, response.data) == (200, body)
    assert response.mimetype == content_type.split(";")[0]


def test_a_404_in_the_first_minute_is_retried_and_the_file_is_then_stored(
    runtime, carrier, client, hosts, admin_headers
):
    soon_there = with_carrier_auth(not_found_at_first(1, JPEG, "image/jpeg"))
    url = hosts.carrier.route(MEDIA_PATH + "ME1.jpg", soon_there)
    [attachment_id] = attachment_ids(runtime, receive_mms(runtime, carrier, [url]))

    with pytest.raises(media.RetryableMediaError, match="not found yet"):
        fetch(runtime, attachment_id)
    assert the_message(client, admin_headers)["attachments"][0]["status"] == "pending"

    assert fetch(runtime, attachment_id) == "stored"
    assert client.get(f"/api/v1/attachments/{attachment_id}", headers=admin_headers).data == JPEG


def test_a_404_after_the_first_minute_is_final(runtime, carrier, client, hosts, admin_headers):
    url = hosts.carrier.url(MEDIA_PATH + "gone.jpg")
    [attachment_id] = attachment_ids(runtime, receive_mms(runtime, carrier, [url]))

    assert fetch(runtime, attachment_id, now=utcnow() + dt.timedelta(minutes=2)) == "failed"

    assert the_message(client, admin_headers)["attachments"][0]["error"] == "media host answered 404"


TROUBLE = {
    "503": (lambda host: status(503), "media host answered 503"),
    "read timeout": (silent_until_released, "127.0.0.2 did not answer in time"),
    "a trickle slower than the download timeout": (
        lambda host: dripping(host, JPEG[:100], "image/jpeg"),
        "download took longer than the download timeout",
    ),
}


@pytest.mark.parametrize("trouble", list(TROUBLE))
def test_temporary_trouble_is_retried_until_the_give_up_time_then_recorded(
    runtime, carrier, client, hosts, admin_headers, trouble
):
    respond, expected = TROUBLE[trouble]
    url = hosts.cdn.route("/ME1.jpg", respond(hosts.cdn))
    [attachment_id] = attachment_ids(runtime, receive_mms(runtime, carrier, [url]))

    with pytest.raises(media.RetryableMediaError) as raised:
        fetch(runtime, attachment_id)
    assert raised.value.reason == expected
    assert the_message(client, admin_headers)["attachments"][0]["status"] == "pending"

    assert fetch(runtime, attachment_id, now=utcnow() + dt.timedelta(minutes=61)) == "failed"
    error = the_message(client, admin_headers)["attachments"][0]["error"]
    assert error == f"gave up after 60 minutes: {expected}"


def test_a_redelivered_task_does_nothing_and_the_same_bytes_are_kept_once(
    runtime, carrier, hosts, client, admin_headers
):
    url = carrier_media(hosts, "ME1.jpg", JPEG, "image/jpeg")
    first = attachment_ids(runtime, receive_mms(runtime, carrier, [url]))[0]
    second = attachment_ids(runtime, receive_mms(runtime, carrier, [url], sender="+14155550199"))[0]

    assert [fetch(runtime, first), fetch(runtime, second), fetch(runtime, first)] == [
        "stored", "stored", "skipped"
    ]

    assert len(hosts.cdn.requested("/cdn/ME1.jpg")) == 2  # the redelivered task fetched nothing
    files = [p for p in Path(runtime.settings.media_dir).rglob("*") if p.is_file()]
    assert [p.read_bytes() for p in files] == [JPEG]
    for attachment_id in (first, second):
        assert client.get(f"/api/v1/attachments/{attachment_id}", headers=admin_headers).data == JPEG


@pytest.mark.parametrize("carrier_options", ["delete_media_after_store = true"])
def test_media_is_deleted_at_the_carrier_once_stored_when_configured(runtime, carrier, hosts):
    url = carrier_media(hosts, "ME1.jpg", JPEG, "image/jpeg")
    hosts.carrier.route(MEDIA_PATH + "ME1.jpg.json", no_content, method="DELETE")
    [attachment_id] = attachment_ids(runtime, receive_mms(runtime, carrier, [url]))

    assert fetch(runtime, attachment_id) == "stored"

    deletes = [seen for seen in hosts.carrier.requests if seen.method == "DELETE"]
    assert [(d.path, d.authorization) for d in deletes] == [
        (MEDIA_PATH + "ME1.jpg.json", CARRIER_AUTHORIZATION)
    ]


def test_media_is_kept_at_the_carrier_by_default(runtime, carrier, hosts):
    url = carrier_media(hosts, "ME1.jpg", JPEG, "image/jpeg")
    [attachment_id] = attachment_ids(runtime, receive_mms(runtime, carrier, [url]))

    assert fetch(runtime, attachment_id) == "stored"

    assert [seen for seen in hosts.carrier.requests if seen.method == "DELETE"] == []
