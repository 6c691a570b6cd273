"""The two doors a webhook can come through (gateway/webhooks/direct.py)."""

from __future__ import annotations

import pytest


class Door:
    """Posts a webhook through one door, and says which door answered it."""

    def __init__(self, name: str, app):
        self.name = name
        self.flask_views: list[str] = []
        for endpoint in ("twilio_webhooks.receive_sms", "twilio_webhooks.receive_status"):
            view = app.view_functions[endpoint]

            def counted(*args, _view=view, _endpoint=endpoint, **kwargs):
                self.flask_views.append(_endpoint)
                return _view(*args, **kwargs)

            app.view_functions[endpoint] = counted

    def post(self, client, path: str, form, headers: dict):
        # Twilio posts form-encoded, which the direct door answers; the same fields as
        # multipart/form-data are Flask's to parse, and its views answer them.
        content_type = "multipart/form-data" if self.name == "flask" else "application/x-www-form-urlencoded"
        return client.post(path, data=form, headers=headers, content_type=content_type)

    def assert_answered(self) -> None:
        """The door named answered: Flask's view ran only for the Flask door."""
        assert bool(self.flask_views) == (self.name == "flask"), (self.name, self.flask_views)


@pytest.fixture(params=["direct", "flask"])
def door(request, app) -> Door:
    return Door(request.param, app)
