"""The real inbound Twilio requests, posted through the app, stored and processed.

Every receive request in `../shared/twilio-webhooks/cases.json` (from nyaruka/courier's
suite) goes to `POST /webhooks/twilio/sms`, re-signed for our PUBLIC_URL with the test
carrier's token, with `AccountSid` and `To` rewritten to the test config's account and
business number where the case is meant to reach us. Each goes through both doors
(gateway/webhooks/direct.py): form-encoded as Twilio sends it, which the direct door
answers, and as multipart, which Flask's view answers; the answers are the same. Each row
says what our contract (DESIGN.md) answers, what is stored, and, once the event is
processed, what the API shows.
Status callbacks are parsed in `tests/carriers/test_twilio.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

import pytest
from sqlalchemy import select
from werkzeug.datastructures import MultiDict

from gateway.carriers import twilio
from gateway.inbound import process_event
from gateway.models import EventStatus, InboundEvent
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, PUBLIC_URL, SERVICE_NUMBER
from tests.twilio_cases import load_cases

WEBHOOK_PATH = "/webhooks/twilio/sms"
TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'

SID = "SMe287d7109a5a925f182f0e07fe5b223b"
SENDER = "+14133881111"
FILED_BUSINESS_NUMBER = "+12028831111"


@pytest.fixture(scope="module")
def cases() -> dict[str, dict]:
    return load_cases()


@dataclass(frozen=True)
class Refused:
    """Answered with this JSON error; nothing is stored."""

    status: int
    code: str
    message: str


@dataclass(frozen=True)
class Shown:
    """Answered 200 with empty TwiML, stored, and shown by the API once processed."""

    body: str
    summary: str
    sender: str = SENDER
    sid: str = SID
    attachments: tuple[str | None, ...] = ()   # content types of the pending attachments


@dataclass(frozen=True)
class Unroutable:
    """Answered 200 and stored for admins, but in no conversation: the To is not ours."""

    to: str
    body: str


@dataclass(frozen=True)
class Row:
    case_id: str
    label: str
    expected: Refused | Shown | Unroutable
    ours: bool = True         # rewrite AccountSid and To to the test config's account and number


def row_id(row: Row) -> str:
    return f"{row.case_id}-{row.label.replace(' ', '-')}"


BAD_SIGNATURE = Refused(403, "invalid_signature", "invalid request signature")
NO_SIGNATURE = Refused(403, "missing_signature", "missing X-Twilio-Signature header")

ROWS = [
    Row("courier-twiml-01", "plain SMS", Shown("Msg", "Msg")),
    Row("courier-twiml-02", "ButtonText is ignored", Shown("Msg", "Msg")),
    Row("courier-twiml-03", "forged signature", BAD_SIGNATURE),
    Row("courier-twiml-04", "missing signature", NO_SIGNATURE),
    # Signed (over no fields at all), so the refusal is for the first missing field.
    Row("courier-twiml-05", "no fields",
        Refused(400, "missing_MessageSid", "field 'MessageSid' is required")),
    # Twilio's MediaUrlN without MediaContentTypeN: pending, type not yet known.
    Row("courier-twiml-06", "MMS without text", Shown("", "Attachments (2)", attachments=(None, None))),
    Row("courier-twiml-07", "MMS with text", Shown("Msg", "Msg", attachments=(None, None))),
    # Kept verbatim: we do not guess that base64-looking text is encoded (courier decodes it).
    Row("courier-twiml-08", "base64-looking text", Shown(
        "QmFubm9uIEV4cGxhaW5zIFRoZSBXb3JsZCAuLi4K4oCcVGhlIENhbXAgb2YgdGhlIFNhaW50c+KA",
        "QmFubm9uIEV4cGxhaW5zIFRoZSBXb3JsZCAuLi4K4oCcVGhlIENhbXAgb2YgdGhlIFNhaW50c+KA")),
    # Courier's 'channel not found'; ours is an AccountSid that is no configured carrier.
    Row("courier-twiml-16", "account we do not have",
        Refused(403, "unknown_account", "AccountSid acctid is not a configured carrier"), ours=False),
    # A short code we do not own: kept for admins as unroutable, not dropped.
    Row("courier-twiml-17", "Messaging Service text to a short code", Unroutable("384387", "John Cruz")),
    # Signed over X-Forwarded-Path: we check PUBLIC_URL + our own path and trust no proxy header.
    Row("courier-twiml-19", "signed over X-Forwarded-Path", BAD_SIGNATURE),
    # SignalWire posts unsigned (courier skips the check for it); every request must be signed here.
    Row("courier-twiml-20", "unsigned SignalWire text", NO_SIGNATURE),
    Row("courier-twiml-21", "unsigned SignalWire request with no fields", NO_SIGNATURE),
    Row("courier-twiml-24", "WhatsApp text", Shown("Msg", "Msg")),
    Row("courier-twiml-25", "WhatsApp text on a WhatsApp sender", Shown("Msg", "Msg")),
    Row("courier-twiml-26", "WhatsApp ExternalUserId is ignored", Shown("Msg", "Msg")),
    # A WhatsApp user id with no phone is kept as it is, flagged as a sender id.
    Row("courier-twiml-27", "WhatsApp user id with no phone", Shown("Msg", "Msg", sender="US.1234")),
    Row("courier-twiml-28", "WhatsApp invalid ExternalUserId", Shown("Msg", "Msg")),
    # Body, not ButtonText, even on WhatsApp (courier uses ButtonText there).
    Row("courier-twiml-29", "WhatsApp button reply", Shown("Msg", "Msg")),
    Row("courier-twiml-30", "prefixless sender",
        Shown("Msg", "Msg", sid="SM681a1f26d9ec591431ce406e8f399525")),
]


def test_the_table_has_every_filed_receive_request(cases):
    receive = {cid for cid, case in cases.items() if case["request"]["path"].endswith("/receive")}
    assert {row.case_id for row in ROWS} == receive


def request_for(case: dict, ours: bool) -> tuple[MultiDict, dict[str, str]]:
    """The filed request as our carrier would send it to us: fields and headers."""
    form = MultiDict(parse_qsl(case["request"]["body"], keep_blank_values=True))
    if ours:
        if "AccountSid" in form:
            form["AccountSid"] = ACCOUNT_SID
        if "To" in form:
            form["To"] = form["To"].replace(FILED_BUSINESS_NUMBER, SERVICE_NUMBER)
    headers = {name: value for name, value in case["request"]["headers"].items()
               if name not in ("Content-Type", twilio.SIGNATURE_HEADER)}
    mode = case["signature"]["mode"]
    if mode == "valid":
        headers[twilio.SIGNATURE_HEADER] = twilio.sign(PUBLIC_URL + WEBHOOK_PATH, form, AUTH_TOKEN)
    elif mode == "forwarded_valid":
        # Signed as Twilio would have signed the URL the proxy says it forwarded from.
        forwarded = PUBLIC_URL + case["request"]["headers"]["X-Forwarded-Path"]
        headers[twilio.SIGNATURE_HEADER] = twilio.sign(forwarded, form, AUTH_TOKEN)
    elif mode == "invalid":
        headers[twilio.SIGNATURE_HEADER] = case["request"]["headers"][twilio.SIGNATURE_HEADER]
    else:
        assert mode == "missing", mode
    return form, headers


def stored_events(runtime) -> list[InboundEvent]:
    with runtime.sessions() as session:
        return list(session.scalars(select(InboundEvent).order_by(InboundEvent.id)))


@pytest.mark.parametrize("row", ROWS, ids=row_id)
def test_a_real_inbound_request_gets_our_answer_and_shows_what_it_should(
    runtime, client, admin_headers, cases, row, door
):
    # Given a real Twilio request, as our carrier would send it
    form, headers = request_for(cases[row.case_id], row.ours)

    # When it is posted to the webhook (through either door: the same answer)
    response = door.post(client, WEBHOOK_PATH, form, headers)
    door.assert_answered()

    # Then a refused request gets its reason and leaves nothing behind
    expected = row.expected
    if isinstance(expected, Refused):
        assert response.status_code == expected.status
        assert response.json == {"error": {"code": expected.code, "message": expected.message}}
        assert stored_events(runtime) == []
        return

    # ... and an accepted one is answered with empty TwiML once it is stored
    assert (response.status_code, response.mimetype, response.data) == (200, "text/xml", TWIML)
    [event] = stored_events(runtime)

    if isinstance(expected, Unroutable):
        assert (event.status, event.to_number) == (EventStatus.unroutable, expected.to)
        assert process_event(runtime.sessions, runtime.settings, event.id) is None
        assert client.get("/api/v1/conversations", headers=admin_headers).json["data"] == []
        [kept] = client.get("/api/v1/unroutable", headers=admin_headers).json["data"]
        assert (kept["from"], kept["to"], kept["body"]) == (SENDER, expected.to, expected.body)
        return

    assert (event.status, event.carrier_message_id) == (EventStatus.received, expected.sid)
    assert (event.from_number, event.to_number) == (expected.sender, SERVICE_NUMBER)

    # When a worker processes the stored event, the API shows the message in its conversation
    process_event(runtime.sessions, runtime.settings, event.id)
    [conversation] = client.get("/api/v1/conversations", headers=admin_headers).json["data"]
    assert (conversation["business_number"], conversation["contact"]["number"]) == (
        SERVICE_NUMBER, expected.sender)
    messages = client.get(f"/api/v1/conversations/{conversation['id']}/messages", headers=admin_headers)
    [message] = messages.json["data"]
    shown = ("direction", "body", "summary", "from", "to", "carrier_message_id")
    assert {key: message[key] for key in shown} == {
        "direction": "inbound", "body": expected.body, "summary": expected.summary,
        "from": expected.sender, "to": SERVICE_NUMBER, "carrier_message_id": expected.sid,
    }
    assert [(a["content_type"], a["status"]) for a in message["attachments"]] == [
        (content_type, "pending") for content_type in expected.attachments]


def test_an_mms_with_declared_content_types_shows_them_on_its_pending_attachments(
    runtime, client, admin_headers, cases
):
    # Given the filed MMS without text, with the MediaContentTypeN fields Twilio usually adds
    form, _ = request_for(cases["courier-twiml-06"], ours=True)
    form.update({"MediaContentType0": "image/jpeg", "MediaContentType1": "image/png"})
    headers = {twilio.SIGNATURE_HEADER: twilio.sign(PUBLIC_URL + WEBHOOK_PATH, form, AUTH_TOKEN)}

    assert client.post(WEBHOOK_PATH, data=form, headers=headers).status_code == 200
    [event] = stored_events(runtime)
    process_event(runtime.sessions, runtime.settings, event.id)

    [conversation] = client.get("/api/v1/conversations", headers=admin_headers).json["data"]
    messages = client.get(f"/api/v1/conversations/{conversation['id']}/messages", headers=admin_headers)
    [message] = messages.json["data"]
    assert message["summary"] == "Attachments (2)"
    assert [(a["content_type"], a["status"]) for a in message["attachments"]] == [
        ("image/jpeg", "pending"), ("image/png", "pending")]
