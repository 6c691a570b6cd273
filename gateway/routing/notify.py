"""Who is told about what: the notification recipient rules, as pure functions.

Plain values in, `Recipient`s out; no database, no Redis (see README.md in this folder).
`gateway/notifications.py` reads the facts (the conversation, the folder's resources
resolved to user ids, the subscribers, the team's members), asks these functions, and
stores one notification per recipient.

The rules, as the message center this gateway replaces has them:

- a new inbound text tells the conversation's assignee, if it has one;
- otherwise, when the folder matched, the folder's sales resource and its service
  resource, each only if its `[notify] ..._resource_on_inbound` preference is on;
- users who subscribed to all are told of every inbound text on a business number one
  of their teams may see (the number's team is the conversation's `team`), and only
  those: subscribing is per team, whatever the user's role;
- a text in a conversation nobody owns and no folder claims (none or ambiguous) tells
  the business number's team that there is unassigned work, unless
  `[notify] team_on_unassigned` is off;
- outbound texts and notes tell nobody: in particular nobody is told of their own;
- an assignment or transfer tells the new owner, unless they took it themselves.

Each user is told once per event: someone who is both a resource and a team member
gets the one `message.received`, not a second `conversation.unassigned` as well.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MESSAGE_RECEIVED = "message.received"
CONVERSATION_UNASSIGNED = "conversation.unassigned"
CONVERSATION_ASSIGNED = "conversation.assigned"
KINDS = (MESSAGE_RECEIVED, CONVERSATION_UNASSIGNED, CONVERSATION_ASSIGNED)

MATCHED = "matched"
INBOUND = "inbound"


@dataclass(frozen=True)
class Preferences:
    """The `[notify]` section, as plain booleans."""

    sales_resource_on_inbound: bool = True
    service_resource_on_inbound: bool = True
    team_on_unassigned: bool = True


@dataclass(frozen=True)
class ConversationFacts:
    """What the rules need to know about the conversation a text arrived in."""

    team: str
    folder_match: str                      # matched | none | ambiguous
    assignee_id: int | None = None
    sales_resource_id: int | None = None   # the folder's resources, resolved to users
    service_resource_id: int | None = None


@dataclass(frozen=True)
class Person:
    user_id: int
    teams: frozenset[str] = frozenset()
    subscribe_all: bool = False


@dataclass(frozen=True, order=True)
class Recipient:
    user_id: int
    kind: str


def inbound_recipients(
    direction: str,
    conversation: ConversationFacts,
    people: Iterable[Person],
    preferences: Preferences,
    author_id: int | None = None,
) -> list[Recipient]:
    """Everyone to tell about one new message, each once, sorted by user id."""
    if direction != INBOUND:
        return []
    people = list(people)
    told: dict[int, str] = {}
    for user_id in _responsible(conversation, preferences):
        told.setdefault(user_id, MESSAGE_RECEIVED)
    for person in people:
        if person.subscribe_all and conversation.team in person.teams:
            told.setdefault(person.user_id, MESSAGE_RECEIVED)
    if _is_unplaced(conversation) and preferences.team_on_unassigned:
        for person in people:
            if conversation.team in person.teams:
                told.setdefault(person.user_id, CONVERSATION_UNASSIGNED)
    told.pop(author_id, None)
    return sorted(Recipient(user_id, kind) for user_id, kind in told.items())


def assignment_recipients(new_owner_id: int | None, assigned_by_id: int | None) -> list[Recipient]:
    """A conversation given to someone tells them; taking it yourself tells nobody."""
    if new_owner_id is None or new_owner_id == assigned_by_id:
        return []
    return [Recipient(new_owner_id, CONVERSATION_ASSIGNED)]


def _responsible(conversation: ConversationFacts, preferences: Preferences) -> list[int]:
    """The owner if there is one; else the matched folder's resources that are switched on."""
    if conversation.assignee_id is not None:
        return [conversation.assignee_id]
    if conversation.folder_match != MATCHED:
        return []
    resources = []
    if preferences.sales_resource_on_inbound and conversation.sales_resource_id is not None:
        resources.append(conversation.sales_resource_id)
    if preferences.service_resource_on_inbound and conversation.service_resource_id is not None:
        resources.append(conversation.service_resource_id)
    return resources


def _is_unplaced(conversation: ConversationFacts) -> bool:
    return conversation.assignee_id is None and conversation.folder_match != MATCHED
