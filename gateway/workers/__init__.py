"""dramatiq actors: `dramatiq gateway.workers` (or `gateway worker`) runs them.

Importing this package sets up the broker from the environment (REDIS_URL, or the
embedded Redis) because dramatiq's CLI imports it to find the actors. Actors take only
JSON scalars (ids) and read everything else from the database.
"""

from __future__ import annotations

# First: chooses prometheus_client's multiprocess storage before anything imports it.
from gateway.worker_metrics import prometheus_middleware  # isort: skip

import dramatiq

from gateway.broker import build_broker
from gateway.logs import configure_logging
from gateway.runtime import get_runtime
from gateway.workers.middleware import MessageLogContext, WorkerHeartbeat, default_middleware
from gateway.workers.polling import ConsumerPolling

configure_logging()
broker = build_broker(get_runtime().redis_url, middleware=default_middleware())
broker.add_middleware(WorkerHeartbeat())
broker.add_middleware(ConsumerPolling())  # delayed tasks start within ~100 ms (gateway/workers/polling.py)
broker.add_middleware(MessageLogContext())  # log lines name the task's message, and only its own
broker.add_middleware(prometheus_middleware())  # metrics on 127.0.0.1 (gateway/worker_metrics.py)
dramatiq.set_broker(broker)

import gateway.workers.events  # noqa: E402,F401  (notifications: event webhooks)
import gateway.workers.media  # noqa: E402,F401  (MMS media downloads)
import gateway.workers.notify  # noqa: E402,F401  (notifications)
import gateway.workers.outbound  # noqa: E402,F401  (sending queued texts)
from gateway.workers import inbound  # noqa: E402,F401  (declares actors on the broker)
