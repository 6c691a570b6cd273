"""Folder matching: exactly one folder owns the sender's number, or a person must choose."""

from __future__ import annotations

import pytest

from gateway.routing.folders import AMBIGUOUS, MATCHED, NONE, FolderMatchResult, match_folders


@pytest.mark.parametrize(
    "folder_ids, expected",
    [
        ([], FolderMatchResult(NONE, None, ())),
        ([7], FolderMatchResult(MATCHED, 7, (7,))),
        # One folder listing the number twice is still one folder
        ([7, 7], FolderMatchResult(MATCHED, 7, (7,))),
        # Several: no folder, the candidates kept in a stable order for a person to pick
        ([9, 3], FolderMatchResult(AMBIGUOUS, None, (3, 9))),
        ([5, 2, 5, 8], FolderMatchResult(AMBIGUOUS, None, (2, 5, 8))),
    ],
)
def test_the_folders_that_hold_a_number_decide_the_match(folder_ids, expected):
    assert match_folders(folder_ids) == expected


def test_any_iterable_of_ids_will_do():
    # The worker passes a database result straight through: a one-shot iterator.
    assert match_folders(iter([4, 1])) == FolderMatchResult(AMBIGUOUS, None, (1, 4))


def test_the_outcomes_are_the_api_words():
    assert (MATCHED, NONE, AMBIGUOUS) == ("matched", "none", "ambiguous")
