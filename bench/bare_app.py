"""The ingest benchmark's baseline: a bare Flask endpoint that answers Twilio's webhook
path with the same empty TwiML, and does nothing else (no signature, no parsing, no
database, no broker). `bench/ingest.py` runs it under the Procfile's gunicorn flags.

`create_wsgi_app` is the same answer from a plain WSGI callable, without Flask: shown
beside the baseline by `bench/ingest.py --bounds`, never in place of it."""

from flask import Flask, Response

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/webhooks/twilio/sms")
    def receive_sms():
        return Response(EMPTY_TWIML, status=200, mimetype="text/xml")

    return app


def create_wsgi_app():
    body = EMPTY_TWIML.encode()
    headers = [("Content-Type", "text/xml; charset=utf-8"), ("Content-Length", str(len(body)))]

    def receive_sms(environ, start_response):  # any path: nothing is read, as above
        start_response("200 OK", headers)
        return [body]

    return receive_sms
