"""Group commit for inbound webhooks: many requests, one INSERT, one COMMIT.

A commit per webhook costs each request a pool checkout, BEGIN, INSERT and COMMIT (round
trips and CPU in the driver) and the database a WAL flush. Here each request hands its
row to the process's committer thread and waits. The thread takes every row waiting at
that moment, writes them with one multi-row `INSERT ... ON CONFLICT DO NOTHING
RETURNING` that commits as it returns, and only then releases each request with its own
outcome. Batches form by themselves: while one commit is in flight the next requests
queue up behind it, and under load the committer lingers 2 ms so that more join; a lone
request after a quiet spell is committed at once. A lone request's event goes to the
workers at once, in a task of its own; otherwise several batches' events share a task,
sent after their requests are answered (`_due_events`).

The rules still hold request by request:
- committed before answered: a request returns only after the COMMIT that holds its row
  (a process that dies first has answered nobody, and the carrier retries);
- stored once: copies of one MessageSid in one batch are folded before the INSERT (the
  first copy is the new event, the others duplicates), and ON CONFLICT settles copies in
  other batches or processes; rows are sorted by key so two processes' batches take the
  unique index's locks in the same order and never deadlock;
- broker down: the enqueue is tried after the commit; a refusal clears `enqueued_at` so
  the sweeper's next pass takes the events, and the requests are answered 200 all the
  same (a lone request's event is tried before it is answered);
- database down: the batch is retried with backoff inside the carrier's timeout, as
  `gateway.inbound` does for one row;
- a row the database refuses (any other error) fails alone: the batch is retried row by
  row, so only that request gets its error and every other row is committed.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass, field

import orjson
import psycopg
from sqlalchemy import text, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from gateway.broker import INBOUND_QUEUE
from gateway.db import create_db_engine, insert_ignoring_conflicts, is_sqlite, transaction
from gateway.inbound import (
    STORE_FIRST_BACKOFF_S,
    STORE_MAX_BACKOFF_S,
    STORE_RETRY_WINDOW_S,
    StoredEvent,
)
from gateway.inbound_batch import PROCESS_INBOUND_BATCH_ACTOR
from gateway.metrics import WEBHOOK_STORE_RETRIES
from gateway.models import EventStatus, InboundEvent

log = logging.getLogger(__name__)

# Rows per INSERT: bounds the statement and the time the first request of a batch waits.
DEFAULT_MAX_BATCH = 256
# The committer thread ends after this long with nothing to do, and starts again on demand.
IDLE_EXIT_S = 5.0
# Under load (the last batch had company, or requests queued behind it), wait this long
# before taking the next batch: requests still in their view then join it. Fewer, fuller
# batches cost less CPU per request (measured: 2 ms took 10-20% off the web process's CPU
# per webhook at 16 connections); a lone request after a quiet spell is committed at once.
LINGER_S = 0.002
# Under load, new events go to the workers in tasks of up to this many, at most this late.
HAND_OVER_BATCH = 100
HAND_OVER_WAIT_S = 0.05
KEY = ("carrier", "carrier_message_id")
# The batch travels as one JSON document (one parameter, serialised in C) rather than as
# one array per column, which the driver would dump element by element in Python.
INSERT_EVENTS = text(
    "INSERT INTO inbound_events (carrier, carrier_message_id, from_number, from_kind, to_number, payload, "
    "status, received_at, enqueued_at, attempts) "
    "SELECT carrier, carrier_message_id, from_number, from_kind, to_number, payload, status, received_at, "
    "enqueued_at, 0 FROM json_populate_recordset(NULL::inbound_events, CAST(:rows AS json)) "
    "ON CONFLICT (carrier, carrier_message_id) DO NOTHING RETURNING id, carrier, carrier_message_id"
)
INSERT_EVENTS_SQL = INSERT_EVENTS.text.replace(":rows", "%s")  # the same, in psycopg's paramstyle


@dataclass
class _Waiting:
    values: dict
    done: threading.Event = field(default_factory=threading.Event)
    event_id: int | None = None
    error: BaseException | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.values["carrier"], self.values["carrier_message_id"]


class EventCommitter:
    """One per process and runtime: `store(values)` returns once the row is committed."""

    def __init__(self, runtime, max_batch: int = DEFAULT_MAX_BATCH):
        self.runtime = runtime
        self.max_batch = max_batch
        self._waiting: list[_Waiting] = []
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._engine: Engine | None = None
        self._raw = None  # the pooled DBAPI connection the committer holds (PostgreSQL)
        self._under_load = False  # see _run
        self._unsent: list[int] = []  # committed events not yet enqueued (see _due_events)
        self._unsent_since = 0.0
        self._last_batch_at = -HAND_OVER_WAIT_S  # see _due_events
        _COMMITTERS.add(self)

    def store(self, values: dict) -> StoredEvent:
        """Commit one inbound event row; a repeated carrier message id stores nothing."""
        waiting = _Waiting(values)
        with self._lock:
            self._waiting.append(waiting)
            self._ensure_thread()
            if len(self._waiting) == 1:  # the committer sleeps only on an empty list
                self._lock.notify()
        waiting.done.wait()
        if waiting.error is not None:
            raise waiting.error
        return StoredEvent(waiting.event_id, values["status"] == EventStatus.received)

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # forked: the parent's thread (and connection) is not ours
            self._pid, self._thread, self._raw, self._engine = os.getpid(), None, None, None
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="event-committer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            due = None
            with self._lock:
                if not self._waiting:
                    self._lock.wait(HAND_OVER_WAIT_S if self._unsent else IDLE_EXIT_S)
                if not self._waiting:
                    if not self._unsent:
                        self._thread = None
                        self._close_connection()
                        return
                    due, self._unsent = self._unsent, []  # a burst ended: its last events go now
            if due is not None:
                self._send(due)
                continue
            if self._under_load:
                time.sleep(LINGER_S)
            with self._lock:
                batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch:]
                # Under load: this batch had company, or requests queued up behind it. (A batch
                # of one with others already waiting is load too: counting it as a lone request
                # took its linger away and enqueued a task for it alone, which kept the next
                # batches small too: 8 events a task in the ingest benchmark instead of ~30.)
                self._under_load = len(batch) > 1 or bool(self._waiting)
                now = time.monotonic()
                lone = not self._under_load and now - self._last_batch_at >= HAND_OVER_WAIT_S
                self._last_batch_at = now
            new_events = []
            try:
                new_events = self._commit(batch)
            except BaseException as exc:  # noqa: BLE001 - handed to the requests, which raise it
                log.exception("webhook batch not stored", extra={"rows": len(batch)})
                for waiting in batch:
                    waiting.error = exc
            finally:
                due = self._due_events(new_events, lone)
                if lone and due:  # its event is on the queue before it is answered
                    self._send(due)
                    due = []
                for waiting in batch:
                    waiting.done.set()
            if due:  # the requests are answered first: the broker's round trip is not theirs to wait
                self._send(due)

    def _commit(self, batch: list[_Waiting]) -> list[int]:
        """Store the batch; returns the ids of its new events for the workers."""
        first: dict[tuple[str, str], _Waiting] = {}
        for waiting in batch:
            first.setdefault(waiting.key, waiting)
        rows = [first[key] for key in sorted(first)]
        try:
            new_ids = self._insert_with_retries([w.values for w in rows])
        except (OperationalError, InterfaceError):
            raise
        except Exception:
            log.warning("webhook batch refused; storing its rows one by one", exc_info=True,
                        extra={"rows": len(rows)})
            new_ids = self._insert_one_by_one(rows)
        for waiting in rows:
            waiting.event_id = new_ids.get(waiting.key)
        for waiting in batch:  # a copy shares its first's fate: never "duplicate" of nothing stored
            if waiting is not first[waiting.key]:
                waiting.error = first[waiting.key].error
        return [w.event_id for w in rows
                if w.event_id is not None and w.values["status"] == EventStatus.received]

    def _due_events(self, new_events: list[int], lone: bool) -> list[int]:
        """The events to hand to the workers now: several commits' worth to one task under load.

        The workers thread a task's events in one transaction, and 100 events a task go
        ~3x faster than 8 (BENCHMARKS.md). So events wait here for up to `HAND_OVER_WAIT_S`
        or `HAND_OVER_BATCH` events, and when the burst ends the committer sends what is
        left. Only a lone webhook's event (no company, no batch in the last
        `HAND_OVER_WAIT_S`) goes at once: a steady trickle of single requests is load too
        (in a profile of the ingest benchmark, a web process that sent a task per request
        spent ~10% of its GIL time enqueueing). They are committed already: a process
        killed with events still here leaves them to the sweeper (`stale_after`), as a
        kill between a commit and its enqueue always did.
        """
        if new_events and not self._unsent:
            self._unsent_since = time.monotonic()
        self._unsent += new_events
        due = (len(self._unsent) >= HAND_OVER_BATCH or (lone and not self._waiting)
               or time.monotonic() - self._unsent_since >= HAND_OVER_WAIT_S)
        if not self._unsent or not due:
            return []
        event_ids, self._unsent = self._unsent, []
        return event_ids

    def _send(self, event_ids: list[int]) -> None:
        try:
            self._enqueue(event_ids)
        except Exception:
            # The rows are committed: their requests are answered 200 whatever happens here.
            # Events marked enqueued that no worker got are the sweeper's after `stale_after`.
            log.exception("stored webhooks not handed to the workers; the sweeper will",
                          extra={"event_ids": event_ids})

    def _insert_with_retries(self, rows: list[dict]) -> dict[tuple[str, str], int]:
        """One INSERT, one COMMIT; held through a short database outage like a single row."""
        sessions = self.runtime.sessions
        deadline = time.monotonic() + STORE_RETRY_WINDOW_S
        delay = STORE_FIRST_BACKOFF_S
        while True:
            try:
                return self._insert(rows)
            except (OperationalError, InterfaceError) as exc:
                if is_sqlite(sessions.kw["bind"]) or time.monotonic() + delay > deadline:
                    raise
                WEBHOOK_STORE_RETRIES.inc()
                log.warning("database unreachable while storing webhooks; retrying",
                            extra={"rows": len(rows), "retry_in_s": delay, "error": type(exc.orig).__name__})
                time.sleep(delay)
                delay = min(delay * 2, STORE_MAX_BACKOFF_S)

    def _insert(self, rows: list[dict]) -> dict[tuple[str, str], int]:
        if is_sqlite(self.runtime.engine):
            with transaction(self.runtime.sessions) as session:
                statement = (
                    sqlite.insert(InboundEvent).values(rows).on_conflict_do_nothing(index_elements=list(KEY))
                    .returning(InboundEvent.id, InboundEvent.carrier, InboundEvent.carrier_message_id)
                )
                return {(carrier, sid): event_id for event_id, carrier, sid in session.execute(statement)}
        # PostgreSQL: one statement text for any batch size, prepared once on the server and
        # not compiled anew for every size. It runs alone in autocommit: when it returns, its
        # rows are committed, in one round trip. It goes straight to the driver's connection,
        # which the committer keeps: SQLAlchemy's execution layer and pool checkout cost
        # ~160 us of CPU a batch (issue 6); errors still reach the callers as SQLAlchemy's.
        # orjson, not json: the stdlib's encoder took ~130 us of the committer's ~360 us of
        # CPU (GIL held) for a batch of 8 webhooks; orjson writes the same document in ~17 us.
        # It refuses a few values json writes (an int over 64 bits, a lone surrogate): such a
        # batch goes row by row through SQLAlchemy, like any refused batch, and is stored.
        document = orjson.dumps(rows).decode()
        connection = None
        try:
            # (the pool hands out the driver's own connection errors, unwrapped: caught here too)
            connection = self._driver_connection()
            found = connection.execute(INSERT_EVENTS_SQL, (document,), prepare=True).fetchall()
        except psycopg.Error as exc:
            if connection is not None and (connection.broken or connection.closed):
                self._drop_connection()  # a dead one: the retry connects anew
            raise DBAPIError.instance(INSERT_EVENTS_SQL, None, exc, psycopg.Error) from exc
        return {(carrier, sid): event_id for event_id, carrier, sid in found}

    def _driver_connection(self) -> psycopg.Connection:
        """The committer's own psycopg connection, in autocommit, kept between batches
        (no ping: a dead one fails the INSERT, is dropped, and the retry connects anew)."""
        if self._raw is None:
            if self._engine is None:
                self._engine = create_db_engine(
                    self.runtime.settings.database_url, isolation_level="AUTOCOMMIT", pool_pre_ping=False,
                    pool_size=1, max_overflow=0,
                )
            self._raw = self._engine.raw_connection()
        connection = self._raw.driver_connection
        if not connection.autocommit:  # the engine's AUTOCOMMIT, as the commit-before-200 rule needs
            connection.autocommit = True
        return connection

    def _drop_connection(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            try:
                raw.invalidate()
            except Exception:
                log.warning("the committer's dropped connection did not close cleanly", exc_info=True)

    def _close_connection(self) -> None:
        """The thread ends: its connection goes, then its engine."""
        raw, self._raw = self._raw, None
        if raw is not None:
            try:
                raw.close()
            except Exception:
                log.warning("the committer's database connection did not close cleanly", exc_info=True)
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _insert_one_by_one(self, rows: list[_Waiting]) -> dict[tuple[str, str], int]:
        new_ids = {}
        for waiting in rows:
            try:
                with transaction(self.runtime.sessions) as session:
                    event_id = insert_ignoring_conflicts(session, InboundEvent, waiting.values,
                                                         index_elements=list(KEY))
            except Exception as exc:
                sid = waiting.values["carrier_message_id"]
                log.exception("webhook not stored", extra={"message_sid": sid})
                waiting.error = exc
                continue
            if event_id is not None:
                new_ids[waiting.key] = event_id
        return new_ids

    def _enqueue(self, event_ids: list[int]) -> None:
        """One broker message for the whole batch; if refused, the sweeper takes them."""
        if not event_ids:
            return
        if self.runtime.enqueue(INBOUND_QUEUE, PROCESS_INBOUND_BATCH_ACTOR, event_ids):
            return
        with transaction(self.runtime.sessions) as session:
            session.execute(update(InboundEvent).where(InboundEvent.id.in_(event_ids)).values(enqueued_at=None))


# A web process that exits (a deploy's graceful restart) hands over what its committer
# still holds, rather than leave it to the sweeper's `stale_after`.
_COMMITTERS: weakref.WeakSet[EventCommitter] = weakref.WeakSet()


@atexit.register
def _hand_over_at_exit() -> None:
    for committer in list(_COMMITTERS):
        event_ids, committer._unsent = committer._unsent, []
        if event_ids:
            committer._send(event_ids)


def committer_for(extensions: dict, runtime) -> EventCommitter:
    """The app's committer (one per web process), made on first use."""
    committer = extensions.get("gateway.event_committer")
    if committer is None:  # two first requests at once: setdefault keeps one
        committer = extensions.setdefault("gateway.event_committer", EventCommitter(runtime))
    return committer
