from __future__ import annotations

import click

from gateway.cli.common import settings_or_exit


@click.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("check")
@click.argument("directory", required=False, type=click.Path())
def check(directory: str | None) -> None:
    """Validate config/gateway.toml (or DIRECTORY's) without starting anything."""
    settings = settings_or_exit(directory)
    config = settings.config
    click.echo(
        f"{settings.config_path}: ok ({len(config.carriers)} carriers, "
        f"{len(config.business_numbers)} business numbers, {len(config.teams)} teams)"
    )


def register(main: click.Group) -> None:
    main.add_command(config_group)
