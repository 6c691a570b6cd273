"""The smallest WSGI app: gunicorn's own behaviour under test (tests/test_web_worker.py)."""


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
