"""`twilio.verify` accepts exactly what twilio's own `RequestValidator.validate` accepts.

`verify` computes the second signature (the URL with its default port) only when the
first does not match (gateway/carriers/twilio.py). These tests hold it to the library's
answer on the real bodies in `../shared/twilio-webhooks/cases.json`, over URLs with and
without ports and query strings, for signatures made over either URL, with other tokens,
altered, truncated or not ASCII, and for forms with a repeated field.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import ImmutableMultiDict, MultiDict

from gateway.carriers import twilio
from tests.twilio_cases import load_cases

TOKEN = "our-test-token"

URLS = [
    "https://gateway.example.test/webhooks/twilio/sms",
    "https://gateway.example.test:443/webhooks/twilio/sms",
    "https://gateway.example.test:8443/webhooks/twilio/sms",
    "http://gateway.example.test/webhooks/twilio/sms",
    "http://gateway.example.test:80/webhooks/twilio/sms",
    "https://gateway.example.test/webhooks/twilio/status?uuid=019a0719-ac96",
    "https://gateway.example.test:443/webhooks/twilio/status?uuid=asdf&b=1",
]


def forms() -> list[tuple[str, MultiDict]]:
    """Every filed body as Flask hands it over, plus one with a repeated field."""
    filed = [(case_id, ImmutableMultiDict(parse_qsl(case["request"]["body"], keep_blank_values=True)))
             for case_id, case in sorted(load_cases().items())]
    repeated = MultiDict([("MessageSid", "SM1"), ("MediaUrl0", "b"), ("MediaUrl0", "a"), ("MediaUrl0", "b")])
    return filed + [("repeated-field", repeated)]


def signatures(url: str, form) -> dict[str, str | None]:
    """Signatures a request may carry for `url`: right ones over either variant, and wrong ones."""
    validator = RequestValidator(TOKEN)
    scheme_port = "443" if url.startswith("https") else "80"
    host = url.split("/")[2]
    bare_host = host.split(":")[0]
    with_port = url.replace(host, f"{bare_host}:{scheme_port}", 1)
    without_port = url.replace(host, bare_host, 1)
    right = validator.compute_signature(url, form)
    return {
        "over the url": right,
        "over the url with its default port": validator.compute_signature(with_port, form),
        "over the url without port": validator.compute_signature(without_port, form),
        "over another port": validator.compute_signature(url.replace(host, f"{bare_host}:9999", 1), form),
        "with another token": RequestValidator("not-" + TOKEN).compute_signature(url, form),
        "altered": ("A" if right[0] != "A" else "B") + right[1:],
        "truncated": right[:-1],
        "not ascii": right[:-1] + "é",
        "empty": "",
        "missing": None,
    }


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize(("form_id", "form"), forms(), ids=[form_id for form_id, _ in forms()])
def test_verify_accepts_exactly_what_twilios_validator_accepts(url, form_id, form):
    for name, signature in signatures(url, form).items():
        expected = bool(signature) and RequestValidator(TOKEN).validate(url, form, signature)
        assert twilio.verify(url, form, signature, TOKEN) is expected, (name, url, form_id)


@pytest.mark.parametrize("url", URLS)
def test_a_plain_dict_form_is_verified_as_twilio_does(url):
    form = {"MessageSid": "SM1", "Body": "hi", "From": "+14155550100"}
    for name, signature in signatures(url, form).items():
        expected = bool(signature) and RequestValidator(TOKEN).validate(url, form, signature)
        assert twilio.verify(url, form, signature, TOKEN) is expected, (name, url)


def test_the_filed_signatures_over_default_port_urls_are_accepted():
    # Twilio may sign the URL with ":443" that we know without it, and the other way round
    form = forms()[0][1]
    plain = "https://gateway.example.test/webhooks/twilio/sms"
    ported = "https://gateway.example.test:443/webhooks/twilio/sms"

    assert twilio.verify(plain, form, RequestValidator(TOKEN).compute_signature(ported, form), TOKEN)
    assert twilio.verify(ported, form, RequestValidator(TOKEN).compute_signature(plain, form), TOKEN)
    assert not twilio.verify(plain, form, RequestValidator(TOKEN).compute_signature(
        "https://gateway.example.test:8443/webhooks/twilio/sms", form), TOKEN)


class GetAllForm(dict):
    """A form read through `getall`, as twilio reads aiohttp's and multidict's."""

    def __init__(self, pairs):
        super().__init__(pairs)
        self.pairs = pairs

    def getall(self, name):
        return [value for key, value in self.pairs if key == name]


@pytest.mark.parametrize("form", [
    {},
    GetAllForm([("MessageSid", "SM1"), ("MediaUrl0", "b"), ("MediaUrl0", "a")]),
    MultiDict(),
], ids=["empty dict", "getall form", "empty multidict"])
def test_empty_and_getall_forms_are_verified_as_twilio_does(form):
    url = URLS[0]
    for name, signature in signatures(url, form).items():
        expected = bool(signature) and RequestValidator(TOKEN).validate(url, form, signature)
        assert twilio.verify(url, form, signature, TOKEN) is expected, name
