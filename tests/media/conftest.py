"""Media tests: three local hosts and a config whose carrier fetches media from them.

- the carrier's API on 127.0.0.1 (`api_base` points there, so it alone gets credentials),
- its CDN on 127.0.0.2 (allowed, but no credentials),
- a forbidden host on 127.0.0.3 (not in `media_hosts`: must never be requested).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from gateway import media
from gateway.inbound import process_event
from gateway.models import Attachment, InboundEvent
from tests.conftest import TEST_CONFIG
from tests.media.hosts import MediaHost

MAX_FILE_BYTES = 200_000
MAX_MESSAGE_BYTES = 300_000

MEDIA_SECTION = f"""
[media]
max_file_bytes = {MAX_FILE_BYTES}
max_message_bytes = {MAX_MESSAGE_BYTES}
connect_timeout_s = 2
read_timeout_s = 0.5
download_timeout_s = 2
"""


@pytest.fixture
def hosts():
    started = SimpleNamespace(
        carrier=MediaHost("127.0.0.1"), cdn=MediaHost("127.0.0.2"), forbidden=MediaHost("127.0.0.3")
    )
    yield started
    for host in (started.carrier, started.cdn, started.forbidden):
        host.stop()


@pytest.fixture
def carrier_options() -> str:
    """Extra lines for the carrier's config block; parametrize to change them."""
    return ""


@pytest.fixture
def allowed_hosts() -> list[str]:
    """The carrier's `media_hosts`; parametrize to change them."""
    return ["127.0.0.1", "127.0.0.2"]


@pytest.fixture
def config_dir(tmp_path, hosts, carrier_options, allowed_hosts):
    carrier_lines = (
        f'api_base = "{hosts.carrier.base_url}"\n'
        f"media_hosts = {json.dumps(allowed_hosts)}\n"
        f"{carrier_options}\n"
    )
    marker = 'kind = "twilio"\n'
    assert marker in TEST_CONFIG
    directory = tmp_path / "config"
    directory.mkdir()
    (directory / "gateway.toml").write_text(
        TEST_CONFIG.replace(marker, marker + carrier_lines, 1) + MEDIA_SECTION
    )
    return directory


def receive_mms(runtime, carrier, urls, sender: str = "+14155550100", body: str = "photos of the job") -> int:
    """Post the MMS webhook and route it, as the inbound worker would; returns the message id."""
    response = carrier.inbound(sender, body, media=urls)
    assert response.status_code == 200
    with runtime.sessions() as session:
        event_id = session.scalar(select(InboundEvent.id).order_by(InboundEvent.id.desc()).limit(1))
    return process_event(runtime.sessions, runtime.settings, event_id)


def attachment_ids(runtime, message_id: int) -> list[int]:
    with runtime.sessions() as session:
        return list(session.scalars(
            select(Attachment.id).where(Attachment.message_id == message_id).order_by(Attachment.position)
        ))


def fetch(runtime, attachment_id: int, **kwargs) -> str:
    """What one media task does."""
    return media.fetch_attachment(runtime, attachment_id, **kwargs)
