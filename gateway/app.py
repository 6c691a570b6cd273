"""The application factory: `gunicorn "gateway.app:create_app()"`."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter

from gateway.runtime import Runtime, get_runtime
from gateway.settings import Settings
from gateway.webhooks.direct import http_error_code

# Carrier webhooks are a few KB (ten media URLs at most); API bodies are capped at a
# 1,600-character text. Anything near this is not a request we serve.
MAX_REQUEST_BYTES = 64 * 1024


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> Flask:
    """Build the web app around validated settings (from the environment when omitted)."""
    from gateway import health, logs
    from gateway.api import init_app as init_api
    from gateway.webhooks import init_app as init_webhooks

    if runtime is None:
        runtime = Runtime(settings) if settings is not None else get_runtime()
    logs.configure_logging()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.extensions["gateway"] = runtime
    app.register_error_handler(HTTPException, _json_http_error)
    # Before any route is added: ids past the database's 64-bit keys are simply not found.
    app.url_map.converters["int"] = RowIdConverter
    init_webhooks(app)
    init_api(app)
    health.init_app(app)
    return app


class RowIdConverter(IntegerConverter):
    """`<int:id>` that matches only ids a BIGINT key can hold (others 404, not 500)."""

    def __init__(self, url_map, **kwargs):
        kwargs.setdefault("max", 2**63 - 1)
        super().__init__(url_map, **kwargs)


def _json_http_error(exc: HTTPException):
    """Every HTTP error is the contract's JSON shape, never Werkzeug's HTML page."""
    code = http_error_code(exc)
    if exc.code and exc.code >= 500:
        logging.getLogger(__name__).error("http error", exc_info=exc)
    return jsonify(error={"code": code, "message": exc.description}), exc.code
