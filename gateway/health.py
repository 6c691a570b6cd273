"""Liveness, readiness and metrics."""

from __future__ import annotations

import logging

import redis
from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    runtime = current_app.extensions["gateway"]
    checks = {"database": _check_database(runtime), "broker": _check_broker(runtime)}
    ready = all(v == "ok" for v in checks.values())
    return jsonify(status="ok" if ready else "unavailable", checks=checks), 200 if ready else 503


@bp.get("/metrics")
def metrics():
    """Counters summed over every web process, and backlogs read from the database."""
    from gateway.metrics import render

    return Response(render(current_app.extensions["gateway"]), mimetype=CONTENT_TYPE_LATEST)


def _check_database(runtime) -> str:
    try:
        with runtime.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        log.warning("readiness: database unreachable", exc_info=True)
        return f"error: {type(exc).__name__}"
    return "ok"


def _check_broker(runtime) -> str:
    try:
        client = redis.Redis.from_url(runtime.redis_url, socket_connect_timeout=1, socket_timeout=1)
        client.ping()
        client.close()
    except Exception as exc:
        log.warning("readiness: broker unreachable", exc_info=True)
        return f"error: {type(exc).__name__}"
    return "ok"


def init_app(app) -> None:
    app.register_blueprint(bp)
