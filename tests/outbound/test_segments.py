"""Segment counting: GSM-7 160/153 with extension characters as two; UCS-2 70/67 in UTF-16 units."""

from __future__ import annotations

import pytest

from gateway.segments import count_segments


@pytest.mark.parametrize(
    "label, text, encoding, segments",
    [
        ("empty", "", "gsm7", 1),
        ("160 GSM-7 characters fit one segment", "a" * 160, "gsm7", 1),
        ("161 split into two", "a" * 161, "gsm7", 2),
        ("306 fill two parts of 153", "a" * 306, "gsm7", 2),
        ("307 need a third", "a" * 307, "gsm7", 3),
        ("extension characters count twice: 80 euros fit", "€" * 80, "gsm7", 1),
        ("81 euros do not", "€" * 81, "gsm7", 2),
        ("accented letters of the GSM alphabet stay GSM-7", "é" * 160, "gsm7", 1),
        ("a newline is GSM-7", "Hi\nReply STOP to opt out.", "gsm7", 1),
        ("one non-GSM letter makes it UCS-2", "ê" + "a" * 69, "ucs2", 1),
        ("71 UCS-2 characters split", "ê" * 71, "ucs2", 2),
        ("134 UCS-2 fill two parts of 67", "ê" * 134, "ucs2", 2),
        ("emoji count as two UTF-16 units: 35 fit", "😀" * 35, "ucs2", 1),
        ("36 emoji do not", "😀" * 36, "ucs2", 2),
    ],
)
def test_segments_are_counted_as_carriers_count_them(label, text, encoding, segments):
    count = count_segments(text)
    assert (count.encoding, count.segments) == (encoding, segments), label


def test_a_body_of_invisible_characters_only_has_no_visible_text_but_an_emoji_sequence_has():
    from gateway.outbound import has_visible_text

    assert not has_visible_text("\u200b\u200c\u200d\ufeff\u2060 \n")
    assert not has_visible_text("\u3164\u2800\u034f\ufe0f\x07")   # fillers, blank Braille, marks alone
    assert has_visible_text("\U0001F468\u200d\U0001F469")   # a joined emoji: the joiner is not all it is
    assert has_visible_text("ok\u200b")
