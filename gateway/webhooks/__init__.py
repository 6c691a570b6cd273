"""What carriers post to. Thin on purpose: verify, parse, store, enqueue, answer.

Each webhook is one function (`twilio.accept_sms`, ...). The carrier's own form posts
reach it through the direct door (`direct.py`, WSGI, in front of Flask); anything else
on its path through the carrier's Flask blueprint, which calls the same function.

Every rejection has its exact message and its own counter outcome; nothing is stored
for a request that is rejected.
"""

from __future__ import annotations


def init_app(app) -> None:
    from gateway.webhooks import twilio
    from gateway.webhooks.direct import DirectWebhooks

    app.register_blueprint(twilio.bp)
    app.wsgi_app = DirectWebhooks(app, twilio.DIRECT_ROUTES)
