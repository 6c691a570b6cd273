"""Blueprints carriers post to. Thin on purpose: verify, parse, store, enqueue, answer.

Every rejection has its exact message and its own counter outcome; nothing is stored
for a request that is rejected.
"""

from __future__ import annotations


def init_app(app) -> None:
    from gateway.webhooks import twilio
    from gateway.webhooks.direct import DirectWebhooks

    app.register_blueprint(twilio.bp)
    app.wsgi_app = DirectWebhooks(app, twilio.DIRECT_ROUTES)
