"""The Procfile's lines work as written."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess

import psutil
import pytest
import redis
import requests

from gateway.redis_keys import dramatiq_heartbeats
from tests.conftest import ROOT, wait_until
from tests.workers.conftest import free_port

pytestmark = pytest.mark.processes


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def start(command: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(shlex.split(os.path.expandvars(command)), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop(process: subprocess.Popen) -> int:
    """SIGTERM to the process the Procfile line started, as a process manager sends it;
    the exit code, once it and every process it started are gone."""
    children = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGTERM)
    code = process.wait(30)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"left running after SIGTERM: {alive}"
    return code


def test_the_web_line_serves_the_app_under_gunicorn(runtime, gateway_env, monkeypatch):
    port = free_port()
    monkeypatch.setenv("PORT", str(port))
    web = start(procfile()["web"], {**os.environ, **gateway_env, "PORT": str(port)})
    try:
        def ready():
            try:
                return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
            except requests.RequestException:  # still booting: the socket listens before workers accept
                return None

        response = wait_until(ready, message="gunicorn to answer")
        assert (response.status_code, response.json()["status"]) == (200, "ok")
    finally:
        assert stop(web) == 0


def test_the_worker_and_scheduler_lines_start_and_stop_cleanly(runtime, gateway_env):
    env = {**os.environ, **gateway_env}
    processes = [start(procfile()[name], env) for name in ("worker", "scheduler")]
    # Both talk to the broker once up: two worker processes and the sweeper each beat.
    heartbeats = redis.Redis.from_url(gateway_env["REDIS_URL"])
    wait_until(lambda: heartbeats.zcard(dramatiq_heartbeats()) >= 3, message="worker and sweeper to be up")
    heartbeats.close()
    assert [p.poll() for p in processes] == [None, None]
    assert [stop(p) for p in processes] == [0, 0]
