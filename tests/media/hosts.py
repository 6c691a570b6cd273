"""Local HTTP media hosts for the media tests: a carrier API, its CDN, a forbidden host.

Each host is a real `ThreadingHTTPServer` on its own loopback address. It records every
request it receives (method, path, Authorization header), so a test can assert what was
sent, what was never requested, and whether credentials leaked; and it answers from a
table of routes the test fills in.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from tests.conftest import ACCOUNT_SID, AUTH_TOKEN

CARRIER_AUTHORIZATION = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(range(256)) * 8
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(reversed(range(256))) * 6
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n" + b"%" * 500 + b"\n%%EOF\n"
HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>" + b" " * 100


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    authorization: str | None


class MediaHost:
    def __init__(self, address: str):
        self.requests: list[Seen] = []
        self.routes: dict[tuple[str, str], object] = {}
        self.bytes_sent_before_hangup: list[int] = []
        self.release = threading.Event()  # lets slow routes finish at teardown
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                host._handle(self)

            do_DELETE = do_GET

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((address, 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        address, port = self.server.server_address[:2]
        return f"http://{address}:{port}"

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, path: str) -> str:
        return self.base_url + path

    def route(self, path: str, respond, method: str = "GET") -> str:
        self.routes[(method, path)] = respond
        return self.url(path)

    def requested(self, path: str) -> list[Seen]:
        return [seen for seen in self.requests if seen.path == path]

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        path = urlsplit(handler.path).path
        self.requests.append(Seen(handler.command, path, handler.headers.get("Authorization")))
        respond = self.routes.get((handler.command, path))
        if respond is None:
            reply(handler, 404, b"no such media", "text/plain")
        else:
            respond(handler)

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def reply(handler, status: int, body: bytes = b"", content_type: str | None = None, headers=()) -> None:
    handler.send_response(status)
    if content_type:
        handler.send_header("Content-Type", content_type)
    for name, value in headers:
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


# --- routes ----------------------------------------------------------------------------


def file(body: bytes, content_type: str | None):
    return lambda handler: reply(handler, 200, body, content_type)


def with_carrier_auth(respond):
    """As Twilio does with HTTP auth enforced on media: 401 without the account's credentials."""

    def route(handler):
        if handler.headers.get("Authorization") != CARRIER_AUTHORIZATION:
            reply(handler, 401, b"authenticate", "text/plain", [("WWW-Authenticate", 'Basic realm="Twilio"')])
        else:
            respond(handler)

    return route


def redirect(location: str, status: int = 302):
    return lambda handler: reply(handler, status, b"", None, [("Location", location)])


def no_content(handler):
    handler.send_response(204)
    handler.end_headers()


def status(code: int):
    return lambda handler: reply(handler, code, b"temporarily unavailable", "text/plain")


def not_found_at_first(times: int, body: bytes, content_type: str):
    """404 for the first `times` requests (Twilio just after its webhook), then the file."""
    calls = []

    def route(handler):
        calls.append(1)
        if len(calls) <= times:
            reply(handler, 404, b"not found", "text/plain")
        else:
            reply(handler, 200, body, content_type)

    return route


def silent_until_released(host: MediaHost):
    """Accepts the request and says nothing until the test ends: a read timeout."""

    def route(handler):
        host.release.wait(30)
        reply(handler, 200, JPEG, "image/jpeg")

    return route


def dripping(host: MediaHost, head: bytes, content_type: str):
    """The first bytes, then one byte at a time, each well within the read timeout."""

    def route(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.end_headers()
        try:
            handler.wfile.write(head)
            while not host.release.wait(0.1):
                handler.wfile.write(b"\x00")
                handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            host.bytes_sent_before_hangup.append(-1)

    return route


def endless(host: MediaHost, head: bytes, content_type: str, total: int):
    """A body of `total` bytes with no Content-Length, written until the client hangs up;
    records how many bytes it got out before that."""

    def route(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.end_headers()  # HTTP/1.0 without a length: the body ends when we close
        sent, chunk = 0, head + b"\x00" * (64 * 1024 - len(head))
        try:
            while sent < total:
                handler.wfile.write(chunk)
                sent += len(chunk)
                chunk = b"\x00" * len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            host.bytes_sent_before_hangup.append(sent)
            return
        host.bytes_sent_before_hangup.append(sent)

    return route
