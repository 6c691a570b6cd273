"""The web process's gunicorn worker: gthread, with new connections spread over the workers.

gunicorn's workers share one listening socket, and whichever worker wakes first accepts.
When a client opens its keep-alive connections all at once (a carrier's connection pool
after a deploy; wrk in bench/ingest.py), one worker can take most of them: the ingest
benchmark saw 2 and 14, even 1 and 15, of 16 connections. Each worker's requests share
its one GIL, and a webhook waits for its batch's commit in that worker
(gateway/group_commit.py), so the crowded worker queues requests for its threads at one
core while its sibling idles: a 2/14 round ran at ~0.8 of an 8/8 round's rate.

`BalancedThreadWorker` is gunicorn's gthread worker with one change: a worker whose
connections have just filled its threads stops accepting for `YIELD_S`, so that a sibling
takes the next connections. Nothing waits longer than that: if no sibling takes them (one
worker, or all full), the worker accepts again when the moment is over, and a worker
already past its threads accepts without pausing again. It relies on gthread's
`accept`, `set_accept_enabled` and `wait_for_and_dispatch_events` (gunicorn 27; pinned in
pyproject.toml, and tests/test_web_worker.py runs it in real gunicorn processes).
"""

from __future__ import annotations

import time

from gunicorn.workers.gthread import ThreadWorker

# Long enough for a sibling woken by the same connection to accept it; short enough that
# a connection no sibling takes is hardly delayed.
YIELD_S = 0.05


class BalancedThreadWorker(ThreadWorker):
    _yield_until = 0.0  # monotonic time until which this worker leaves new connections to others

    def accept(self, listener):
        before = self.nr_conns
        super().accept(listener)
        if before < self.cfg.threads <= self.nr_conns:
            self._yield_until = time.monotonic() + YIELD_S
            self.set_accept_enabled(False)

    def set_accept_enabled(self, enabled):
        # gthread's loop asks to accept again on every turn: not while this worker yields.
        if enabled and self._yielding():
            enabled = False
        super().set_accept_enabled(enabled)

    def wait_for_and_dispatch_events(self, timeout):
        if self._yielding():  # wake when the moment ends, to accept again
            timeout = min(timeout, max(self._yield_until - time.monotonic(), 0.0))
        super().wait_for_and_dispatch_events(timeout)

    def _yielding(self) -> bool:
        return self.nr_conns >= self.cfg.threads and time.monotonic() < self._yield_until
