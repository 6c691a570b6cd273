"""Content types of MMS media: names, the allowlist, and the bytes each type starts with.

Pure functions over bytes and strings (no I/O), used by gateway/media.py while it streams
a download. No maintained sniffing library (python-magic, filetype, puremagic) is
installed, and the types phones send have short, well-known signatures, so this is a
small table rather than a dependency. A type without a signature here cannot be stored,
even if the config allows it: its bytes could be anything.
"""

from __future__ import annotations

SIGNATURE_BYTES = 64  # enough of a file's start for every signature below


class ContentMismatch(ValueError):
    """The bytes are not what the content type says."""


# Other names phones and carriers use for the same types.
TYPE_ALIASES = {
    "image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-ms-bmp": "image/bmp",
    "audio/mp3": "audio/mpeg", "audio/x-mp3": "audio/mpeg", "audio/mpeg3": "audio/mpeg",
    "audio/x-wav": "audio/wav", "audio/wave": "audio/wav", "audio/vnd.wave": "audio/wav",
    "audio/x-m4a": "audio/mp4", "audio/m4a": "audio/mp4", "audio/aacp": "audio/aac",
    "audio/x-aac": "audio/aac", "audio/3gp": "audio/3gpp", "video/3gp": "video/3gpp",
    "text/x-vcard": "text/vcard", "text/directory": "text/vcard", "application/x-pdf": "application/pdf",
}


def normalize_type(value: str | None) -> str | None:
    if not value:
        return None
    base = value.split(";", 1)[0].strip().lower()
    return TYPE_ALIASES.get(base, base) or None


def type_allowed(content_type: str, patterns) -> bool:
    family = content_type.split("/", 1)[0] + "/*"
    allowed = {normalize_type(p) for p in patterns}
    return content_type in allowed or family in allowed


def _prefix(*signatures: bytes):
    return lambda head: head.startswith(signatures)


def _riff(kind: bytes):
    return lambda head: head[:4] == b"RIFF" and head[8:12] == kind


HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}


def _is_heif(head: bytes) -> bool:
    return head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS


def _is_iso_media(head: bytes) -> bool:
    """MP4, QuickTime, 3GPP and M4A: an ISO base media file ('ftyp' box), not a HEIF image."""
    return head[4:8] == b"ftyp" and head[8:12] not in HEIF_BRANDS


def _is_mpeg_audio(head: bytes) -> bool:
    return head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)


def _is_adts(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0


# The first bytes each binary type must start with.
SIGNATURES = {
    "image/jpeg": _prefix(b"\xff\xd8\xff"),
    "image/png": _prefix(b"\x89PNG\r\n\x1a\n"),
    "image/gif": _prefix(b"GIF87a", b"GIF89a"),
    "image/webp": _riff(b"WEBP"),
    "image/bmp": _prefix(b"BM"),
    "image/tiff": _prefix(b"II*\x00", b"MM\x00*"),
    "image/heic": _is_heif,
    "image/heif": _is_heif,
    "application/pdf": _prefix(b"%PDF-"),
    "audio/mpeg": _is_mpeg_audio,
    "audio/aac": _is_adts,
    "audio/amr": _prefix(b"#!AMR"),
    "audio/ogg": _prefix(b"OggS"),
    "audio/wav": _riff(b"WAVE"),
    "audio/webm": _prefix(b"\x1aE\xdf\xa3"),
    "audio/mp4": _is_iso_media,
    "audio/3gpp": _is_iso_media,
    "video/mp4": _is_iso_media,
    "video/quicktime": _is_iso_media,
    "video/3gpp": _is_iso_media,
    "video/3gpp2": _is_iso_media,
    "video/webm": _prefix(b"\x1aE\xdf\xa3"),
    "video/ogg": _prefix(b"OggS"),
    "video/mpeg": _prefix(b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"),
    "video/x-msvideo": _riff(b"AVI "),
}
# Text types have no signature: they must be UTF-8 without NUL bytes (a vCard must also
# begin like one).
TEXT_TYPES = {"text/plain", "text/vcard"}


def verifiable(content_type: str) -> bool:
    return content_type in SIGNATURES or content_type in TEXT_TYPES


def looks_like(head: bytes) -> str:
    """A name for what the bytes appear to be, for the failure reason."""
    for name, matches in SIGNATURES.items():
        if matches(head):
            return name
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "text/html"
    if text.startswith(b"<?xml") or text.startswith(b"<svg"):
        return "xml"
    return "unknown data"


def check_signature(content_type: str, head: bytes) -> None:
    """Raise ContentMismatch unless the first bytes agree with `content_type`."""
    if content_type == "text/vcard":
        ok = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:11].upper() == b"BEGIN:VCARD"
    elif content_type == "text/plain":
        ok = b"\x00" not in head  # served as text/plain with nosniff: HTML in it is inert
    else:
        ok = SIGNATURES[content_type](head)
    if not ok:
        raise ContentMismatch(f"the bytes are not {content_type} (they look like {looks_like(head)})")
