"""Phone numbers: everything the gateway stores is E.164, or kept verbatim and flagged.

Carriers send numbers in several shapes ("+14155550100", "14155550100", a short code
"384387", an alphanumeric sender "ACME"). Folder matching and threading compare strings,
so every number passes through `normalize_number` once, at the edge.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

import phonenumbers

NumberKind = Literal["e164", "shortcode", "alphanumeric"]

_SHORT_CODE = re.compile(r"^\d{3,8}$")
_ALPHANUMERIC_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 \-_.&]{1,11}$")


class NumberError(ValueError):
    """The text is not a phone number, short code or sender id we can use."""


@dataclass(frozen=True)
class Number:
    value: str
    kind: NumberKind

    @property
    def is_phone(self) -> bool:
        return self.kind == "e164"


# Every inbound webhook normalises its To (one of a few business numbers) and its From
# (customers text again and again); parsing is 10-50 us a number. Results are immutable, and
# errors are raised each time (functools caches only returns). 16,384 recent senders cost
# ~3 MB per process, and cover a day's senders of a business far larger than our users.
@functools.lru_cache(maxsize=16_384)
def normalize_number(raw: str, default_region: str) -> Number:
    """E.164 for phone numbers; short codes and alphanumeric sender ids kept as they are."""
    text = (raw or "").strip()
    if not text:
        raise NumberError("empty number")
    if _SHORT_CODE.match(text):
        return Number(text, "shortcode")
    if _ALPHANUMERIC_SENDER.match(text):
        return Number(text, "alphanumeric")
    try:
        parsed = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise NumberError(f"{raw!r} is not a phone number ({exc})") from None
    # Not is_possible_number: it also accepts numbers that can only be dialled locally
    # ("+1 234 5678", no area code), which are no E.164 number anyone can text.
    if phonenumbers.is_possible_number_with_reason(parsed) != phonenumbers.ValidationResult.IS_POSSIBLE:
        raise NumberError(f"{raw!r} is not a possible phone number")
    return Number(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), "e164")


def normalize_phone(raw: str, default_region: str) -> str:
    """E.164 for a number that must be a real phone number (folder phones, destinations)."""
    number = normalize_number(raw, default_region)
    if not number.is_phone:
        raise NumberError(
            f"{raw!r} is a {number.kind.replace('alphanumeric', 'sender id')}, not a phone number"
        )
    return number.value
