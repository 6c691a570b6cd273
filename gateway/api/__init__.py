"""The inbox REST API under /api/v1: JSON, bearer tokens, cursor pagination."""

from __future__ import annotations


def init_app(app) -> None:
    from gateway.api import (
        attachments,
        auth,
        conversations,
        event_deliveries,
        events,
        messages,
        notifications,
        openapi,
    )

    auth.init_app(app)
    for module in (conversations, messages, attachments, notifications, events, event_deliveries, openapi):
        app.register_blueprint(module.bp)
