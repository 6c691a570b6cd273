"""The direct door: carriers' webhooks answered straight from WSGI, in front of Flask.

Why by hand: a webhook is the one request whose cost per core the product promises
(issue 6). Under gunicorn, Flask's request machinery around the view (request context,
URL matching, the request and response objects) took a third of the web process's CPU
per webhook. Answered here, the same webhook used 23% less CPU and ran 1.22x as fast
(0.43x of a bare Flask endpoint against 0.36x, in the same rounds; BENCHMARKS.md). The
form is still werkzeug's to parse: `FormDataParser`, with the class Flask's
`request.form` uses, so a webhook's fields read the same through either door.

Only what carriers send comes this way: a POST to a webhook path, form-encoded, with its
length declared and within MAX_REQUEST_BYTES. Anything else on those paths (another
method or encoding, a chunked or oversized body) goes to Flask, whose views call the
same `accept_*` function, or answer 405 and 413 in the app's JSON shape.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Mapping
from typing import NamedTuple

from werkzeug.datastructures import EnvironHeaders, ImmutableMultiDict
from werkzeug.exceptions import ClientDisconnected, HTTPException, InternalServerError
from werkzeug.formparser import FormDataParser
from werkzeug.http import HTTP_STATUS_CODES, parse_options_header

log = logging.getLogger(__name__)

FORM_ENCODED = "application/x-www-form-urlencoded"


class Answer(NamedTuple):
    """What a webhook answers, whichever door it came through."""

    status: int
    body: bytes
    content_type: str


def error_answer(status: int, code: str, message: str) -> Answer:
    """The contract's JSON error, byte for byte as Flask's `jsonify` writes the app's others
    (its default provider: keys sorted, compact, ASCII, a closing newline)."""
    document = json.dumps({"error": {"code": code, "message": message}},
                          separators=(",", ":"), sort_keys=True)
    return Answer(status, (document + "\n").encode(), "application/json")


# accept(app, form, headers, path, query) -> Answer
Accept = Callable[..., Answer]


class DirectWebhooks:
    """WSGI middleware around the Flask app: `routes` maps a webhook path to its `accept`."""

    def __init__(self, app, routes: Mapping[str, Accept]):
        self.app = app
        self.routes = dict(routes)
        self.flask_wsgi = app.wsgi_app

    def __call__(self, environ, start_response):
        accept = self.routes.get(environ.get("PATH_INFO", ""))
        if accept is None or not self._takes(environ):
            return self.flask_wsgi(environ, start_response)
        answer = self._answer(accept, environ)
        start_response(f"{answer.status} {HTTP_STATUS_CODES[answer.status].upper()}",  # as werkzeug writes it
                       [("Content-Type", answer.content_type), ("Content-Length", str(len(answer.body)))])
        return [answer.body]

    def _takes(self, environ) -> bool:
        # (a chunked body's Content-Length, if a server passes one on, is not its length:
        # werkzeug ignores it, and so must we)
        if environ.get("REQUEST_METHOD") != "POST" or "HTTP_TRANSFER_ENCODING" in environ:
            return False
        mimetype, _ = parse_options_header(environ.get("CONTENT_TYPE", ""))
        length = environ.get("CONTENT_LENGTH", "")
        return (mimetype == FORM_ENCODED and length.isascii() and length.isdigit()
                and int(length) <= self.app.config["MAX_CONTENT_LENGTH"])

    def _answer(self, accept: Accept, environ) -> Answer:
        path = environ["PATH_INFO"]
        try:
            form = self._form(environ)
        except HTTPException as exc:  # the body ended before its declared length
            log.info("webhook body not read", extra={"path": path, "error": exc.description})
            return error_answer(exc.code, http_error_code(exc), exc.description)
        try:
            return accept(self.app, form, EnvironHeaders(environ), path, environ.get("QUERY_STRING", ""))
        except Exception:
            # What Flask does with an error no handler takes: raised as it is when the app
            # propagates exceptions (testing, debug), else logged on the app's logger as
            # Flask logs it and answered 500 in the contract's JSON.
            if self._propagates():
                raise
            self.app.logger.error(f"Exception on {path} [POST]", exc_info=True,
                                  extra={"message_sid": form.get("MessageSid")})
            error = InternalServerError()
            return error_answer(error.code, http_error_code(error), error.description)

    def _propagates(self) -> bool:
        configured = self.app.config["PROPAGATE_EXCEPTIONS"]
        return configured if configured is not None else (self.app.testing or self.app.debug)

    def _form(self, environ) -> ImmutableMultiDict:
        """The posted fields, parsed as Flask's `request.form` parses them."""
        body = _read_body(environ["wsgi.input"], int(environ["CONTENT_LENGTH"]),
                          terminated="wsgi.input_terminated" in environ)
        limit = self.app.config["MAX_CONTENT_LENGTH"]
        parser = FormDataParser(max_content_length=limit, cls=ImmutableMultiDict)
        _, form, _ = parser.parse(io.BytesIO(body), FORM_ENCODED, len(body), {})
        return form


def _read_body(stream, length: int, terminated: bool) -> bytes:
    """The declared Content-Length's bytes (within the limit: `_takes`), read as werkzeug
    reads them for Flask.

    By hand rather than through werkzeug's LimitedStream, whose reads in Python cost ~3%
    of a webhook's CPU: reading no more than CONTENT_LENGTH is what PEP 3333 asks of an
    app, and is safe on any server. A body that ends early is what the server says it is,
    as in werkzeug: where the server terminates the input (`wsgi.input_terminated`, as
    gunicorn does), what came is the body; elsewhere the client went away, a 400.
    """
    chunks, missing = [], length
    while missing:
        try:
            chunk = stream.read(missing)
        except (OSError, ValueError) as exc:  # a reset connection, as LimitedStream takes it
            raise ClientDisconnected() from exc
        if not chunk:
            if terminated:
                break
            raise ClientDisconnected()
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def http_error_code(exc: HTTPException) -> str:
    """`request_entity_too_large` for werkzeug's RequestEntityTooLarge, and so on."""
    return (exc.name or "error").lower().replace(" ", "_")
