"""How many SMS segments a text costs, as carriers count them (3GPP TS 23.038).

A text that fits the GSM-7 alphabet is GSM-7: 160 characters in one segment, 153 per
segment once it is split (the rest carries the concatenation header). Characters from
the GSM-7 extension table (`^{}\\[~]|€` and form feed) take an escape plus the character,
so they count as two. Anything else makes the whole text UCS-2: 70 in one segment, 67 per
segment when split, counted in UTF-16 code units (an emoji outside the BMP counts as two).
"""

from __future__ import annotations

from dataclasses import dataclass

GSM7 = "gsm7"
UCS2 = "ucs2"

GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = set("^{}\\[~]|€\f")

SINGLE = {GSM7: 160, UCS2: 70}
PER_PART = {GSM7: 153, UCS2: 67}


@dataclass(frozen=True)
class SegmentCount:
    encoding: str   # gsm7 | ucs2
    units: int      # septets for GSM-7, UTF-16 code units for UCS-2
    segments: int


def count_segments(text: str) -> SegmentCount:
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text):
        encoding = GSM7
        units = sum(2 if c in GSM7_EXTENSION else 1 for c in text)
    else:
        encoding = UCS2
        units = len(text.encode("utf-16-le")) // 2
    if units <= SINGLE[encoding]:
        return SegmentCount(encoding, units, 1)
    # Ceiling division: a partly filled last segment is still a segment.
    return SegmentCount(encoding, units, -(-units // PER_PART[encoding]))
