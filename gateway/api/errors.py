"""The API's error shape: {"error": {"code": ..., "message": ...}} with the right 4xx."""

from __future__ import annotations

from flask import jsonify


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def handle_api_error(exc: ApiError):
    return jsonify(error={"code": exc.code, "message": exc.message}), exc.status
