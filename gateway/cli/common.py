"""What every command shares: settings loaded or a one-line reason, and a runtime."""

from __future__ import annotations

import click

from gateway.runtime import Runtime
from gateway.settings import ConfigError, Settings, load_settings


def settings_or_exit(config_dir: str | None = None) -> Settings:
    try:
        return load_settings(config_dir)
    except ConfigError as exc:
        raise click.ClickException(f"config error: {exc}") from None


def runtime_or_exit(config_dir: str | None = None) -> Runtime:
    return Runtime(settings_or_exit(config_dir))
