"""The direct door (gateway/webhooks/direct.py): Twilio's form posts answered without
Flask's request machinery, read exactly as Flask would read them, and everything else
left to Flask. The filed requests go through both doors in test_twilio_cases.py."""

from __future__ import annotations

import io
import logging
import urllib.parse

import pytest
from flask import Request, jsonify
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


def both_doors(app, make_environ) -> dict[str, tuple[str, dict, bytes]]:
    """The same request (a fresh environ from `make_environ()` each time) through the direct
    door and straight to Flask: {door: (status line, headers, body)}."""
    answers = {}
    for door, wsgi in (("direct", app.wsgi_app), ("flask", app.wsgi_app.flask_wsgi)):
        answered = {}

        def start_response(status, headers, exc_info=None, answered=answered):
            answered.update(status=status, headers=dict(headers))

        body = b"".join(wsgi(make_environ(), start_response))
        answers[door] = (answered["status"], answered["headers"]["Content-Type"], body)
    return answers


def signed_body(sid: str) -> tuple[bytes, str]:
    form = inbound_form("+14155550100", sid=sid)
    return urllib.parse.urlencode(form).encode(), twilio.sign(PUBLIC_URL + SMS, form, AUTH_TOKEN)


class ResetStream(io.BytesIO):
    def read(self, size=-1):
        raise ConnectionResetError("connection reset by peer")

    readinto = read1 = read


@pytest.mark.parametrize("case, expected_status", [
    # gunicorn terminates the input: what came is the body, and its signature fails
    ("ended early, input terminated", "403 FORBIDDEN"),
    # a server that leaves the length to the app: the client went away
    ("ended early, input not terminated", "400 BAD REQUEST"),
    ("connection reset while reading", "400 BAD REQUEST"),
])
def test_a_body_that_does_not_arrive_whole_gets_flasks_answer_and_stores_nothing(
        runtime, app, case, expected_status):
    body, signature = signed_body("SM" + "e" * 32)

    def make_environ():
        environ = form_environ(body, HTTP_X_TWILIO_SIGNATURE=signature)
        if case == "connection reset while reading":
            environ["wsgi.input"] = ResetStream(body)
        else:
            environ["wsgi.input"] = io.BytesIO(body[:40])
        if case == "ended early, input terminated":
            environ["wsgi.input_terminated"] = True
        return environ

    answers = both_doors(app, make_environ)

    assert answers["direct"] == answers["flask"]
    assert answers["direct"][:2] == (expected_status, "application/json")
    assert stored_sids(runtime) == []


def test_a_chunked_body_with_a_content_length_is_left_to_flask(runtime, app):
    # (a server may pass both on; the body's length is the chunks', not the header's)
    body, signature = signed_body("SM" + "8" * 32)
    door = Door("flask", app)

    def make_environ():
        environ = form_environ(body + b"&Extra=1", HTTP_X_TWILIO_SIGNATURE=signature,
                               HTTP_TRANSFER_ENCODING="chunked", CONTENT_LENGTH=str(len(body)))
        environ["wsgi.input_terminated"] = True
        return environ

    answers = both_doors(app, make_environ)

    assert answers["direct"] == answers["flask"]
    assert answers["direct"][0] == "403 FORBIDDEN"  # signed without the extra field
    door.assert_answered()
    assert stored_sids(runtime) == []


def test_an_error_body_is_byte_for_byte_what_flask_writes(runtime, app, door, client):
    form = inbound_form("+14155550100", sid="SM" + "7" * 32)

    response = door.post(client, SMS, form, {twilio.SIGNATURE_HEADER: "bm90IGEgc2lnbmF0dXJl"})

    with app.app_context():
        written_by_flask = jsonify(error={"code": "invalid_signature",
                                          "message": "invalid request signature"}).get_data()
    assert (response.status_code, response.mimetype) == (403, "application/json")
    assert response.data == written_by_flask
    door.assert_answered()


def test_an_unexpected_error_raises_through_either_door_while_testing(runtime, client, door, monkeypatch):
    monkeypatch.setattr(twilio, "parse_inbound", broken_parser)
    form = inbound_form("+14155550100", sid="SM" + "f" * 32)
    headers = {twilio.SIGNATURE_HEADER: twilio.sign(PUBLIC_URL + SMS, form, AUTH_TOKEN)}

    with pytest.raises(RuntimeError, match="parser bug"):  # as Flask lets it, for the test to see
        door.post(client, SMS, form, headers)
    assert stored_sids(runtime) == []


def test_an_unexpected_error_is_a_logged_500_in_json_through_either_door(
        runtime, app, client, door, monkeypatch, caplog):
    # Given an app serving for real (not testing), and a bug in the parser
    app.config["TESTING"] = False
    monkeypatch.setattr(twilio, "parse_inbound", broken_parser)
    form = inbound_form("+14155550100", sid="SM" + "f" * 32)
    headers = {twilio.SIGNATURE_HEADER: twilio.sign(PUBLIC_URL + SMS, form, AUTH_TOKEN)}

    with caplog.at_level(logging.ERROR, logger=app.logger.name):
        response = door.post(client, SMS, form, headers)

    # Then the carrier gets a 500 in JSON, the error is logged as Flask logs it, nothing is stored
    assert response.status_code == 500
    assert response.json["error"]["code"] == "internal_server_error"
    door.assert_answered()
    [record] = [r for r in caplog.records if r.getMessage() == f"Exception on {SMS} [POST]"]
    assert record.exc_info[0] is RuntimeError
    assert stored_sids(runtime) == []


def broken_parser(form):
    raise RuntimeError("parser bug")


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
