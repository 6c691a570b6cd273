"""Delivery statuses only move forward.

queued < sending < sent < delivered | undelivered | failed < read. The three final
outcomes share a rank: whichever the carrier reports first stands, and a late `sent`
never overwrites `delivered`. A status this table does not know never moves anything.
"""

from __future__ import annotations

STATUS_RANK = {
    "queued": 0,
    "sending": 1,
    "sent": 2,
    "delivered": 3,
    "undelivered": 3,
    "failed": 3,
    "read": 4,
}


def advance(current: str, reported: str) -> str:
    """The status after `reported` arrives for a message that is `current`."""
    new_rank = STATUS_RANK.get(reported)
    if new_rank is None:
        return current
    return reported if new_rank > STATUS_RANK.get(current, -1) else current
