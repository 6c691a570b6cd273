"""A number's texts sent in batches (gateway/number_sender.py) and the lead that lets one
task at a time send them (gateway/send_lead.py), on real Redis and both databases.

These call the batch sender in the test process against the Twilio stand-in; the tests in
test_delivery.py send through real worker processes.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import redis
from sqlalchemy import select, update

from gateway import outbound
from gateway.delivery import IN_FLIGHT, PENDING, SUBMITTED
from gateway.models import Contact, Message
from gateway.number_sender import claim_due, send_due, wake, wake_waiting_numbers
from gateway.ratelimit import RateLimiter
from gateway.send_lead import SendLeads
from tests.conftest import SALES_NUMBER, SERVICE_NUMBER

FOOTER = "Reply STOP to opt out."


def queue(runtime, to: str, body: str, number: str = SERVICE_NUMBER) -> int:
    return outbound.start(runtime.sessions, runtime.settings, None, number, to, body, []).message_id


def run_sender(runtime, number: str, handed_over: list | None = None, *, limiter: RateLimiter | None = None,
               leads: SendLeads | None = None) -> None:
    """What the actor does: turns until the number has nothing due, resuming as told."""
    client = redis.Redis.from_url(runtime.redis_url)
    limiter, leads = limiter or RateLimiter(client), leads or SendLeads(client)
    handed = handed_over if handed_over is not None else []
    token = None
    while True:
        resume = send_due(runtime.sessions, runtime.settings, limiter, leads, number,
                          lambda *args: handed.append(args), token)
        if resume is None:
            return
        time.sleep(resume.delay_ms / 1000)
        token = resume.token


def states(runtime) -> dict[int, tuple[str, int, str | None]]:
    with runtime.sessions() as session:
        rows = session.execute(select(Message.id, Message.send_state, Message.send_attempts,
                                      Message.carrier_message_id).where(Message.send_state.is_not(None)))
        return {row.id: (row.send_state, row.send_attempts, row.carrier_message_id) for row in rows}


def test_a_burst_goes_out_once_each_in_conversation_order_and_within_the_limit(runtime, standin):
    # The service number allows 2 segments a second (tests/conftest.py).
    ids = [queue(runtime, "+14155550100", f"part {i}") for i in range(3)]
    ids += [queue(runtime, f"+1415555020{i}", f"alone {i}") for i in range(3)]

    run_sender(runtime, SERVICE_NUMBER)

    bodies = [m.field("Body") for m in standin.accepted]
    assert sorted(bodies) == sorted([f"part {i}\n{FOOTER}" for i in range(3)]
                                    + [f"alone {i}\n{FOOTER}" for i in range(3)])
    assert [b for b in bodies if b.startswith("part")] == [f"part {i}\n{FOOTER}" for i in range(3)]
    arrivals = sorted(m.received_at for m in standin.accepted)
    assert max(sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals) <= 2
    sids = {m.sid for m in standin.accepted}
    assert {mid: state[:2] for mid, state in states(runtime).items()} == {mid: (SUBMITTED, 1) for mid in ids}
    assert {state[2] for state in states(runtime).values()} == sids


def test_a_contact_who_opted_out_after_queueing_is_failed_not_sent(runtime, standin):
    kept = queue(runtime, "+14155550101", "still wanted", SALES_NUMBER)
    refused = queue(runtime, "+14155550102", "too late", SALES_NUMBER)
    with runtime.sessions.begin() as session:
        session.execute(update(Contact).where(Contact.number == "+14155550102").values(opted_out=True))

    run_sender(runtime, SALES_NUMBER)

    assert [m.field("To") for m in standin.accepted] == ["+14155550101"]
    with runtime.sessions() as session:
        failed = session.get(Message, refused)
        assert (failed.send_state, failed.status, failed.error_code) == ("failed", "failed", "21610")
        assert session.get(Message, kept).send_state == SUBMITTED


def test_a_temporary_carrier_error_hands_the_text_to_the_retrying_path(runtime, standin):
    standin.fail_next(1, 500)
    message_id = queue(runtime, "+14155550103", "try again later", SALES_NUMBER)
    handed: list = []

    run_sender(runtime, SALES_NUMBER, handed)

    [(handed_id, number, segments, later)] = handed
    assert (handed_id, number, segments) == (message_id, SALES_NUMBER, 1)
    assert later.delay_ms > 0
    assert states(runtime)[message_id][:2] == (PENDING, 1)   # retried by send_outbound_message
    assert standin.accepted == []


def test_racing_claims_take_each_text_once_and_one_per_conversation(runtime):
    # Two texts in each of 8 conversations; 6 senders claim at once (as two leaders
    # would, if a lead ever expired under a stalled one).
    ids = [queue(runtime, f"+1415555030{c}", f"text {n}", SALES_NUMBER) for n in range(2) for c in range(8)]
    claimed: list[list[int]] = []
    barrier = threading.Barrier(6)

    def claim():
        barrier.wait()
        batch = claim_due(runtime.sessions, runtime.settings, SALES_NUMBER, 4)
        claimed.append([plan.outbound.message_id for plan in batch])

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    taken = [message_id for batch in claimed for message_id in batch]
    assert len(taken) == len(set(taken))                      # no text claimed twice
    assert sorted(taken) == sorted(ids[:8])                    # the first of each conversation only
    assert {mid for mid, (state, _, _) in states(runtime).items() if state == IN_FLIGHT} == set(taken)


def test_a_wake_during_a_leaders_turn_is_seen_before_it_lets_go(redis_url):
    leads = SendLeads(redis.Redis.from_url(redis_url))

    assert leads.wake(SERVICE_NUMBER) is True        # nobody sends: enqueue a task
    assert leads.wake(SERVICE_NUMBER) is False       # that task is on its way
    token = leads.take(SERVICE_NUMBER, None, 30_000)
    assert token is not None
    assert leads.take(SERVICE_NUMBER, None, 30_000) is None   # one leader at a time
    assert leads.take(SERVICE_NUMBER, token, 30_000) == token  # its own resumed turn

    assert leads.wake(SERVICE_NUMBER) is False       # a text came while it was busy
    assert leads.finish(SERVICE_NUMBER, token, 30_000) is True    # so it goes on
    assert leads.finish(SERVICE_NUMBER, token, 30_000) is False   # nothing new: let go
    assert leads.wake(SERVICE_NUMBER) is True        # the next text needs a task again


def test_a_lead_that_expired_is_taken_over(redis_url):
    leads = SendLeads(redis.Redis.from_url(redis_url))
    stale = leads.take(SERVICE_NUMBER, None, 50)
    time.sleep(0.1)

    fresh = leads.take(SERVICE_NUMBER, None, 30_000)

    assert fresh is not None and fresh != stale
    assert leads.finish(SERVICE_NUMBER, stale, 30_000) is False   # the old leader stops


def test_a_wake_with_redis_unreachable_reports_it_and_raises_nothing(runtime, caplog):
    runtime.__dict__["redis_url"] = "redis://127.0.0.1:9/0"   # nothing listens on port 9

    assert wake(runtime, SERVICE_NUMBER) is False
    assert "could not wake a number's sender" in caplog.text
    assert runtime.broker_down()   # the next callers skip Redis for a few seconds


def test_the_sweeper_wakes_a_number_whose_texts_wait_with_no_leader(runtime, standin):
    message_id = queue(runtime, "+14155550104", "nobody woke me", SALES_NUMBER)
    leads = SendLeads(redis.Redis.from_url(runtime.redis_url))
    leads.take(SALES_NUMBER, "dead-leader", 100)   # its holder died; the lead expires by itself
    assert leads.wake(SALES_NUMBER) is False       # while it lasts, a wake only raises the flag
    time.sleep(0.2)

    assert wake_waiting_numbers(runtime, older_than=dt.timedelta(0)) == 1

    queued = redis.Redis.from_url(runtime.redis_url).hvals("dramatiq:outbound.msgs")   # dramatiq's queue
    assert [json.loads(task)["args"] for task in queued] == [[SALES_NUMBER]]
    assert states(runtime)[message_id][0] == PENDING
