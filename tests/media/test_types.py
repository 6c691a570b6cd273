"""The content-type table: which first bytes pass for which type (pure, no I/O)."""

from __future__ import annotations

import pytest

from gateway.media_types import ContentMismatch, check_signature, normalize_type, type_allowed, verifiable
from gateway.settings import DEFAULT_MEDIA_CONTENT_TYPES

MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"


@pytest.mark.parametrize(
    "label, content_type, head, passes",
    [
        ("JPEG", "image/jpeg", b"\xff\xd8\xff\xe1\x00\x10Exif", True),
        ("PNG", "image/png", b"\x89PNG\r\n\x1a\n\x00\x00", True),
        ("GIF", "image/gif", b"GIF89a\x01\x00", True),
        ("WebP", "image/webp", b"RIFF\x10\x00\x00\x00WEBPVP8 ", True),
        ("HEIC photo from an iPhone", "image/heic", HEIC, True),
        ("MP4 video", "video/mp4", MP4, True),
        ("an MP4 is not a HEIC image", "image/heic", MP4, False),
        ("a HEIC image is not an MP4", "video/mp4", HEIC, False),
        ("PDF", "application/pdf", b"%PDF-1.7\n", True),
        ("AMR voice note", "audio/amr", b"#!AMR\n", True),
        ("MP3 with ID3", "audio/mpeg", b"ID3\x03\x00", True),
        ("vCard", "text/vcard", b"\xef\xbb\xbfBEGIN:VCARD\r\n", True),
        ("text", "text/plain", "café".encode(), True),
        ("text with NUL bytes", "text/plain", b"MZ\x00\x00", False),
        ("a PDF said to be a JPEG", "image/jpeg", b"%PDF-1.4", False),
        ("HTML said to be a PNG", "image/png", b"<html><script>", False),
        ("an empty start", "image/gif", b"", False),
    ],
)
def test_a_file_passes_only_when_its_first_bytes_match_its_type(label, content_type, head, passes):
    if passes:
        check_signature(content_type, head)
    else:
        with pytest.raises(ContentMismatch):
            check_signature(content_type, head)


@pytest.mark.parametrize(
    "raw, normalized",
    [("image/JPEG; charset=binary", "image/jpeg"), ("image/jpg", "image/jpeg"),
     ("text/x-vcard", "text/vcard"), ("audio/mp3", "audio/mpeg"), ("", None), (None, None)],
)
def test_content_type_names_are_normalized(raw, normalized):
    assert normalize_type(raw) == normalized


@pytest.mark.parametrize(
    "content_type, allowed",
    [("image/jpeg", True), ("video/quicktime", True), ("audio/amr", True), ("text/vcard", True),
     ("image/svg+xml", False), ("text/html", False), ("application/zip", False)],
)
def test_the_default_allowlist_takes_what_phones_send_and_nothing_browsers_run(content_type, allowed):
    assert type_allowed(content_type, DEFAULT_MEDIA_CONTENT_TYPES) is allowed


def test_every_type_allowed_by_default_by_name_can_be_checked():
    named = [t for t in DEFAULT_MEDIA_CONTENT_TYPES if not t.endswith("/*")]
    assert [t for t in named if not verifiable(normalize_type(t))] == []
