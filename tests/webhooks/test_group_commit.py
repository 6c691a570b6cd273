"""The webhook's group commit: concurrent requests share one INSERT and one COMMIT.

To put requests in one batch on purpose, a test holds the database's write lock from a
connection of its own: the committer's first INSERT waits on it, and every request that
arrives meanwhile queues up for the next batch.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager

import pytest
import redis
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from gateway.db import is_sqlite
from gateway.group_commit import EventCommitter, committer_for
from gateway.inbound import event_values
from gateway.messaging import InboundMessage
from gateway.models import InboundEvent
from gateway.phone import normalize_number
from tests.conftest import ACCOUNT_SID, SERVICE_NUMBER, Carrier, inbound_form, wait_until

TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'


@contextmanager
def writes_held(runtime):
    """Hold the inbound_events write lock until the block ends."""
    with runtime.engine.connect() as connection:
        if is_sqlite(runtime.engine):
            connection.exec_driver_sql("SELECT 1")  # gateway.db begins every SQLite transaction IMMEDIATE
        else:
            connection.execute(text("LOCK TABLE inbound_events IN EXCLUSIVE MODE"))
        try:
            yield
        finally:
            connection.rollback()


def in_parallel(calls) -> list:
    results = [None] * len(calls)

    def run(index, call):
        try:
            results[index] = call()
        except Exception as exc:  # noqa: BLE001 - the test looks at what each call got
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    return threads, results


def stored_sids(runtime) -> list[str]:
    with runtime.sessions() as session:
        return sorted(session.scalars(select(InboundEvent.carrier_message_id)))


def test_copies_of_one_message_queued_in_one_batch_are_stored_once_and_all_answered(runtime, app):
    # Given the database's write lock held, and a first request waiting on it in the INSERT
    committer = committer_for(app.extensions, runtime)
    copy = inbound_form("+14155550100", sid="SM" + "c" * 32)
    others = [inbound_form(f"+1415555{n:04d}", sid=f"SM{n:032x}") for n in range(4)]
    forms = [copy] * 8 + others

    def post(form):
        return Carrier(app.test_client()).post("/webhooks/twilio/sms", form)

    with writes_held(runtime):
        first, _ = in_parallel([lambda: post(inbound_form("+14155550199", sid="SM" + "a" * 32))])
        wait_until(lambda: committer._thread is not None and not committer._waiting,
                   message="the committer to take the first request")
        # When eight copies of one message and four others queue up for the next batch
        threads, responses = in_parallel([lambda form=form: post(form) for form in forms])
        wait_until(lambda: len(committer._waiting) == 12, message="requests to queue behind the held lock")
    for thread in first + threads:
        thread.join(30)

    # Then all twelve are answered 200 with TwiML, and each MessageSid is stored once
    assert [(r.status_code, r.data) for r in responses] == [(200, TWIML)] * 12
    assert stored_sids(runtime) == sorted(
        ["SM" + "a" * 32, "SM" + "c" * 32] + [f"SM{n:032x}" for n in range(4)])


def test_a_lone_webhook_is_committed_at_once_and_a_retry_later_is_a_duplicate(runtime, carrier):
    first = carrier.inbound("+14155550100", sid="SM" + "d" * 32)
    again = carrier.inbound("+14155550100", sid="SM" + "d" * 32)

    assert (first.status_code, again.status_code) == (200, 200)
    assert stored_sids(runtime) == ["SM" + "d" * 32]


def values(sid: str, sender: str = "+14155550100") -> dict:
    message = InboundMessage("twilio", ACCOUNT_SID, sid, sender, SERVICE_NUMBER, "hello")
    return event_values("twilio-test", message, normalize_number(sender, "US"),
                        normalize_number(SERVICE_NUMBER, "US"), True)


def test_a_row_the_database_refuses_fails_only_its_own_request(runtime):
    # Given a batch of three good rows and one the database refuses (no sender), sent twice
    committer = EventCommitter(runtime)
    bad = {**values("SM" + "e" * 32), "from_number": None}
    rows = [values(f"SM{n:032x}", f"+1415555{n:04d}") for n in range(3)] + [bad, dict(bad)]
    with writes_held(runtime):
        # (a first row takes the committer into its INSERT, where it waits on the lock)
        first, _ = in_parallel([lambda: committer.store(values("SM" + "f" * 32))])
        wait_until(lambda: committer._thread is not None and not committer._waiting,
                   message="the committer to take the first row")
        threads, outcomes = in_parallel([lambda row=row: committer.store(row) for row in rows])
        wait_until(lambda: len(committer._waiting) == 5, message="the rows to queue behind the held lock")
    for thread in first + threads:
        thread.join(30)

    # Then only the refused row's callers (it and its copy) get the error; the others are committed
    assert isinstance(outcomes[3], IntegrityError)
    assert isinstance(outcomes[4], IntegrityError)  # not answered "duplicate" of a row never stored
    assert all(o.is_new for o in outcomes[:3])
    assert stored_sids(runtime) == [f"SM{n:032x}" for n in range(3)] + ["SM" + "f" * 32]


def test_a_row_the_batch_encoder_refuses_is_still_stored(runtime, caplog):
    # Given a webhook whose segment count is over 64 bits (the batch's JSON encoder refuses it)
    message = InboundMessage("twilio", ACCOUNT_SID, "SM" + "9" * 32, "+14155550100", SERVICE_NUMBER, "hi",
                             segments=10**30)
    row = event_values("twilio-test", message, normalize_number("+14155550100", "US"),
                       normalize_number(SERVICE_NUMBER, "US"), True)

    # When it is stored, then it is committed with its payload as it came
    stored = EventCommitter(runtime).store(row)
    assert stored.is_new
    with runtime.sessions() as session:
        assert session.get(InboundEvent, stored.id).payload["segments"] == 10**30


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_rows_of_any_batch_size_come_back_with_their_own_ids(runtime, batch):
    committer = EventCommitter(runtime, max_batch=batch)
    rows = [values(f"SM{n:032x}", f"+1415555{n:04d}") for n in range(7)]

    threads, outcomes = in_parallel([lambda row=row: committer.store(row) for row in rows])
    for thread in threads:
        thread.join(30)

    with runtime.sessions() as session:
        stored = dict(session.execute(select(InboundEvent.carrier_message_id, InboundEvent.id)).all())
        assert session.scalar(select(func.count()).select_from(InboundEvent)) == 7
    assert [o.id for o in outcomes] == [stored[row["carrier_message_id"]] for row in rows]


def queued_event_batches(runtime) -> list[list[int]]:
    """The event ids of each task on the inbound queue, as the workers will get them."""
    client = redis.Redis.from_url(runtime.redis_url)
    return [json.loads(body)["args"][0] for body in client.hvals("dramatiq:inbound.msgs")]


def test_a_burst_reaches_the_workers_in_few_tasks_and_none_is_left_behind(runtime, app):
    # (Committers of earlier tests hand their last events over up to 50 ms late, into
    # whatever Redis database is then current: let them finish, then start clean.)
    wait_until(lambda: not any(t.name == "event-committer" for t in threading.enumerate()),
               timeout=15, message="earlier tests' committer threads to end")
    redis.Redis.from_url(runtime.redis_url).flushdb()

    # Given a first request parked in a held INSERT, and twelve more queued behind it
    committer = committer_for(app.extensions, runtime)

    def post(n):
        return Carrier(app.test_client()).post(
            "/webhooks/twilio/sms", inbound_form(f"+1415555{n:04d}", sid=f"SM{n:032x}"))

    with writes_held(runtime):
        first, _ = in_parallel([lambda: post(99)])
        wait_until(lambda: committer._thread is not None and not committer._waiting,
                   message="the committer to take the first request")
        threads, responses = in_parallel([lambda n=n: post(n) for n in range(12)])
        wait_until(lambda: len(committer._waiting) == 12, message="requests to queue behind the held lock")
    for thread in first + threads:
        thread.join(30)
    assert [r.status_code for r in responses] == [200] * 12

    # Then every stored event reaches the workers once, in one task: the burst's twelve, and
    # the first request's event too (twelve requests were queued behind its commit: that is
    # load, so its event waited for theirs rather than take a task of its own)
    with runtime.sessions() as session:
        stored = sorted(session.scalars(select(InboundEvent.id)))
    wait_until(lambda: sorted(i for b in queued_event_batches(runtime) for i in b) == stored,
               message="every event to be handed to the workers")
    assert sorted(len(b) for b in queued_event_batches(runtime)) == [13]


def test_a_committer_whose_connection_died_connects_anew_and_stores(runtime):
    # Given a committer that has stored a row, and its database connection then killed
    committer = EventCommitter(runtime)
    assert committer.store(values("SM" + "1" * 32)).is_new
    if is_sqlite(runtime.engine):
        assert committer._raw is None  # SQLite's batches go through a session: no connection is kept
        return
    backend = committer._raw.driver_connection.info.backend_pid
    with runtime.engine.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        connection.commit()

    # When the next row comes, then it is committed on a new connection
    assert committer.store(values("SM" + "2" * 32)).is_new
    assert committer._raw.driver_connection.info.backend_pid != backend
    assert stored_sids(runtime) == ["SM" + "1" * 32, "SM" + "2" * 32]


def test_a_database_that_refuses_connections_is_retried_within_the_hold_then_the_error_is_raised(
        runtime, monkeypatch, caplog):
    # Given a committer whose PostgreSQL refuses connections, and the hold shortened for the test
    from prometheus_client import REGISTRY
    from sqlalchemy.exc import OperationalError

    from gateway import group_commit
    from gateway.runtime import Runtime

    monkeypatch.setattr(group_commit, "STORE_RETRY_WINDOW_S", 0.5)
    unreachable = Runtime(runtime.settings.model_copy(
        update={"database_url": "postgresql://nobody@127.0.0.1:1/none"}))
    retries = REGISTRY.get_sample_value("gateway_webhook_store_retries_total") or 0

    # When a row comes, then the connection is tried again within the hold, and the caller
    # gets SQLAlchemy's OperationalError (the webhook's 503), not a row-by-row fallback
    with pytest.raises(OperationalError):
        EventCommitter(unreachable).store(values("SM" + "3" * 32))
    assert REGISTRY.get_sample_value("gateway_webhook_store_retries_total") >= retries + 2
    assert "storing its rows one by one" not in caplog.text


def test_a_lone_webhooks_event_is_handed_to_the_workers_before_it_is_answered(runtime):
    wait_until(lambda: not any(t.name == "event-committer" for t in threading.enumerate()),
               timeout=15, message="earlier tests' committer threads to end")
    redis.Redis.from_url(runtime.redis_url).flushdb()

    # When one webhook comes with nothing else in flight
    stored = EventCommitter(runtime).store(values("SM" + "4" * 32))

    # Then, by the time it is answered, its event is on the queue in a task of its own
    assert queued_event_batches(runtime) == [[stored.id]]


def test_a_trickle_of_single_webhooks_shares_tasks_after_the_first(runtime, monkeypatch):
    from gateway import group_commit

    wait_until(lambda: not any(t.name == "event-committer" for t in threading.enumerate()),
               timeout=15, message="earlier tests' committer threads to end")
    redis.Redis.from_url(runtime.redis_url).flushdb()
    # (a wide window, so that the test does not depend on how fast one commit is)
    monkeypatch.setattr(group_commit, "HAND_OVER_WAIT_S", 1.0)
    committer = EventCommitter(runtime)

    # When four webhooks come one after another, none with company
    first = committer.store(values("SM" + "5" * 32))
    assert queued_event_batches(runtime) == [[first.id]]  # a lone one: on the queue when answered
    rest = [committer.store(values(f"SM{n:032x}", f"+1415555{n:04d}")).id for n in range(3)]

    # Then the three that followed within the window reach the workers together, once
    wait_until(lambda: len(queued_event_batches(runtime)) == 2, message="the trickle's task")
    assert sorted(queued_event_batches(runtime)) == sorted([[first.id], rest])
