"""The web line's gunicorn worker spreads a burst of new connections over its workers."""

from __future__ import annotations

import http.client
import os

import psutil
import pytest

from tests.conftest import wait_until
from tests.test_procfile import procfile, start, stop
from tests.workers.conftest import free_port

pytestmark = pytest.mark.processes

HELLO_APP = "tests.standins.hello_wsgi:app"


def serve_hello(extra_flags: str = ""):
    """The Procfile's web line, gunicorn.conf.py included, serving the smallest app."""
    port = free_port()
    command = procfile()["web"].replace('"gateway.app:create_app()"', HELLO_APP).replace("$PORT", str(port))
    command += " " + extra_flags
    env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    return start(command, {**env, "PORT": str(port)}), port


def open_at_once(port: int, count: int) -> list[http.client.HTTPConnection]:
    """`count` keep-alive connections opened back to back, then one request on each."""
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(count)]
    for connection in connections:
        connection.connect()
    for connection in connections:
        connection.request("GET", "/")
    return connections


def answers(connections) -> list[tuple[int, bytes]]:
    replies = []
    for connection in connections:
        response = connection.getresponse()
        replies.append((response.status, response.read()))
    return replies


def connections_per_worker(gunicorn: psutil.Process, port: int) -> list[int]:
    def held(worker):
        return sum(1 for c in worker.net_connections("tcp")
                   if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port)

    return sorted(held(worker) for worker in gunicorn.children())


def wait_for_workers(port: int, process, workers: int = 2) -> None:
    def ready():
        try:
            return answers(open_at_once(port, 1)) == [(200, b"ok")]
        except OSError:
            return False

    wait_until(ready, message="gunicorn to answer")
    wait_until(lambda: len(psutil.Process(process.pid).children()) == workers, message="the workers to boot")


@pytest.mark.parametrize("count", [16, 24])
def test_a_burst_of_connections_is_shared_by_the_workers(count):
    # Given the web line's two workers of eight threads
    web, port = serve_hello()
    try:
        wait_for_workers(port, web)

        # When a client opens its connections all at once
        connections = open_at_once(port, count)

        # Then every request is answered, and neither worker holds more connections than
        # its threads while the other has fewer (plain gthread gave 2 and 14 of 16)
        assert answers(connections) == [(200, b"ok")] * count
        split = connections_per_worker(psutil.Process(web.pid), port)
        assert sum(split) == count
        assert split[0] >= min(8, count // 2), split
        for connection in connections:
            connection.close()
    finally:
        assert stop(web) == 0


def test_a_lone_worker_still_takes_connections_beyond_its_threads():
    # Given one worker of two threads
    web, port = serve_hello("--workers 1 --threads 2")
    try:
        wait_for_workers(port, web, workers=1)

        # When six connections come at once, then all six are taken and answered
        connections = open_at_once(port, 6)
        assert answers(connections) == [(200, b"ok")] * 6
        assert connections_per_worker(psutil.Process(web.pid), port) == [6]
    finally:
        assert stop(web) == 0
