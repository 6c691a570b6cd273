"""The per-process pieces every part shares: settings, database and broker.

Built on first use, never at import, so that a forked worker process opens its own
connections, and tests can build a runtime around their own settings.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import cached_property

import dramatiq
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from gateway import broker as brokers
from gateway import logs
from gateway.db import create_db_engine, make_sessionmaker
from gateway.settings import Settings, load_settings

log = logging.getLogger(__name__)


# After a failed enqueue, callers skip the broker this long (their work is already stored;
# the sweeper enqueues it) instead of each waiting out the connect and socket timeouts.
BROKER_RETRY_AFTER_S = 5.0


@dataclass
class Runtime:
    settings: Settings
    _broker_down_until: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        logs.redact_secrets(self.settings.secrets())

    @cached_property
    def engine(self) -> Engine:
        return create_db_engine(self.settings.database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_sessionmaker(self.engine)

    @cached_property
    def redis_url(self) -> str:
        return brokers.resolve_redis_url(self.settings.redis_url)

    def enqueue(self, queue_name: str, actor_name: str, *args) -> bool:
        """Put a task on the broker; False (logged) when the broker cannot be reached.

        Callers have already committed what the task needs, so a failed enqueue loses
        nothing: the sweeper finds the stored work and enqueues it again.
        """
        if self.broker_down():
            # It failed moments ago: a hung Redis would hold every caller for its timeouts.
            return False
        message = dramatiq.Message(
            queue_name=queue_name, actor_name=actor_name, args=args, kwargs={}, options={}
        )
        try:
            self.producer_broker.enqueue(message)
        except Exception:
            self.mark_broker_down()
            log.warning(
                "broker unreachable; the sweeper will enqueue later",
                extra={"actor": actor_name, "task_args": list(args)},
                exc_info=True,
            )
            return False
        return True

    def broker_down(self) -> bool:
        """True for a few seconds after a call to Redis failed: callers skip it meanwhile."""
        return time.monotonic() < self._broker_down_until

    def mark_broker_down(self) -> None:
        self._broker_down_until = time.monotonic() + BROKER_RETRY_AFTER_S

    @cached_property
    def producer_broker(self):
        # A broker used only to enqueue: it declares no actors and runs no middleware.
        return brokers.build_broker(self.redis_url, middleware=[])


_current: Runtime | None = None


def get_runtime() -> Runtime:
    """This process's runtime, from the environment and the config directory."""
    global _current
    if _current is None:
        _current = Runtime(load_settings())
    return _current


def set_runtime(runtime: Runtime | None) -> None:
    global _current
    _current = runtime
