"""Bearer tokens: every /api/v1 request names its user, or gets a 401."""

from __future__ import annotations

from flask import current_app, g, request

from gateway.accounts import user_for_token
from gateway.api.errors import ApiError, handle_api_error
from gateway.db import transaction

API_PREFIX = "/api/v1/"
PUBLIC_PATHS = {"/api/v1/openapi.json"}


def authenticate() -> None:
    if not request.path.startswith(API_PREFIX) or request.path in PUBLIC_PATHS:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "missing bearer token (Authorization: Bearer <token>)")
    runtime = current_app.extensions["gateway"]
    with transaction(runtime.sessions) as session:
        user = user_for_token(session, token.strip())
        if user is None:
            raise ApiError(401, "unauthorized", "invalid or revoked token")
        session.expunge(user)
    g.user = user


def init_app(app) -> None:
    app.before_request(authenticate)
    app.register_error_handler(ApiError, handle_api_error)
