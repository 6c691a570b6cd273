"""Folder matching: a sender's number against the folders' phone numbers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MATCHED = "matched"
NONE = "none"
AMBIGUOUS = "ambiguous"


@dataclass(frozen=True)
class FolderMatchResult:
    outcome: str                       # matched | none | ambiguous
    folder_id: int | None = None
    candidate_folder_ids: tuple[int, ...] = ()


def match_folders(folder_ids: Iterable[int]) -> FolderMatchResult:
    """Exactly one folder owns the number: matched. None or several: left for a person."""
    candidates = tuple(sorted(set(folder_ids)))
    if len(candidates) == 1:
        return FolderMatchResult(MATCHED, candidates[0], candidates)
    if not candidates:
        return FolderMatchResult(NONE)
    return FolderMatchResult(AMBIGUOUS, None, candidates)
