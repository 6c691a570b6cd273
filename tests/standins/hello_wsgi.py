"""The smallest WSGI app, answering with its worker's pid: gunicorn's own behaviour under
test (tests/test_web_worker.py)."""

import os


def app(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
