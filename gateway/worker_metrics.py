"""Worker metrics: dramatiq's Prometheus middleware, serving on 127.0.0.1 unless told otherwise.

`gateway.workers` imports this module FIRST, before anything loads prometheus_client,
because prometheus_client picks its storage once, at import: with
PROMETHEUS_MULTIPROC_DIR set, every worker process writes its values to files there. The
directory is dramatiq's own (`dramatiq_prom_db`), so the exposition server that the
middleware forks (`dramatiq_prom_host`:`dramatiq_prom_port`, default 127.0.0.1:9191)
serves dramatiq's metrics (messages, errors, retries, durations per actor) and the
gateway's worker-side counters (routing outcomes, sends, media failures) in one scrape.

dramatiq's default host is 0.0.0.0; metrics are for the operator's scraper on this host,
not for the internet, so the gateway binds loopback unless `dramatiq_prom_host` says so.
"""

from __future__ import annotations

import os

os.environ.setdefault("dramatiq_prom_host", "127.0.0.1")

from dramatiq.middleware.prometheus import DB_PATH, Prometheus  # noqa: E402  (reads the env above)

METRICS_DIR = DB_PATH
os.environ["PROMETHEUS_MULTIPROC_DIR"] = METRICS_DIR


def prometheus_middleware() -> Prometheus:
    return Prometheus()
