"""Measurement-only variants of the gateway's webhook, for `bench/ingest.py --bounds`.

They bound the ingest ratio from above, in the same run as the real one. Each runs the
gateway's app as production does (signature check, parsing, numbers, metrics), with one
change to the event store, chosen by BENCH_STORE:

- `none`: the webhook stores nothing and answers at once. This is the ceiling of any
  design that keeps the view's work.
- `wait:SECONDS`: the webhook waits that long instead of storing: no CPU, no database,
  only a wait like a commit's. This is what the wait alone costs under gunicorn's threads.

Never a production app: the events are not stored.
"""

from __future__ import annotations

import os
import time

from gateway.app import create_app as create_gateway_app
from gateway.group_commit import EventCommitter
from gateway.inbound import StoredEvent


def create_app():
    mode = os.environ["BENCH_STORE"]
    if mode == "none":
        wait_s = 0.0
    elif mode.startswith("wait:"):
        wait_s = float(mode.removeprefix("wait:"))
    else:
        raise SystemExit(f"BENCH_STORE must be 'none' or 'wait:SECONDS', not {mode!r}")

    def store(self, values):
        if wait_s:
            time.sleep(wait_s)
        return StoredEvent(0, True)

    EventCommitter.store = store
    return create_gateway_app()
