"""Conversation state rules."""

from __future__ import annotations

UNASSIGNED = "unassigned"
ASSIGNED = "assigned"
CLOSED = "closed"


def conversation_status(folder_id: int | None, assignee_id: int | None, closed: bool) -> str:
    """Closed is final; otherwise a folder or an owner (or both) makes it assigned."""
    if closed:
        return CLOSED
    if folder_id is not None or assignee_id is not None:
        return ASSIGNED
    return UNASSIGNED


def needs_folder_match(folder_id: int | None, assignee_id: int | None) -> bool:
    """A conversation nobody has placed is matched again on each text: folders imported
    after it opened still claim it. Once placed, by the matcher or by a person, it stays."""
    return folder_id is None and assignee_id is None


def summarize(body: str, attachment_count: int) -> str:
    """What a list shows for a message: its text, or "Attachments (N)" for bare media."""
    if body.strip() or attachment_count == 0:
        return body
    return f"Attachments ({attachment_count})"
