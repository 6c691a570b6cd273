"""Worker metrics: dramatiq's Prometheus middleware, served on 127.0.0.1 unless told otherwise.

`gateway.workers` imports this module FIRST, before anything loads prometheus_client,
because prometheus_client picks its storage once, at import: with
PROMETHEUS_MULTIPROC_DIR set, every worker process writes its values to files there. The
directory is dramatiq's own (`dramatiq_prom_db`), so one scrape of the exposition server
(`dramatiq_prom_host`:`dramatiq_prom_port`, default 127.0.0.1:9191) returns dramatiq's
metrics (messages, errors, retries, durations per actor) and the gateway's worker-side
counters (routing outcomes, sends, media failures) summed over the worker processes.

dramatiq's own exposition server binds 0.0.0.0, and it runs in a process forked from
dramatiq's main process, which never imports the gateway, so an environment default set
here would not reach it. The middleware below forks `serve_metrics` instead: the same
job, bound to loopback, because metrics are for a scraper on this host, not the internet.
"""

from __future__ import annotations

import logging
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

from dramatiq.middleware.prometheus import DB_PATH, Prometheus

METRICS_DIR = DB_PATH
os.environ["PROMETHEUS_MULTIPROC_DIR"] = METRICS_DIR

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9191

log = logging.getLogger(__name__)


class WorkerPrometheus(Prometheus):
    """dramatiq's Prometheus middleware, its exposition server bound to loopback."""

    @property
    def forks(self):
        return [serve_metrics]

    def after_process_boot(self, broker):
        forget_dead_processes(METRICS_DIR)
        super().after_process_boot(broker)


def forget_dead_processes(directory: str) -> int:
    """Delete the value files of processes that are gone; returns how many.

    dramatiq never wipes its metrics directory, so without this every run's files (and a
    killed worker's "in progress" gauges) would be summed into every later scrape. A
    process that is gone takes its counts with it: Prometheus reads the drop as a counter
    reset. Files of live processes (this worker's siblings) are left alone.
    """
    removed = 0
    for name in os.listdir(directory):
        pid = name.rsplit("_", 1)[-1].removesuffix(".db")
        if name.endswith(".db") and pid.isdigit() and not _alive(int(pid)):
            try:
                os.remove(os.path.join(directory, name))
                removed += 1
            except FileNotFoundError:
                pass  # a sibling worker removed it first
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def serve_metrics() -> int:
    """Run by dramatiq in a forked process: serve the summed worker metrics until stopped."""
    address = (os.environ.get("dramatiq_prom_host", DEFAULT_HOST),
               int(os.environ.get("dramatiq_prom_port", DEFAULT_PORT)))
    try:
        server = HTTPServer(address, _MetricsHandler)
    except OSError as exc:
        # Another worker on this host serves them already (or the port is taken): the
        # workers run on without an exposition server of their own.
        log.warning("worker metrics not served", extra={"address": f"{address[0]}:{address[1]}",
                                                        "error": str(exc)})
        return 0
    log.info("worker metrics served", extra={"address": f"{address[0]}:{address[1]}"})
    server.serve_forever()
    return 0


class _MetricsHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=METRICS_DIR)
        output = generate_latest(registry)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(output)))
        self.end_headers()
        self.wfile.write(output)

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
        pass


def prometheus_middleware() -> Prometheus:
    return WorkerPrometheus()
