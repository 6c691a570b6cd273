"""`gateway`: one module per command group; every failure is one line and a non-zero exit."""

from __future__ import annotations

import click

from gateway.cli import config_cmd, db_cmd, folders_cmd, send_cmd, serve_cmd, simulate_cmd, users_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """SMS gateway with a shared customer inbox."""


for module in (serve_cmd, db_cmd, config_cmd, users_cmd, folders_cmd, simulate_cmd, send_cmd):
    module.register(main)
