"""The routing worker as real processes: dramatiq workers, a sweeper, Redis going away."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import func, select

from gateway.app import create_app
from gateway.models import Conversation, EventStatus, InboundEvent, Message
from gateway.runtime import Runtime
from gateway.sweeper import Sweeper
from tests.conftest import Carrier, wait_until

pytestmark = pytest.mark.processes


def count(runtime, model, *where) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def audit(runtime, sids: list[str]) -> None:
    """Every MessageSid sent is a message exactly once."""
    with runtime.sessions() as session:
        stored = list(session.scalars(select(Message.carrier_message_id)))
    assert sorted(stored) == sorted(sids)


@pytest.fixture
def sweeping():
    """sweeping(runtime) runs a sweeper thread for the rest of the test."""
    stop = threading.Event()
    threads = []

    def start(runtime, **options):
        sweeper = Sweeper(runtime, grace=dt.timedelta(0), **options)
        thread = threading.Thread(target=sweeper.run_forever, args=(stop, 0.2), daemon=True)
        thread.start()
        threads.append(thread)

    yield start
    stop.set()
    for thread in threads:
        thread.join(10)


def test_a_text_is_threaded_by_a_real_worker_process(runtime, carrier, workers, admin_headers):
    workers()

    assert carrier.inbound("+14155550100", "hello from the field").status_code == 200

    conversations = wait_until(
        lambda: carrier.client.get("/api/v1/conversations", headers=admin_headers).json["data"],
        message="the conversation to appear",
    )
    assert conversations[0]["contact"]["number"] == "+14155550100"


def test_texts_that_arrive_while_the_broker_is_down_are_processed_after_it_returns(
    runtime, private_redis, workers, sweeping
):
    # Given a gateway whose Redis is down
    gateway = Runtime(runtime.settings.model_copy(update={"redis_url": private_redis.url}))
    carrier = Carrier(create_app(runtime=gateway).test_client())
    private_redis.stop()

    # When texts arrive, every one is still answered 200 and stored
    sids = []
    for n in range(20):
        response = carrier.inbound(f"+1415555{n % 5:04d}", f"text {n}", sid=f"SM{n:032x}")
        assert response.status_code == 200
        sids.append(f"SM{n:032x}")
    # (the first text's hand-over is tried before its answer; the others', sharing a task,
    # up to 50 ms after theirs: each refusal marks the events for the sweeper)
    wait_until(lambda: count(gateway, InboundEvent, InboundEvent.enqueued_at.is_(None)) == 20,
               message="every refused hand-over to mark its events for the sweeper")

    # Then once Redis is back, the sweeper and a worker process every one exactly once
    private_redis.start()
    workers(REDIS_URL=private_redis.url)
    sweeping(gateway)
    wait_until(lambda: count(gateway, InboundEvent, InboundEvent.status == EventStatus.processed) == 20,
               message="all 20 events to be processed")
    audit(gateway, sids)
    assert count(gateway, Conversation) == 5
    gateway.engine.dispose()


def test_a_worker_killed_mid_burst_loses_nothing_and_doubles_nothing(runtime, carrier, workers, sweeping):
    # Given a burst of stored texts from 25 senders
    sids = []
    for n in range(400):
        sid = f"SM{n:032x}"
        assert carrier.inbound(f"+1415555{n % 25:04d}", f"text {n}", sid=sid).status_code == 200
        sids.append(sid)

    # When the worker processing them is killed with SIGKILL part-way through
    first = workers(threads=8)
    wait_until(lambda: count(runtime, Message) >= 40, message="the first worker to make progress")
    first.kill()
    assert count(runtime, Message) < 400, "the burst finished before the kill: nothing was tested"

    # Then a new worker and the sweeper redo what was in flight, and every text is there once
    workers(threads=8)
    sweeping(runtime, heartbeat_timeout_ms=3_000)
    wait_until(lambda: count(runtime, InboundEvent, InboundEvent.status == EventStatus.processed) == 400,
               timeout=60, message="all 400 events to be processed after the kill")
    audit(runtime, sids)
    assert count(runtime, Conversation) == 25


def test_texts_queued_in_a_redis_that_restarts_empty_are_enqueued_again_at_once(
    runtime, private_redis, workers
):
    # Given texts stored and queued in a Redis that keeps nothing on disk, no worker yet
    gateway = Runtime(runtime.settings.model_copy(update={"redis_url": private_redis.url}))
    carrier = Carrier(create_app(runtime=gateway).test_client())
    sids = [f"SM{n:032x}" for n in range(10)]
    for n, sid in enumerate(sids):
        assert carrier.inbound(f"+1415555{n:04d}", f"text {n}", sid=sid).status_code == 200
    sweeper = Sweeper(gateway)  # default stale_after: minutes
    assert sweeper.sweep_once() == 0  # queued, not stale: nothing to do yet

    # When Redis restarts and forgets its queue
    private_redis.stop()
    private_redis.start()

    # Then the next sweep sees the new Redis and enqueues every unprocessed text again
    assert sweeper.sweep_once() == 10
    workers(REDIS_URL=private_redis.url)
    wait_until(lambda: count(gateway, InboundEvent, InboundEvent.status == EventStatus.processed) == 10,
               message="the ten texts to be processed")
    audit(gateway, sids)
    gateway.engine.dispose()
