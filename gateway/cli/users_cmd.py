from __future__ import annotations

import click

from gateway.accounts import AccountError, add_user, create_token
from gateway.cli.common import runtime_or_exit
from gateway.db import transaction


@click.group("users")
def users_group() -> None:
    """People who work the inbox."""


@users_group.command("add")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(["admin", "supervisor", "agent"]))
@click.option("--team", "teams", multiple=True, help="A team from the config; repeat for several.")
def add(name: str, role: str, teams: tuple[str, ...]) -> None:
    """Add a user NAME with a role and teams."""
    runtime = runtime_or_exit()
    known = [t.name for t in runtime.settings.config.teams]
    try:
        with transaction(runtime.sessions) as session:
            user = add_user(session, name, role, list(teams), known)
            click.echo(f"added user {user.name} (id {user.id}, {role}, teams: {', '.join(teams) or 'none'})")
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("tokens")
def tokens_group() -> None:
    """API tokens."""


@tokens_group.command("create")
@click.argument("name")
def create(name: str) -> None:
    """Create an API token for user NAME; it is printed once and stored hashed."""
    runtime = runtime_or_exit()
    try:
        with transaction(runtime.sessions) as session:
            token = create_token(session, name)
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(token)


def register(main: click.Group) -> None:
    main.add_command(users_group)
    main.add_command(tokens_group)
