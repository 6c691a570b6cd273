from __future__ import annotations

import click


def register(main: click.Group) -> None:
    """Folder commands arrive with the folder import (see gateway/folders.py)."""
