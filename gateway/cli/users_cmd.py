from __future__ import annotations

import click

from gateway.accounts import AccountError, add_user, create_token, revoke_tokens, tokens_of
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


@tokens_group.command("list")
@click.argument("name")
def list_(name: str) -> None:
    """List user NAME's tokens: id, created, last used (never the token: only its hash is kept)."""
    runtime = runtime_or_exit()
    try:
        with runtime.sessions() as session:
            tokens = tokens_of(session, name)
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
    if not tokens:
        click.echo(f"{name} has no tokens")
    for token in tokens:
        used = f"last used {token.last_used_at:%Y-%m-%d %H:%M} UTC" if token.last_used_at else "never used"
        click.echo(f"token {token.id}: created {token.created_at:%Y-%m-%d %H:%M} UTC, {used}")


@tokens_group.command("revoke")
@click.argument("tokens", nargs=-1, required=True)
def revoke(tokens: tuple[str, ...]) -> None:
    """Revoke TOKENS, each an id from `tokens list` or the token itself; at once, for
    every request after this one. If one is unknown, none is revoked."""
    runtime = runtime_or_exit()
    try:
        with transaction(runtime.sessions) as session:
            revoked = [(row.id, row.user.name) for row in revoke_tokens(session, list(tokens))]
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
    for token_id, user_name in revoked:
        click.echo(f"revoked token {token_id} of {user_name}")


def register(main: click.Group) -> None:
    main.add_command(users_group)
    main.add_command(tokens_group)
