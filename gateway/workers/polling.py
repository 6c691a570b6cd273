"""How often idle consumers ask Redis for work, which bounds how late a delayed task starts.

dramatiq's consumers back off to `worker_timeout` (1000 ms by default) when a queue is
empty. A delayed task is released by the delay-queue consumer and then picked up by the
queue's consumer, so it can start up to two timeouts late. Outbound sends wait for their
rate-limit slot as delayed tasks and wake one slot early (gateway/delivery.py); 100 ms
keeps them on their slot, for about ten Redis calls a second per idle queue.
"""

from __future__ import annotations

import os

from dramatiq.middleware import Middleware

DEFAULT_WORKER_TIMEOUT_MS = 100


class ConsumerPolling(Middleware):
    def __init__(self, worker_timeout_ms: int = DEFAULT_WORKER_TIMEOUT_MS):
        self.worker_timeout_ms = worker_timeout_ms

    def before_worker_boot(self, broker, worker):
        # Consumers are created after this hook, with the worker's timeout. An operator's
        # own `dramatiq_worker_timeout` wins.
        if "dramatiq_worker_timeout" not in os.environ:
            worker.worker_timeout = self.worker_timeout_ms
