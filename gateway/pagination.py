"""Opaque cursors: the sort key of the last row seen, base64url-encoded JSON."""

from __future__ import annotations

import base64
import binascii
import json

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


class CursorError(ValueError):
    pass


def encode_cursor(*key) -> str:
    raw = json.dumps(list(key), separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise CursorError("cursor is not one this API issued") from None
    # Every cursor this API issues ends with a row id, after strings (times) or small ints.
    if not isinstance(key, list) or len(key) != arity or not _is_row_id(key[-1]) \
            or not all(_is_row_id(part) or _is_short_text(part) for part in key[:-1]):
        raise CursorError("cursor is not one this API issued")
    return key


def _is_row_id(value) -> bool:
    return type(value) is int and 0 <= value < 2**63


def _is_short_text(value) -> bool:
    return isinstance(value, str) and len(value) <= 64


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise CursorError(f"limit must be a whole number from 1 to {MAX_LIMIT}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise CursorError(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return limit


def newest_first(session, query, id_column, cursor: str | None, limit: int, *, scalars: bool = True,
                 row_id=lambda row: row.id):
    """One page of `query` by descending id, after the id in `cursor`: (rows, next_cursor)."""
    if cursor:
        (last_id,) = decode_cursor(cursor, 1)
        query = query.where(id_column < last_id)
    query = query.order_by(id_column.desc()).limit(limit + 1)
    rows = list(session.scalars(query) if scalars else session.execute(query))
    page, more = rows[:limit], len(rows) > limit
    return page, (encode_cursor(row_id(page[-1])) if more else None)
