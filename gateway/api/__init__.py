"""The inbox REST API under /api/v1: JSON, bearer tokens, cursor pagination."""

from __future__ import annotations


def init_app(app) -> None:
    from gateway.api import auth, conversations, events

    auth.init_app(app)
    for module in (conversations, events):
        app.register_blueprint(module.bp)
    from gateway.api import event_deliveries, notifications

    for module in (notifications, event_deliveries):
        app.register_blueprint(module.bp)
    from gateway.api import attachments

    app.register_blueprint(attachments.bp)
    from gateway.api import messages

    app.register_blueprint(messages.bp)
