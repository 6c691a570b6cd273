"""The ingest benchmark's baseline: a bare Flask endpoint that answers Twilio's webhook
path with the same empty TwiML, and does nothing else (no signature, no parsing, no
database, no broker). `bench/ingest.py` runs it under the Procfile's gunicorn flags."""

from flask import Flask, Response

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/webhooks/twilio/sms")
    def receive_sms():
        return Response(EMPTY_TWIML, status=200, mimetype="text/xml")

    return app
