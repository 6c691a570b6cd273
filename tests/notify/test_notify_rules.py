"""Who is told of a new text, and of an assignment: the rules as a table."""

from __future__ import annotations

import pytest

from gateway.routing.notify import (
    CONVERSATION_ASSIGNED,
    CONVERSATION_UNASSIGNED,
    MESSAGE_RECEIVED,
    ConversationFacts,
    Person,
    Preferences,
    Recipient,
    assignment_recipients,
    inbound_recipients,
)

ANN, SAM, SUE, SUBSCRIBER, SALES_SUBSCRIBER, MEMBER, TEAMLESS_SUBSCRIBER = 1, 2, 3, 4, 5, 6, 7

# ann owns conversations; sam and sue are a folder's sales and service resources.
PEOPLE = [
    Person(ANN, frozenset({"service"})),
    Person(SAM, frozenset({"sales"})),
    Person(SUE, frozenset({"service"})),
    Person(SUBSCRIBER, frozenset({"service"}), subscribe_all=True),
    Person(SALES_SUBSCRIBER, frozenset({"sales"}), subscribe_all=True),
    Person(MEMBER, frozenset({"service"})),
    Person(TEAMLESS_SUBSCRIBER, frozenset(), subscribe_all=True),
]

ON = Preferences()
NO_SALES = Preferences(sales_resource_on_inbound=False)
NO_SERVICE = Preferences(service_resource_on_inbound=False)
NO_RESOURCES = Preferences(sales_resource_on_inbound=False, service_resource_on_inbound=False)
NO_TEAM = Preferences(team_on_unassigned=False)


def facts(match: str, assignee=None, team="service", sales=SAM, service=SUE) -> ConversationFacts:
    return ConversationFacts(team=team, folder_match=match, assignee_id=assignee,
                             sales_resource_id=sales, service_resource_id=service)


def told(*user_ids: int) -> list[Recipient]:
    return [Recipient(u, MESSAGE_RECEIVED) for u in user_ids]


def unassigned(*user_ids: int) -> list[Recipient]:
    return [Recipient(u, CONVERSATION_UNASSIGNED) for u in user_ids]


CASES = [
    # label, conversation, preferences, expected recipients
    ("assigned: the owner, not the folder's resources", facts("matched", assignee=ANN), ON,
     told(ANN, SUBSCRIBER)),
    ("assigned with no folder: the owner, and no unassigned-work alert", facts("none", assignee=ANN), ON,
     told(ANN, SUBSCRIBER)),
    ("assigned, preferences off: the owner still", facts("matched", assignee=ANN), NO_RESOURCES,
     told(ANN, SUBSCRIBER)),
    ("matched: sales and service resources", facts("matched"), ON, told(SAM, SUE, SUBSCRIBER)),
    ("matched, sales resource switched off", facts("matched"), NO_SALES, told(SUE, SUBSCRIBER)),
    ("matched, service resource switched off", facts("matched"), NO_SERVICE, told(SAM, SUBSCRIBER)),
    ("matched, both switched off: only subscribers", facts("matched"), NO_RESOURCES, told(SUBSCRIBER)),
    ("matched, resources that name no user", facts("matched", sales=None, service=None), ON,
     told(SUBSCRIBER)),
    ("matched, one person is both resources: told once", facts("matched", sales=SUE, service=SUE), ON,
     told(SUE, SUBSCRIBER)),
    ("matched, a resource who also subscribes: told once", facts("matched", sales=SUBSCRIBER), ON,
     told(SUE, SUBSCRIBER)),
    ("matched, team switch off changes nothing", facts("matched"), NO_TEAM, told(SAM, SUE, SUBSCRIBER)),
    ("none: the number's team hears of unassigned work", facts("none", sales=None, service=None), ON,
     told(SUBSCRIBER) + unassigned(ANN, SUE, MEMBER)),
    ("ambiguous: the number's team hears of unassigned work", facts("ambiguous", sales=None, service=None),
     ON, told(SUBSCRIBER) + unassigned(ANN, SUE, MEMBER)),
    ("none, team alert switched off", facts("none", sales=None, service=None), NO_TEAM, told(SUBSCRIBER)),
    ("ambiguous, team alert switched off", facts("ambiguous", sales=None, service=None), NO_TEAM,
     told(SUBSCRIBER)),
    ("ambiguous: resource preferences do not matter", facts("ambiguous", sales=None, service=None),
     NO_RESOURCES, told(SUBSCRIBER) + unassigned(ANN, SUE, MEMBER)),
    ("another team's number: its subscribers, not ours", facts("matched", team="sales"), ON,
     told(SAM, SUE, SALES_SUBSCRIBER)),
    ("another team's number with no folder: that team", facts("none", team="sales", sales=None, service=None),
     ON, told(SALES_SUBSCRIBER) + unassigned(SAM)),
]


@pytest.mark.parametrize("label, conversation, preferences, expected", CASES, ids=[c[0] for c in CASES])
def test_an_inbound_text_tells_exactly_the_people_the_rules_name(label, conversation, preferences, expected):
    recipients = inbound_recipients("inbound", conversation, PEOPLE, preferences)

    assert sorted(recipients) == sorted(expected)


@pytest.mark.parametrize("direction", ["outbound", "note"])
def test_outbound_texts_and_notes_tell_nobody_least_of_all_their_author(direction):
    recipients = inbound_recipients(direction, facts("matched", assignee=ANN), PEOPLE, ON, author_id=ANN)

    assert recipients == []


def test_a_subscriber_without_a_team_hears_of_no_number():
    for conversation in (facts("matched"), facts("none"), facts("matched", team="sales")):
        recipients = inbound_recipients("inbound", conversation, PEOPLE, ON)
        assert TEAMLESS_SUBSCRIBER not in {r.user_id for r in recipients}


@pytest.mark.parametrize(
    "label, new_owner, assigned_by, expected",
    [
        ("given by someone else: the new owner is told", ANN, SUE, [Recipient(ANN, CONVERSATION_ASSIGNED)]),
        ("given by the system: the new owner is told", ANN, None, [Recipient(ANN, CONVERSATION_ASSIGNED)]),
        ("claimed by the owner: nobody is told", ANN, ANN, []),
        ("unassigned: nobody is told", None, SUE, []),
    ],
)
def test_an_assignment_tells_the_new_owner(label, new_owner, assigned_by, expected):
    assert assignment_recipients(new_owner, assigned_by) == expected
