"""Structured JSON logs: one object per line, with the message SID and conversation id
whenever a line is about a message (passed as `extra=`)."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys

_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

# The message this thread is working on: added to every line it logs until cleared, so a
# line deep in a helper (a retry, a download, a send) still names its message. Worker
# threads clear it between tasks (gateway/workers/middleware.py, MessageLogContext).
_about: contextvars.ContextVar[dict | None] = contextvars.ContextVar("gateway_log_message", default=None)


def bind_message(message_sid: str | None = None, conversation_id: int | None = None, **ids) -> None:
    """From now on, this thread's log lines carry the message SID and conversation id."""
    fields = {"message_sid": message_sid, "conversation_id": conversation_id, **ids}
    _about.set({**(_about.get() or {}), **{k: v for k, v in fields.items() if v is not None}})


def clear_message() -> None:
    _about.set(None)


# Secrets of the loaded settings (gateway/runtime.py registers them): never written out,
# whatever a log line or a traceback carries. Shorter ones are not matched: a common word
# as a password would deface every line, and such a password is the weak spot anyway.
_secrets: set[str] = set()
_secret_pattern: re.Pattern | None = None
MIN_SECRET_LENGTH = 8


def redact_secrets(values) -> None:
    """From now on, these values are written as [redacted] in every log line."""
    global _secret_pattern
    _secrets.update(v for v in values if v and len(v) >= MIN_SECRET_LENGTH)
    if _secrets:
        # Longest first: a secret that contains another is hidden whole, not in part.
        alternatives = sorted(_secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(map(re.escape, alternatives)))


# The gateway's own credentials, whoever's they are: API tokens (gateway/accounts.py) and
# stream tickets (gateway/stream_tickets.py, which travel in a URL) keep their prefix only.
# No word boundary before the prefix: in a percent-encoded URL ("%3Dgwst_...") there is none.
_CREDENTIAL_SHAPES = re.compile(r"(gw_|gwst_)[A-Za-z0-9_-]{20,}")


def _redacted(value):
    """Redacted before JSON encoding, so an escaped quote, backslash or non-ASCII
    character in a secret cannot hide it from the match."""
    if not isinstance(value, str):
        return value
    if _secret_pattern is not None:
        value = _secret_pattern.sub("[redacted]", value)
    return _CREDENTIAL_SHAPES.sub(r"\1[redacted]", value)


# Containers nested deeper than this are written as their text: a log call must never
# fail, and a container that holds itself would otherwise recurse without end.
MAX_EXTRA_DEPTH = 8


def _redacted_field(value, depth: int = 0):
    """An extra field as JSON: numbers and containers keep their shape (ids, counts, lists
    of ids), and every text in them, keys included, is redacted."""
    if isinstance(value, int | float | bool) or value is None:
        return value
    if depth < MAX_EXTRA_DEPTH:
        if isinstance(value, list | tuple):
            return [_redacted_field(item, depth + 1) for item in value]
        if isinstance(value, dict):
            return {_redacted(str(key)): _redacted_field(item, depth + 1) for key, item in value.items()}
    return _redacted(value if isinstance(value, str) else str(value))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _redacted(record.getMessage()),
        }
        entry.update(_about.get() or {})
        entry.update({k: _redacted_field(v) for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            entry["exc"] = _redacted(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def configure_logging(level: str | None = None) -> None:
    """Once per process: JSON lines on stderr at LOG_LEVEL (default INFO)."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    # dramatiq's CLI installs its own handler before importing us: reformat it rather
    # than adding a second one, so each record is written once, as JSON.
    for handler in root.handlers:
        if not isinstance(handler.formatter, JsonFormatter):
            handler.setFormatter(JsonFormatter())
    root.setLevel(level or os.environ.get("LOG_LEVEL", "INFO"))
