"""`gateway send`: queue a text from a business number, as the API's POST /messages does."""

from __future__ import annotations

import click

from gateway import number_sender, outbound
from gateway.cli.common import runtime_or_exit
from gateway.models import Message


@click.command("send")
@click.option("--from", "from_", required=True, help="One of the configured business numbers.")
@click.option("--to", required=True, help="The customer's number (without + it follows default_region).")
@click.option("--body", default="", help="The text; the number's appended message is added.")
@click.option("--media", multiple=True, help="A media URL; repeat for several.")
def send(from_: str, to: str, body: str, media: tuple[str, ...]) -> None:
    """Queue a text to a customer; a running worker sends it."""
    runtime = runtime_or_exit()
    try:
        created = outbound.start(runtime.sessions, runtime.settings, None, from_, to, body, list(media))
    except outbound.SendRefused as exc:
        raise click.ClickException(f"refused ({exc.code}): {exc.message}") from None
    with runtime.sessions() as session:
        message = session.get(Message, created.message_id)
        number = message.from_number
        summary = (f"queued message {message.id} from {message.from_number} to {message.to_number} "
                   f"({message.segments} segment{'s' if message.segments != 1 else ''}, {message.encoding})")
    if not number_sender.wake(runtime, number):
        summary += "; the broker is unreachable, the sweeper will hand it to a worker"
    click.echo(summary)


def register(main: click.Group) -> None:
    main.add_command(send)
