"""The web line's gunicorn worker spreads a burst of new connections over its workers."""

from __future__ import annotations

import http.client
import os

import psutil
import pytest

from gateway.web_worker import COOLDOWN_S, YIELD_S, YieldWindow
from tests.conftest import wait_until
from tests.test_procfile import procfile, start, stop
from tests.workers.conftest import free_port

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


def answers(connections) -> list[int]:
    """Each connection's answer: the pid of the worker that served it."""
    replies = []
    for connection in connections:
        response = connection.getresponse()
        assert response.status == 200
        replies.append(int(response.read()))
    return replies


def connections_per_worker(gunicorn: psutil.Process, port: int) -> list[int]:
    def held(worker):
        return sum(1 for c in worker.net_connections("tcp")
                   if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port)

    return sorted(held(worker) for worker in gunicorn.children())


def wait_for_workers(port: int, process, workers: int) -> None:
    """Every worker has answered (it accepts), and none holds a connection any more."""
    seen = set()

    def one_answer():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", "/", headers={"Connection": "close"})
            seen.add(int(connection.getresponse().read()))
        except OSError:
            pass  # still booting: the socket listens before the workers accept
        finally:
            connection.close()
        return len(seen) == workers

    wait_until(one_answer, message="every worker to answer")
    gunicorn = psutil.Process(process.pid)
    wait_until(lambda: sum(connections_per_worker(gunicorn, port)) == 0,
               message="the probes' connections to close")


@pytest.mark.processes
@pytest.mark.parametrize("count", [16, 24])
def test_a_burst_of_connections_is_shared_by_the_workers(count):
    # Given the web line's two workers of eight threads
    web, port = serve_hello()
    try:
        wait_for_workers(port, web, workers=2)

        # When a client opens its connections all at once
        connections = open_at_once(port, count)

        # Then every request is answered, and each worker holds at least its eight threads'
        # worth (plain gthread gave 6 and 10, 5 and 11, 3 and 13 of 16)
        assert len(answers(connections)) == count
        split = connections_per_worker(psutil.Process(web.pid), port)
        assert sum(split) == count
        assert split[0] >= 8, split
        for connection in connections:
            connection.close()
    finally:
        assert stop(web) == 0


@pytest.mark.processes
def test_a_lone_worker_still_takes_connections_beyond_its_threads():
    # Given one worker of two threads
    web, port = serve_hello("--workers 1 --threads 2")
    try:
        wait_for_workers(port, web, workers=1)

        # When six connections come at once, then all six are taken and answered
        connections = open_at_once(port, 6)
        assert len(answers(connections)) == 6
        assert connections_per_worker(psutil.Process(web.pid), port) == [6]
    finally:
        assert stop(web) == 0


def test_a_worker_pauses_once_when_an_accept_fills_its_threads():
    window = YieldWindow(threads=8)

    # Accepts below the threads, or past them, start no pause
    assert not window.open_after_accept(6, 7, now=100.0)
    assert not window.open_after_accept(8, 9, now=100.0)
    assert not window.holds(7, now=100.0)

    # The accept that fills the threads starts one, for YIELD_S
    assert window.open_after_accept(7, 8, now=100.0)
    assert window.holds(8, now=100.0 + YIELD_S / 2)
    assert not window.holds(8, now=100.0 + YIELD_S)
    # ... and a connection closing during it ends it: the worker has a free thread again
    assert not window.holds(7, now=100.0 + YIELD_S / 2)


def test_a_worker_hovering_at_its_threads_does_not_pause_again_within_the_cooldown():
    window = YieldWindow(threads=8)
    assert window.open_after_accept(7, 8, now=100.0)

    # Connections close and come again, each new one filling the threads once more: no
    # second pause until the cooldown after the first has passed, so they do not queue
    for now in (100.0 + YIELD_S, 100.5, 100.0 + YIELD_S + COOLDOWN_S - 0.001):
        assert not window.open_after_accept(7, 8, now=now)
        assert not window.holds(8, now=now)
    assert window.open_after_accept(7, 8, now=100.0 + YIELD_S + COOLDOWN_S)
