"""The Twilio adapter against a table of real webhook requests.

The requests are the 32 in `../shared/twilio-webhooks/cases.json`, collected from
nyaruka/courier's test suite. The table below says, in our own words, what the adapter
makes of each one: the gateway's `InboundMessage` / `StatusUpdate`, or the precise
refusal. Where courier's behaviour differs from our contract (DESIGN.md), the row says
ours and a comment says why. What the webhook answers over HTTP is in
`tests/webhooks/test_twilio_cases.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

import pytest
from werkzeug.datastructures import MultiDict

from gateway.carriers import twilio
from gateway.messaging import InvalidWebhook, MediaItem
from tests.twilio_cases import load_cases

# The token and URL courier's requests were signed with, and ours.
FILED_TOKEN = "6789"
OUR_TOKEN = "our-test-token"
OUR_URL = "https://gateway.example.test/webhooks/twilio/sms"

SID = "SMe287d7109a5a925f182f0e07fe5b223b"
SENDER = "+14133881111"
BUSINESS = "+12028831111"


@pytest.fixture(scope="module")
def cases() -> dict[str, dict]:
    return load_cases()


def form_of(case: dict) -> MultiDict:
    """The posted fields, as Flask hands them to the webhook."""
    return MultiDict(parse_qsl(case["request"]["body"], keep_blank_values=True))


def filed_signature(case: dict) -> str | None:
    return case["request"]["headers"].get(twilio.SIGNATURE_HEADER)


@dataclass(frozen=True)
class Inbound:
    """The message we expect the adapter to read out of an accepted request."""

    body: str
    sender: str = SENDER
    to: str = BUSINESS
    sid: str = SID
    channel: str = "sms"
    media: tuple[MediaItem, ...] = ()


@dataclass(frozen=True)
class Status:
    status: str               # ours: a value of twilio.STATUS_MAP, or "unknown"
    carrier_status: str       # Twilio's word, always recorded
    sid: str = SID
    error_code: str | None = None


@dataclass(frozen=True)
class Refused:
    field: str
    message: str


@dataclass(frozen=True)
class Row:
    case_id: str
    label: str
    signed: bool              # does the request as filed carry a good signature?
    outcome: int              # what our webhook answers it (403 wins over 400 wins over 200)
    expected: Inbound | Status | Refused


def row_id(row: Row) -> str:
    return f"{row.case_id}-{row.label.replace(' ', '-')}"


NO_FIELDS = Refused("MessageSid", "field 'MessageSid' is required")
CAT_AND_DOG = (MediaItem("cat.jpg"), MediaItem("dog.jpg"))  # no MediaContentTypeN in these bodies

INBOUND_ROWS = [
    Row("courier-twiml-01", "plain SMS", True, 200, Inbound("Msg")),
    # We never read ButtonText: Body is what the customer's handset sent.
    Row("courier-twiml-02", "SMS with a ButtonText field", True, 200, Inbound("Msg")),
    # A forged or missing signature is 403 for us (courier answers 400); the body itself parses.
    Row("courier-twiml-03", "forged signature", False, 403, Inbound("Msg")),
    Row("courier-twiml-04", "missing signature", False, 403, Inbound("Msg")),
    Row("courier-twiml-05", "no fields at all", True, 400, NO_FIELDS),
    Row("courier-twiml-06", "MMS with two media and no text", True, 200, Inbound("", media=CAT_AND_DOG)),
    Row("courier-twiml-07", "MMS with two media and text", True, 200, Inbound("Msg", media=CAT_AND_DOG)),
    # Courier guesses that base64-looking text is an encoded concatenated SMS and decodes
    # it; we keep what the customer sent, verbatim: a guess can corrupt a real message.
    Row("courier-twiml-08", "text that looks like base64", True, 200, Inbound(
        "QmFubm9uIEV4cGxhaW5zIFRoZSBXb3JsZCAuLi4K4oCcVGhlIENhbXAgb2YgdGhlIFNhaW50c+KA")),
    # Courier deletes the channel and expects 'channel not found'. Our equivalent is an
    # AccountSid ('acctid') that is no configured account: the webhook answers 403.
    Row("courier-twiml-16", "request for an account we do not have", True, 403, Inbound("Msg")),
    # A Messaging Service sender texting a short code: the short code is kept as it is.
    Row("courier-twiml-17", "Messaging Service text to a short code", True, 200, Inbound(
        "John Cruz", to="384387", sid="SMbbf29aeb9d380ce2a1c0ae4635ff9dab")),
    # Signed over the path in X-Forwarded-Path. We check PUBLIC_URL + the path we were
    # called on and trust no forwarded header, so the same request is 403 for us.
    Row("courier-twiml-19", "signed over a proxy's X-Forwarded-Path", True, 403, Inbound("Msg")),
    # SignalWire posts unsigned; courier turns validation off for it. We never do: 403.
    Row("courier-twiml-20", "unsigned SignalWire text", False, 403, Inbound("Msg")),
    Row("courier-twiml-21", "unsigned SignalWire request with no fields", False, 403, NO_FIELDS),
    # WhatsApp senders arrive as 'whatsapp:+E164': we strip the prefix and note the channel.
    Row("courier-twiml-24", "WhatsApp text", True, 200, Inbound("Msg", channel="whatsapp")),
    Row("courier-twiml-25", "WhatsApp text on a WhatsApp sender", True, 200,
        Inbound("Msg", channel="whatsapp")),
    # ExternalUserId (a business-scoped WhatsApp id) is not used: the phone number is the contact.
    Row("courier-twiml-26", "WhatsApp text with an ExternalUserId", True, 200,
        Inbound("Msg", channel="whatsapp")),
    Row("courier-twiml-27", "WhatsApp text from a user id with no phone", True, 200,
        Inbound("Msg", sender="US.1234", channel="whatsapp")),
    Row("courier-twiml-28", "WhatsApp text with an invalid ExternalUserId", True, 200,
        Inbound("Msg", channel="whatsapp")),
    # Courier replaces Body with ButtonText on WhatsApp; we keep Body (see -02).
    Row("courier-twiml-29", "WhatsApp button reply", True, 200, Inbound("Msg", channel="whatsapp")),
    # Courier reads a prefixless sender on a WhatsApp channel as WhatsApp. We have no
    # per-channel config: without the prefix it is an SMS.
    Row("courier-twiml-30", "prefixless sender on a WhatsApp number", True, 200,
        Inbound("Msg", sid="SM681a1f26d9ec591431ce406e8f399525")),
]

STATUS_ROWS = [
    # Courier also opts the recipient out on 21610; for us the status worker decides that
    # from error_code, which the adapter passes on as Twilio's code.
    Row("courier-twiml-09", "failed: recipient unsubscribed", True, 200,
        Status("failed", "failed", error_code=twilio.ERROR_OPTED_OUT)),
    # Courier acknowledges and ignores an empty callback; we refuse it with the field named.
    Row("courier-twiml-10", "status callback with no fields", True, 400, NO_FIELDS),
    # An unknown status is recorded as 'unknown' with Twilio's word, not rejected.
    Row("courier-twiml-11", "unknown status", True, 200, Status("unknown", "huh")),
    Row("courier-twiml-12", "delivered", True, 200, Status("delivered", "delivered")),
    Row("courier-twiml-13", "read", True, 200, Status("read", "read")),
    # Courier keys the status by a ?uuid= it put on the callback URL. We key it by
    # MessageSid; the query only matters for the signature, which covers it.
    Row("courier-twiml-14", "delivered, with a uuid in the callback URL", True, 200,
        Status("delivered", "delivered")),
    Row("courier-twiml-15", "delivered, with a non-uuid in the callback URL", True, 200,
        Status("delivered", "delivered")),
    # MessageStatus wins over the legacy SmsStatus.
    Row("courier-twiml-18", "Messaging Service: sent", True, 200,
        Status("sent", "sent", sid="SM0b6e2697aae04182a9f5b5c7a8994c7f")),
    Row("courier-twiml-22", "unsigned SignalWire unknown status", False, 403, Status("unknown", "huh")),
    Row("courier-twiml-23", "unsigned SignalWire delivered, uuid in the URL", False, 403,
        Status("delivered", "delivered")),
    # Courier turns failed + 63018 (WhatsApp rate limit) into a retryable 'errored'. We
    # keep Twilio's 'failed' and its code; retrying is the send worker's decision.
    Row("courier-twiml-31", "WhatsApp failed: rate limited", True, 200,
        Status("failed", "failed", error_code="63018")),
    Row("courier-twiml-32", "WhatsApp delivered", True, 200, Status("delivered", "delivered")),
]

ALL_ROWS = INBOUND_ROWS + STATUS_ROWS


def test_the_table_covers_every_filed_request_once(cases):
    assert sorted(row.case_id for row in ALL_ROWS) == sorted(cases)
    assert len(cases) == 32


def test_receive_rows_are_the_filed_receive_requests_and_status_rows_the_status_ones(cases):
    receive = {cid for cid, case in cases.items() if case["request"]["path"].endswith("/receive")}
    assert {row.case_id for row in INBOUND_ROWS} == receive


# --- signatures ------------------------------------------------------------------------


@pytest.mark.parametrize("row", ALL_ROWS, ids=row_id)
def test_the_filed_signature_verifies_with_twilios_scheme_exactly_when_it_was_signed(cases, row):
    # Given the request as courier's suite signed it: token 6789 over its signed_url
    case = cases[row.case_id]
    signed_url = case["signature"]["signed_url"]

    verified = twilio.verify(signed_url, form_of(case), filed_signature(case), FILED_TOKEN)

    # Then our verify agrees with Twilio's real scheme, query string included
    assert verified is row.signed


@pytest.mark.parametrize("row", ALL_ROWS, ids=row_id)
def test_a_body_signed_with_our_token_over_our_url_verifies_and_nothing_else_does(cases, row):
    form = form_of(cases[row.case_id])
    signature = twilio.sign(OUR_URL, form, OUR_TOKEN)

    assert twilio.verify(OUR_URL, form, signature, OUR_TOKEN)
    assert not twilio.verify(OUR_URL, form, signature, "not-" + OUR_TOKEN)
    assert not twilio.verify(OUR_URL + "?uuid=1", form, signature, OUR_TOKEN)
    assert not twilio.verify(OUR_URL, form, None, OUR_TOKEN)


def test_a_changed_field_breaks_the_signature(cases):
    form = form_of(cases["courier-twiml-01"])
    signature = twilio.sign(OUR_URL, form, OUR_TOKEN)
    form["Body"] = "Msg, altered"

    assert not twilio.verify(OUR_URL, form, signature, OUR_TOKEN)


# --- inbound ---------------------------------------------------------------------------


@pytest.mark.parametrize("row", INBOUND_ROWS, ids=row_id)
def test_inbound_requests_parse_into_our_message_or_a_named_refusal(cases, row):
    form = form_of(cases[row.case_id])
    expected = row.expected

    if isinstance(expected, Refused):
        with pytest.raises(InvalidWebhook) as refusal:
            twilio.parse_inbound(form)
        assert (refusal.value.field, str(refusal.value)) == (expected.field, expected.message)
        assert row.outcome in (400, 403)  # 403 when the signature is bad: it is checked first
        return

    message = twilio.parse_inbound(form)
    assert row.outcome in (200, 403)  # 403: refused for its signature or account, not its body
    assert (message.carrier_kind, message.account_id) == ("twilio", "acctid")
    assert message.carrier_message_id == expected.sid
    assert (message.from_number, message.to_number) == (expected.sender, expected.to)
    assert message.body == expected.body
    assert message.channel == expected.channel
    assert message.media == expected.media
    assert message.segments == 1
    assert message.raw == form.to_dict()


@pytest.mark.parametrize(
    "label, change, field, message",
    [
        ("no MessageSid", {"MessageSid": None}, "MessageSid", "field 'MessageSid' is required"),
        ("no From", {"From": None}, "From", "field 'From' is required"),
        ("blank To", {"To": "  "}, "To", "field 'To' is required"),
        ("no AccountSid", {"AccountSid": None}, "AccountSid", "field 'AccountSid' is required"),
        ("NumMedia not a number", {"NumMedia": "two"}, "NumMedia", "field 'NumMedia' must be a whole number"),
        ("NumMedia over Twilio's ten", {"NumMedia": "11"}, "NumMedia",
         "field 'NumMedia' must be between 0 and 10"),
        ("a declared media item missing", {"NumMedia": "3"}, "MediaUrl2", "field 'MediaUrl2' is required"),
    ],
)
def test_a_damaged_real_body_is_refused_with_the_field_named(cases, label, change, field, message):
    # Given the filed MMS with one field removed or spoiled
    form = form_of(cases["courier-twiml-07"])
    for name, value in change.items():
        if value is None:
            form.pop(name)
        else:
            form[name] = value

    with pytest.raises(InvalidWebhook) as refusal:
        twilio.parse_inbound(form)

    assert (refusal.value.field, str(refusal.value)) == (field, message), label


def test_declared_media_content_types_are_kept_with_their_urls(cases):
    form = form_of(cases["courier-twiml-07"])
    form.update({"MediaContentType0": "image/jpeg", "MediaContentType1": "image/png"})

    message = twilio.parse_inbound(form)

    assert message.media == (MediaItem("cat.jpg", "image/jpeg"), MediaItem("dog.jpg", "image/png"))


def test_a_messaging_service_sender_is_kept_on_the_message(cases):
    # The filed status callback -18 carries the Messaging Service id Twilio also puts on inbound texts.
    form = form_of(cases["courier-twiml-17"])
    form["MessagingServiceSid"] = "MGdb23ec0f89ee2632e46e91d8128f5e2b"

    assert twilio.parse_inbound(form).messaging_service_id == "MGdb23ec0f89ee2632e46e91d8128f5e2b"


# --- status callbacks ------------------------------------------------------------------


def with_account(form: MultiDict) -> MultiDict:
    # Courier's status bodies leave out the AccountSid that Twilio always sends; we need
    # it to pick the token, so the table supplies one where a body has none.
    if "AccountSid" not in form and "MessageSid" in form:
        form["AccountSid"] = "acctid"
    return form


@pytest.mark.parametrize("row", STATUS_ROWS, ids=row_id)
def test_status_callbacks_parse_into_our_statuses(cases, row):
    form = with_account(form_of(cases[row.case_id]))
    expected = row.expected

    if isinstance(expected, Refused):
        with pytest.raises(InvalidWebhook) as refusal:
            twilio.parse_status(form)
        assert (refusal.value.field, str(refusal.value)) == (expected.field, expected.message)
        return

    update = twilio.parse_status(form)
    assert (update.carrier_kind, update.account_id) == ("twilio", "acctid")
    assert update.carrier_message_id == expected.sid
    assert (update.status, update.carrier_status, update.error_code) == (
        expected.status, expected.carrier_status, expected.error_code)


def test_a_status_callback_without_an_account_is_refused_with_the_field_named(cases):
    with pytest.raises(InvalidWebhook) as refusal:
        twilio.parse_status(form_of(cases["courier-twiml-12"]))

    assert (refusal.value.field, str(refusal.value)) == ("AccountSid", "field 'AccountSid' is required")


@pytest.mark.parametrize("carrier_status, ours", sorted(twilio.STATUS_MAP.items()))
def test_every_twilio_status_maps_to_one_of_ours(cases, carrier_status, ours):
    form = with_account(form_of(cases["courier-twiml-12"]))
    form["MessageStatus"] = carrier_status.upper()  # Twilio's case is not ours to rely on

    update = twilio.parse_status(form)

    assert (update.status, update.carrier_status) == (ours, carrier_status)
