"""Conversation rules: what status a conversation has, when it is matched, what a list shows."""

from __future__ import annotations

import pytest

from gateway.routing.conversations import (
    ASSIGNED,
    CLOSED,
    UNASSIGNED,
    conversation_status,
    needs_folder_match,
    summarize,
)


@pytest.mark.parametrize(
    "folder_id, assignee_id, closed, status",
    [
        (None, None, False, UNASSIGNED),
        (3, None, False, ASSIGNED),        # a folder alone assigns it
        (None, 12, False, ASSIGNED),       # an owner alone assigns it
        (3, 12, False, ASSIGNED),
        # Closed is final, whatever else it has
        (None, None, True, CLOSED),
        (3, None, True, CLOSED),
        (None, 12, True, CLOSED),
        (3, 12, True, CLOSED),
    ],
)
def test_a_conversations_status_follows_its_folder_owner_and_closing(folder_id, assignee_id, closed, status):
    assert conversation_status(folder_id, assignee_id, closed) == status


def test_the_statuses_are_the_api_words():
    assert (UNASSIGNED, ASSIGNED, CLOSED) == ("unassigned", "assigned", "closed")


@pytest.mark.parametrize(
    "folder_id, assignee_id, matched_again",
    [
        (None, None, True),     # nobody placed it: a folder imported since may claim it
        (3, None, False),
        (None, 12, False),      # a person placed it: the matcher leaves it alone
        (3, 12, False),
    ],
)
def test_only_a_conversation_nobody_placed_is_matched_again(folder_id, assignee_id, matched_again):
    assert needs_folder_match(folder_id, assignee_id) is matched_again


@pytest.mark.parametrize(
    "body, attachments, summary",
    [
        ("Is my order ready?", 0, "Is my order ready?"),
        ("Here it is", 2, "Here it is"),     # text wins over media
        ("", 1, "Attachments (1)"),
        ("", 2, "Attachments (2)"),
        ("", 10, "Attachments (10)"),
        ("  \n", 3, "Attachments (3)"),   # blank text is no text
        ("", 0, ""),
        ("  ", 0, "  "),
    ],
)
def test_a_message_is_summarised_by_its_text_or_its_attachment_count(body, attachments, summary):
    assert summarize(body, attachments) == summary
