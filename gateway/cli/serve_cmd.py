"""`gateway serve`, `gateway worker`, `gateway sweep`: the processes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading

import click
from sqlalchemy.engine import make_url

from gateway.broker import stop_embedded_redis
from gateway.cli.common import settings_or_exit
from gateway.logs import configure_logging
from gateway.migrate import upgrade_database
from gateway.runtime import Runtime, set_runtime
from gateway.sweeper import DEFAULT_INTERVAL_S, Sweeper

log = logging.getLogger(__name__)

WORKER_COMMAND = [sys.executable, "-m", "dramatiq", "gateway.workers"]


@click.command("serve")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--workers", "worker_threads", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Worker threads in the one worker process.")
def serve(port: int, host: str, worker_threads: int) -> None:
    """Run web, workers and sweeper in one command (embedded defaults when no env is set)."""
    configure_logging()
    os.environ.setdefault("PUBLIC_URL", f"http://127.0.0.1:{port}")
    settings = settings_or_exit()
    if make_url(settings.database_url).get_backend_name() == "sqlite":
        upgrade_database(settings.database_url)  # the embedded database keeps itself current
    runtime = Runtime(settings)
    set_runtime(runtime)
    os.environ["REDIS_URL"] = runtime.redis_url  # children share the embedded Redis
    worker = subprocess.Popen(
        [*WORKER_COMMAND, "--processes", "1", "--threads", str(worker_threads)], env=os.environ.copy()
    )
    stop = threading.Event()
    sweeper = threading.Thread(target=Sweeper(runtime).run_forever, args=(stop,), daemon=True)
    sweeper.start()
    try:
        _serve_web(runtime, host, port, settings.public_url)
    finally:
        stop.set()
        _stop_process(worker)
        sweeper.join(timeout=10)
        stop_embedded_redis()
        click.echo("gateway stopped")


def _serve_web(runtime: Runtime, host: str, port: int, public_url: str) -> None:
    from werkzeug.serving import make_server

    from gateway.app import create_app

    server = make_server(host, port, create_app(runtime=runtime), threaded=True)
    click.echo(f"gateway listening on http://{host}:{port}")
    click.echo(f"  Twilio webhook: {public_url}/webhooks/twilio/sms   (Ctrl-C to stop)")
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _stop_process(process: subprocess.Popen, timeout: float = 15) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("worker did not stop in time; killing it", extra={"pid": process.pid})
            process.kill()


@click.command("worker", context_settings={"ignore_unknown_options": True})
@click.argument("dramatiq_args", nargs=-1, type=click.UNPROCESSED)
def worker(dramatiq_args: tuple[str, ...]) -> None:
    """Run the dramatiq workers alone (extra arguments go to dramatiq, e.g. --processes 2)."""
    settings_or_exit()
    os.execv(sys.executable, [*WORKER_COMMAND, *dramatiq_args])


@click.command("sweep")
@click.option("--interval", default=DEFAULT_INTERVAL_S, show_default=True, type=float)
def sweep(interval: float) -> None:
    """Run the sweeper alone: re-enqueue stored work nobody took; redeliver dead workers' tasks."""
    configure_logging()
    runtime = Runtime(settings_or_exit())
    set_runtime(runtime)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        Sweeper(runtime).run_forever(stop, interval)
    except KeyboardInterrupt:
        pass


def register(main: click.Group) -> None:
    for command in (serve, worker, sweep):
        main.add_command(command)
