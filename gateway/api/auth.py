"""Bearer tokens: every /api/v1 request names its user, or gets a 401."""

from __future__ import annotations

import logging

import redis
from flask import current_app, g, request

from gateway.accounts import hash_token, user_for_token_hash
from gateway.api.errors import ApiError, handle_api_error
from gateway.db import transaction
from gateway.live import shared_client
from gateway.stream_tickets import token_hash_for_ticket

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1/"
PUBLIC_PATHS = {"/api/v1/openapi.json"}
STREAM_PATH = "/api/v1/notifications/stream"  # the one endpoint a stream ticket opens


def authenticate() -> None:
    if not request.path.startswith(API_PREFIX) or request.path in PUBLIC_PATHS:
        return
    header = request.headers.get("Authorization", "")
    if not header and request.path == STREAM_PATH and "ticket" in request.args:
        token_hash = _token_hash_for_stream_ticket(request.args["ticket"].strip())
        refusal = "invalid or expired stream ticket: ask for a new one"
    else:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "missing bearer token (Authorization: Bearer <token>)")
        token_hash, refusal = hash_token(token.strip()), "invalid or revoked token"
    runtime = current_app.extensions["gateway"]
    with transaction(runtime.sessions) as session:
        user = user_for_token_hash(session, token_hash) if token_hash else None
        if user is None:
            raise ApiError(401, "unauthorized", refusal)
        session.expunge(user)
    g.user, g.token_hash = user, token_hash


def _token_hash_for_stream_ticket(ticket: str) -> str | None:
    """Only the notification stream takes a ticket (gateway/stream_tickets.py)."""
    runtime = current_app.extensions["gateway"]
    try:
        return token_hash_for_ticket(shared_client(runtime.redis_url), ticket)
    except redis.RedisError:
        log.warning("stream ticket not checked: Redis unreachable", exc_info=True)
        raise ApiError(503, "unavailable", "stream tickets are unavailable right now; retry, "
                                           "or send the token in an Authorization header") from None


def init_app(app) -> None:
    app.before_request(authenticate)
    app.register_error_handler(ApiError, handle_api_error)
