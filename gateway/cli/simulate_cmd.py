"""`gateway simulate inbound`: post a webhook to a running gateway exactly as Twilio would."""

from __future__ import annotations

import mimetypes
import os
import uuid

import click
import requests

from gateway.carriers import twilio
from gateway.cli.common import settings_or_exit
from gateway.phone import NumberError, normalize_number


@click.group("simulate")
def simulate_group() -> None:
    """Act as a carrier against a running gateway."""


@simulate_group.command("inbound")
@click.option("--from", "from_", required=True, help="The customer's number.")
@click.option("--to", required=True, help="One of the configured business numbers.")
@click.option("--body", default="", help="The text of the message.")
@click.option("--media", multiple=True, help="A media URL; repeat for several.")
@click.option("--url", "base_url", default=None,
              help="The gateway's public base URL (default: PUBLIC_URL, else http://127.0.0.1:5000).")
def inbound(from_: str, to: str, body: str, media: tuple[str, ...], base_url: str | None) -> None:
    """Sign and post an inbound SMS/MMS webhook, as Twilio would."""
    settings = settings_or_exit()
    base_url = (base_url or os.environ.get("PUBLIC_URL") or settings.public_url).rstrip("/")
    try:
        recipient = normalize_number(to, settings.default_region).value
        sender = normalize_number(from_, settings.default_region).value
    except NumberError as exc:
        raise click.ClickException(str(exc)) from None
    carrier = _carrier_for(settings, recipient)
    form = inbound_form(carrier.account_sid, sender, recipient, body, media)
    url = base_url + "/webhooks/twilio/sms"
    signature = twilio.sign(url, form, carrier.auth_token.get_secret_value())
    try:
        response = requests.post(url, data=form, headers={twilio.SIGNATURE_HEADER: signature}, timeout=15)
    except requests.RequestException as exc:
        raise click.ClickException(f"could not reach the gateway at {url}: {exc}") from None
    if response.status_code != 200:
        raise click.ClickException(f"gateway answered {response.status_code}: {response.text.strip()}")
    click.echo(f"delivered {form['MessageSid']} from {sender} to {recipient}: {response.status_code}")


def inbound_form(account_sid: str, sender: str, recipient: str, body: str, media=()) -> dict[str, str]:
    """The form fields of a Twilio inbound message webhook."""
    sid = "SM" + uuid.uuid4().hex
    form = {
        "ToCountry": "US", "SmsMessageSid": sid, "SmsSid": sid, "MessageSid": sid,
        "SmsStatus": "received", "AccountSid": account_sid, "From": sender, "To": recipient,
        "Body": body, "NumMedia": str(len(media)), "NumSegments": "1", "ApiVersion": "2010-04-01",
    }
    for index, url in enumerate(media):
        form[f"MediaUrl{index}"] = url
        form[f"MediaContentType{index}"] = mimetypes.guess_type(url)[0] or "application/octet-stream"
    return form


def _carrier_for(settings, recipient: str):
    number = settings.business_number(recipient)
    carrier = settings.carrier_named(number.carrier) if number else None
    carrier = carrier or next((c for c in settings.config.carriers if c.kind == twilio.KIND), None)
    if carrier is None:
        raise click.ClickException("no Twilio carrier is configured to sign with")
    return carrier


def register(main: click.Group) -> None:
    main.add_command(simulate_group)
