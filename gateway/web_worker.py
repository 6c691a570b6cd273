"""The web process's gunicorn worker: gthread, with new connections spread over the workers.

gunicorn's workers share one listening socket, and whichever worker wakes first accepts.
When a client opens its keep-alive connections all at once (a carrier's connection pool
after a deploy; wrk in bench/ingest.py), one worker can take most of them: the ingest
benchmark saw 2 and 14, even 1 and 15, of 16 connections. Each worker's requests share
its one GIL, and a webhook waits for its batch's commit in that worker
(gateway/group_commit.py), so the crowded worker queues requests for its threads at one
core while its sibling idles: such a round ran at ~0.8 of an even round's rate.

`BalancedThreadWorker` is gunicorn's gthread worker with one change: a worker whose
connections have just filled its threads stops accepting for `YIELD_S`, so that a sibling
takes the next connections, and then does not pause again for `COOLDOWN_S`. A pending
connection no sibling takes (one worker, or all full) waits at most `YIELD_S` for it, and
a worker whose connection count hovers at its thread count cannot turn the pauses into a
queue (one accept per pause). It extends gthread's `accept`, `set_accept_enabled` and
`wait_for_and_dispatch_events` (gunicorn 27.x in pyproject.toml; tests/test_web_worker.py
runs it in real gunicorn processes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from gunicorn.workers.gthread import ThreadWorker

# Long enough for a sibling woken by the same connection to accept it; short enough that
# a connection no sibling takes is hardly delayed.
YIELD_S = 0.05
# At most one pause in this long: a burst of connections is spread by the first.
COOLDOWN_S = 1.0


@dataclass
class YieldWindow:
    """When a worker of `threads` threads leaves new connections to its siblings."""

    threads: int
    until: float = float("-inf")  # monotonic time the current (or last) pause ends

    def open_after_accept(self, before: int, after: int, now: float) -> bool:
        """A pause starts when this accept filled the threads, unless one ended lately."""
        if before < self.threads <= after and now >= self.until + COOLDOWN_S:
            self.until = now + YIELD_S
            return True
        return False

    def holds(self, connections: int, now: float) -> bool:
        return connections >= self.threads and now < self.until


class BalancedThreadWorker(ThreadWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.yield_window = YieldWindow(self.cfg.threads)

    def accept(self, listener):
        before = self.nr_conns
        super().accept(listener)
        if self.yield_window.open_after_accept(before, self.nr_conns, time.monotonic()):
            self.set_accept_enabled(False)

    def set_accept_enabled(self, enabled):
        # gthread's loop asks to accept again on every turn: not during a pause.
        if enabled and self.yield_window.holds(self.nr_conns, time.monotonic()):
            enabled = False
        super().set_accept_enabled(enabled)

    def wait_for_and_dispatch_events(self, timeout):
        now = time.monotonic()
        if self.yield_window.holds(self.nr_conns, now):  # wake when the pause ends, to accept again
            timeout = min(timeout, max(self.yield_window.until - now, 0.0))
        super().wait_for_and_dispatch_events(timeout)
