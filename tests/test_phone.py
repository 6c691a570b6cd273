"""Phone numbers: E.164 for phones, short codes and sender ids kept as they are, the rest refused."""

from __future__ import annotations

import pytest

from gateway.phone import Number, NumberError, normalize_number, normalize_phone


@pytest.mark.parametrize(
    "raw, region, expected",
    [
        # Phone numbers, in the shapes carriers and people write them
        ("+15552345678", "US", Number("+15552345678", "e164")),
        ("15552345678", "US", Number("+15552345678", "e164")),    # no +: the default region decides
        ("5552345678", "US", Number("+15552345678", "e164")),
        ("(555) 234-5678", "US", Number("+15552345678", "e164")),
        ("+1 (555) 234-5678", "US", Number("+15552345678", "e164")),
        ("1-555-234-5678", "US", Number("+15552345678", "e164")),
        ("555.234.5678", "US", Number("+15552345678", "e164")),
        ("  +15552345678\n", "US", Number("+15552345678", "e164")),
        ("1-800-FLOWERS", "US", Number("+18003569377", "e164")),  # letters on the keypad
        ("011 44 7700 900123", "US", Number("+447700900123", "e164")),  # US international prefix
        # Other default regions
        ("020 7946 0018", "GB", Number("+442079460018", "e164")),
        ("07700 900123", "GB", Number("+447700900123", "e164")),
        ("00447700900123", "GB", Number("+447700900123", "e164")),
        ("+1 202 555 0100", "GB", Number("+12025550100", "e164")),  # a + always wins over the region
        ("+447700900123", "US", Number("+447700900123", "e164")),
        # Short codes and alphanumeric sender ids: kept verbatim, and flagged
        ("384387", "US", Number("384387", "shortcode")),
        ("22395", "US", Number("22395", "shortcode")),
        (" 384387 ", "US", Number("384387", "shortcode")),
        ("ACME", "US", Number("ACME", "alphanumeric")),
        ("Acme Bank", "GB", Number("Acme Bank", "alphanumeric")),
        ("Acme-Bank_1", "US", Number("Acme-Bank_1", "alphanumeric")),
        ("US.1234", "US", Number("US.1234", "alphanumeric")),    # a WhatsApp user id with no phone
    ],
)
def test_numbers_are_normalised(raw, region, expected):
    number = normalize_number(raw, region)

    assert number == expected
    assert number.is_phone is (expected.kind == "e164")


@pytest.mark.parametrize(
    "raw, message",
    [
        ("", "empty number"),
        ("   ", "empty number"),
        ("12", "'12' is not a possible phone number"),
        ("123456789", "'123456789' is not a possible phone number"),
        ("+1 555", "'+1 555' is not a possible phone number"),
        ("+1555234567890", "'+1555234567890' is not a possible phone number"),
        # A number without its area code can only be dialled locally: it is no E.164 number.
        ("+1 234 5678", "'+1 234 5678' is not a possible phone number"),
        ("+44 20 7946 00", "'+44 20 7946 00' is not a possible phone number"),
        ("hello!", "'hello!' is not a phone number "
         "((1) The string supplied did not seem to be a phone number.)"),
        ("+", "'+' is not a phone number ((1) The string supplied did not seem to be a phone number.)"),
        ("ABCDEFGHIJKL", "'ABCDEFGHIJKL' is not a phone number "
         "((1) The string supplied did not seem to be a phone number.)"),  # sender ids stop at 11
        ("+999 123", "'+999 123' is not a phone number ((0) Could not interpret numbers after plus-sign.)"),
    ],
)
def test_garbage_is_refused_with_the_reason(raw, message):
    with pytest.raises(NumberError) as error:
        normalize_number(raw, "US")

    assert str(error.value) == message


@pytest.mark.parametrize(
    "raw, outcome",
    [
        ("15552345678", "+15552345678"),
        ("384387", "'384387' is a shortcode, not a phone number"),
        ("ACME", "'ACME' is a sender id, not a phone number"),
        ("12", "'12' is not a possible phone number"),
    ],
)
def test_a_number_that_must_be_a_phone_is_e164_or_refused(raw, outcome):
    # Folder phones and send destinations: a short code or sender id is not a customer.
    if outcome.startswith("+"):
        assert normalize_phone(raw, "US") == outcome
        return
    with pytest.raises(NumberError) as error:
        normalize_phone(raw, "US")
    assert str(error.value) == outcome
