"""The direct door (gateway/webhooks/direct.py): Twilio's form posts answered without
Flask's request machinery, read exactly as Flask would read them, and everything else
left to Flask. The filed requests go through both doors in test_twilio_cases.py."""

from __future__ import annotations

import io
import logging
import urllib.parse

import pytest
from flask import Request
from sqlalchemy import select
from werkzeug.test import EnvironBuilder

from gateway.carriers import twilio
from gateway.models import InboundEvent
from gateway.webhooks.direct import FORM_ENCODED, DirectWebhooks
from tests.conftest import AUTH_TOKEN, PUBLIC_URL, inbound_form
from tests.webhooks.conftest import Door

SMS = "/webhooks/twilio/sms"
TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'


def stored_sids(runtime) -> list[str]:
    with runtime.sessions() as session:
        return list(session.scalars(select(InboundEvent.carrier_message_id)))


def form_environ(body: bytes, **overrides) -> dict:
    environ = EnvironBuilder(path=SMS, method="POST", data=body, content_type=FORM_ENCODED).get_environ()
    environ.update(overrides)
    return environ


@pytest.mark.parametrize("body", [
    b"",
    b"MessageSid=SM1&Body=hello+there&From=%2B14155550100",
    b"Body=&Empty&=no-name",                       # blank values and names are kept, as Flask keeps them
    b"MediaUrl0=a&MediaUrl0=b&MediaUrl0=a",        # a repeated name keeps every value
    b"Body=caf%C3%A9+%F0%9F%98%80&To=%2B1%20555",  # UTF-8 escapes and spaces
    b"Body=%ff%fe&From=%zz",                        # escapes that are not UTF-8, and not escapes
    b"Body=\xff\xfe",                               # a body that is not UTF-8: no fields, as in Flask
    b"a=1;b=2&c",                                   # ';' is not a separator
])
def test_the_door_reads_a_form_exactly_as_flasks_request_form(app, body):
    door = DirectWebhooks(app, {})

    ours = door._form(form_environ(body))

    with app.test_request_context():
        flasks = Request(form_environ(body)).form
    assert list(ours.items(multi=True)) == list(flasks.items(multi=True))
    assert type(ours) is type(flasks)


def test_a_text_with_a_charset_in_its_content_type_is_answered_by_the_direct_door(runtime, app, client):
    door = Door("direct", app)
    form = inbound_form("+14155550100", sid="SM" + "c" * 32)
    headers = {twilio.SIGNATURE_HEADER: twilio.sign(PUBLIC_URL + SMS, form, AUTH_TOKEN)}

    response = client.post(SMS, data=urllib.parse.urlencode(form), headers=headers,
                           content_type=FORM_ENCODED + "; charset=utf-8")

    assert (response.status_code, response.data) == (200, TWIML)
    door.assert_answered()
    assert stored_sids(runtime) == ["SM" + "c" * 32]


def test_a_webhook_url_with_a_query_is_verified_over_the_query_too(runtime, client, door):
    # Given a number whose webhook URL carries a query, signed over it as Twilio signs
    form = inbound_form("+14155550100", sid="SM" + "d" * 32)
    signature = twilio.sign(PUBLIC_URL + SMS + "?tenant=a%20b", form, AUTH_TOKEN)

    # Then it is stored; the same body signed without the query is refused
    response = door.post(client, SMS + "?tenant=a%20b", form, {twilio.SIGNATURE_HEADER: signature})
    assert (response.status_code, response.data) == (200, TWIML)
    refused = door.post(client, SMS + "?tenant=other", form, {twilio.SIGNATURE_HEADER: signature})
    assert refused.status_code == 403
    assert refused.json["error"]["code"] == "invalid_signature"
    door.assert_answered()
    assert stored_sids(runtime) == ["SM" + "d" * 32]


def test_a_body_shorter_than_its_declared_length_gets_400_and_stores_nothing(runtime, app):
    form = inbound_form("+14155550100", sid="SM" + "e" * 32)
    body = urllib.parse.urlencode(form).encode()
    environ = form_environ(body)
    environ.update({"wsgi.input": io.BytesIO(body[:40]), "CONTENT_LENGTH": str(len(body)),
                    "HTTP_X_TWILIO_SIGNATURE": twilio.sign(PUBLIC_URL + SMS, form, AUTH_TOKEN)})
    answered = {}

    def start_response(status, headers):
        answered.update(status=status, headers=dict(headers))

    chunks = app.wsgi_app(environ, start_response)

    assert answered["status"] == "400 BAD REQUEST"
    assert answered["headers"]["Content-Type"] == "application/json"
    assert b"".join(chunks).startswith(b'{"error": {"code": "bad_request", ')
    assert stored_sids(runtime) == []


def test_an_unexpected_error_is_a_logged_500_in_json_and_stores_nothing(runtime, client, monkeypatch, caplog):
    def broken(form):
        raise RuntimeError("parser bug")

    monkeypatch.setattr(twilio, "parse_inbound", broken)
    form = inbound_form("+14155550100", sid="SM" + "f" * 32)
    headers = {twilio.SIGNATURE_HEADER: twilio.sign(PUBLIC_URL + SMS, form, AUTH_TOKEN)}

    with caplog.at_level(logging.ERROR, logger="gateway.webhooks.direct"):
        response = client.post(SMS, data=form, headers=headers)

    assert response.status_code == 500
    assert response.json["error"]["code"] == "internal_server_error"
    [record] = [r for r in caplog.records if r.name == "gateway.webhooks.direct"]
    assert (record.getMessage(), record.path, record.message_sid) == ("webhook failed", SMS, "SM" + "f" * 32)
    assert record.exc_info[0] is RuntimeError
    assert stored_sids(runtime) == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_on_a_webhook_path_get_flasks_405_in_json(runtime, client, method):
    response = client.open(SMS, method=method)

    assert response.status_code == 405
    assert response.json["error"]["code"] == "method_not_allowed"
    assert stored_sids(runtime) == []


def test_a_chunked_body_is_left_to_flask_and_still_stored(runtime, app):
    door = Door("flask", app)
    # (no Content-Length: a chunked request, which the server terminates for the app)
    form = inbound_form("+14155550100", sid="SM" + "9" * 32)
    body = urllib.parse.urlencode(form).encode()
    environ = form_environ(body, HTTP_X_TWILIO_SIGNATURE=twilio.sign(PUBLIC_URL + SMS, form, AUTH_TOKEN),
                           HTTP_TRANSFER_ENCODING="chunked")
    environ.pop("CONTENT_LENGTH")
    environ["wsgi.input_terminated"] = True
    answered = {}

    chunks = app.wsgi_app(environ, lambda status, headers: answered.update(status=status))

    assert (answered["status"], b"".join(chunks)) == ("200 OK", TWIML)
    door.assert_answered()
    assert stored_sids(runtime) == ["SM" + "9" * 32]
