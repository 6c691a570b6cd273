from __future__ import annotations

import click
from sqlalchemy.exc import OperationalError

from gateway.cli.common import settings_or_exit
from gateway.migrate import upgrade_database


@click.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
def upgrade() -> None:
    """Apply Alembic migrations up to the latest schema."""
    settings = settings_or_exit()
    try:
        upgrade_database(settings.database_url)
    except OperationalError as exc:
        raise click.ClickException(f"database unreachable: {exc.orig}") from None
    click.echo("database is up to date")


def register(main: click.Group) -> None:
    main.add_command(db_group)
