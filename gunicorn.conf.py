"""gunicorn reads this file from the working directory: the Procfile's `web` line needs no flag.

It makes `GET /metrics` count for every web process, not just the one that answers the
scrape. prometheus_client's multiprocess mode keeps each process's values in files under
PROMETHEUS_MULTIPROC_DIR; the directory must be set before any worker imports
prometheus_client (workers import the app after they fork from this master), and must
start empty, or counters of an earlier run would be added in.
"""

import glob
import os
import shutil
import tempfile

# gthread, with a burst of new connections spread over the workers (gateway/web_worker.py).
worker_class = "gateway.web_worker.BalancedThreadWorker"

_configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
metrics_dir = _configured or tempfile.mkdtemp(prefix="gateway-web-metrics-")
os.makedirs(metrics_dir, exist_ok=True)
# Forget what an earlier run left: only prometheus_client's value files, never anything
# else that may live in a directory the operator chose.
for _stale in glob.glob(os.path.join(metrics_dir, "*.db")):
    os.remove(_stale)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir


def child_exit(server, worker):
    """A web process ended: its counters stay counted; its live gauges go."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if not _configured:
        shutil.rmtree(metrics_dir, ignore_errors=True)
