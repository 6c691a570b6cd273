"""Structured JSON logs: one object per line, with the message SID and conversation id
whenever a line is about a message (passed as `extra=`)."""

from __future__ import annotations

import contextvars
import json
import logging
import os
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
# whatever a log line or a traceback carries. Shorter than this is not worth matching.
_secrets: set[str] = set()
MIN_SECRET_LENGTH = 6


def redact_secrets(values) -> None:
    """From now on, these values are written as [redacted] in every log line."""
    _secrets.update(v for v in values if v and len(v) >= MIN_SECRET_LENGTH)


def _redacted(line: str) -> str:
    for secret in _secrets:
        if secret in line:
            line = line.replace(secret, "[redacted]")
    return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return _redacted(self._json(record))

    def _json(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_about.get() or {})
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
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
