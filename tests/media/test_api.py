"""The attachments API: the stored file for those who may see it, and folder photos."""

from __future__ import annotations

import pytest

from gateway.db import transaction
from gateway.models import Folder, FolderPhone
from tests.media.conftest import attachment_ids, fetch, receive_mms
from tests.media.hosts import JPEG, PDF, PNG, file

SENDER = "+14155550100"


def stored_attachments(runtime, carrier, hosts, *files, sender=SENDER) -> list[int]:
    urls = [hosts.cdn.route(f"/{name}", file(body, content_type)) for name, body, content_type in files]
    ids = attachment_ids(runtime, receive_mms(runtime, carrier, urls, sender=sender))
    for attachment_id in ids:
        assert fetch(runtime, attachment_id) == "stored"
    return ids


def add_folder(runtime, name: str, phones=()) -> int:
    with transaction(runtime.sessions) as session:
        folder = Folder(external_id=name.lower(), name=name,
                        phones=[FolderPhone(number=phone) for phone in phones])
        session.add(folder)
        session.flush()
        return folder.id


def test_the_file_is_served_to_whoever_may_see_the_conversation_and_to_nobody_else(
    runtime, carrier, client, hosts, make_user
):
    [attachment_id] = stored_attachments(runtime, carrier, hosts, ("ME1.jpg", JPEG, "image/jpeg"))
    _, service_agent = make_user("sam", "agent", ("service",))
    _, sales_agent = make_user("sue", "agent", ("sales",))
    _, supervisor = make_user("sol", "supervisor", ())

    for headers in (service_agent, supervisor):
        response = client.get(f"/api/v1/attachments/{attachment_id}", headers=headers)
        assert (response.status_code, response.data) == (200, JPEG)
    for other in (f"/api/v1/attachments/{attachment_id}", "/api/v1/attachments/999"):
        response = client.get(other, headers=sales_agent)
        assert response.status_code == 404
        assert response.json["error"] == {"code": "not_found", "message": "attachment not found"}
    assert client.get(f"/api/v1/attachments/{attachment_id}").status_code == 401


def test_a_file_not_downloaded_yet_gets_409_with_a_clear_code(runtime, carrier, client, hosts, admin_headers):
    [attachment_id] = attachment_ids(runtime, receive_mms(runtime, carrier, [hosts.cdn.url("/ME1.jpg")]))

    response = client.get(f"/api/v1/attachments/{attachment_id}", headers=admin_headers)

    assert response.status_code == 409
    assert response.json["error"]["code"] == "attachment_pending"


def test_an_image_linked_to_the_conversations_folder_appears_in_its_photos(
    runtime, carrier, client, hosts, make_user
):
    folder_id = add_folder(runtime, "Acme Roofing", phones=[SENDER])
    [attachment_id] = stored_attachments(runtime, carrier, hosts, ("ME1.jpg", JPEG, "image/jpeg"))
    user_id, agent = make_user("sam", "agent", ("service",))

    first = client.post(f"/api/v1/attachments/{attachment_id}/link-folder", headers=agent)
    again = client.post(f"/api/v1/attachments/{attachment_id}/link-folder", headers=agent, json={})

    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json["folder_id"] == folder_id and first.json["linked_by"] == user_id
    photos = client.get(f"/api/v1/folders/{folder_id}/photos", headers=agent).json
    assert [p["attachment"]["id"] for p in photos["data"]] == [attachment_id]
    assert photos["data"][0]["attachment"]["url"] == f"/api/v1/attachments/{attachment_id}"
    assert photos["next_cursor"] is None
    _, sales_agent = make_user("sue", "agent", ("sales",))
    assert client.get(f"/api/v1/folders/{folder_id}/photos", headers=sales_agent).json["data"] == []


def test_an_image_can_be_linked_to_a_folder_named_in_the_body(runtime, carrier, client, hosts, admin_headers):
    [attachment_id] = stored_attachments(runtime, carrier, hosts, ("ME1.jpg", JPEG, "image/jpeg"))
    folder_id = add_folder(runtime, "Claims")

    no_folder = client.post(f"/api/v1/attachments/{attachment_id}/link-folder", headers=admin_headers)
    linked = client.post(f"/api/v1/attachments/{attachment_id}/link-folder", headers=admin_headers,
                         json={"folder_id": folder_id})

    assert no_folder.status_code == 422
    assert no_folder.json["error"]["code"] == "no_folder"
    assert linked.status_code == 201
    photos = client.get(f"/api/v1/folders/{folder_id}/photos", headers=admin_headers).json["data"]
    assert [p["attachment"]["id"] for p in photos] == [attachment_id]


@pytest.mark.parametrize(
    "body, status, code",
    [({"folder_id": 999}, 404, "not_found"), ({"folder_id": "12"}, 400, "bad_request"),
     ([12], 400, "bad_request")],
)
def test_a_bad_link_request_gets_its_reason_and_links_nothing(
    runtime, carrier, client, hosts, admin_headers, body, status, code
):
    folder_id = add_folder(runtime, "Acme Roofing", phones=[SENDER])
    [attachment_id] = stored_attachments(runtime, carrier, hosts, ("ME1.jpg", JPEG, "image/jpeg"))

    link = f"/api/v1/attachments/{attachment_id}/link-folder"
    response = client.post(link, headers=admin_headers, json=body)

    assert (response.status_code, response.json["error"]["code"]) == (status, code)
    assert client.get(f"/api/v1/folders/{folder_id}/photos", headers=admin_headers).json["data"] == []


def test_only_images_can_be_linked_to_a_folder(runtime, carrier, client, hosts, admin_headers):
    add_folder(runtime, "Acme Roofing", phones=[SENDER])
    [attachment_id] = stored_attachments(runtime, carrier, hosts, ("invoice.pdf", PDF, "application/pdf"))

    response = client.post(f"/api/v1/attachments/{attachment_id}/link-folder", headers=admin_headers)

    assert response.status_code == 422
    assert response.json["error"] == {"code": "not_an_image",
                                      "message": "only images can be linked to a folder, not application/pdf"}


def test_a_folders_photos_come_newest_first_in_pages(runtime, carrier, client, hosts, admin_headers):
    folder_id = add_folder(runtime, "Acme Roofing", phones=[SENDER])
    images = [("a.jpg", JPEG, "image/jpeg"), ("b.png", PNG, "image/png"), ("c.jpg", JPEG[:-1], "image/jpeg")]
    ids = stored_attachments(runtime, carrier, hosts, *images)
    for attachment_id in ids:
        response = client.post(f"/api/v1/attachments/{attachment_id}/link-folder", headers=admin_headers)
        assert response.status_code == 201

    first = client.get(f"/api/v1/folders/{folder_id}/photos?limit=2", headers=admin_headers).json
    second = client.get(f"/api/v1/folders/{folder_id}/photos?limit=2&cursor={first['next_cursor']}",
                        headers=admin_headers).json

    assert [p["attachment"]["id"] for p in first["data"] + second["data"]] == list(reversed(ids))
    assert second["next_cursor"] is None
    assert client.get("/api/v1/folders/999/photos", headers=admin_headers).status_code == 404
    bad = client.get(f"/api/v1/folders/{folder_id}/photos?cursor=nope", headers=admin_headers)
    assert bad.status_code == 400
