"""Outbound tests run against a local stand-in of Twilio's Messages API.

The carrier's `api_base` points at the stand-in; its status callbacks are posted, signed
as Twilio signs them, to the test app.
"""

from __future__ import annotations

import pytest

from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, TEST_CONFIG
from tests.standins.twilio_api import TwilioStandIn

# Short carrier timeout and retry horizon, so unknown outcomes and give-ups are quick.
SEND_TIMEOUT_S = 1.0


@pytest.fixture
def standin():
    with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN) as server:
        yield server


@pytest.fixture
def retry_horizon_minutes() -> float:
    """Override in a test module or with parametrize to make the gateway give up sooner."""
    return 60


@pytest.fixture
def config_dir(tmp_path, standin, retry_horizon_minutes):
    directory = tmp_path / "config"
    directory.mkdir()
    config = TEST_CONFIG.replace(
        'kind = "twilio"\n',
        f'kind = "twilio"\napi_base = "{standin.url}"\nsend_timeout_seconds = {SEND_TIMEOUT_S}\n',
    ).replace(
        'default_region = "US"\n',
        f'default_region = "US"\nsend_retry_horizon_minutes = {retry_horizon_minutes}\n', 1,
    )
    assert f"send_retry_horizon_minutes = {retry_horizon_minutes}" in config
    assert standin.url in config
    (directory / "gateway.toml").write_text(config)
    return directory


@pytest.fixture
def callbacks(standin, client):
    """Status callbacks from the stand-in go to the test app, signed."""
    standin.callback_target = lambda url, form, headers: client.post(
        url.split("gateway.example.test", 1)[1], data=form, headers=headers
    )
    return standin
