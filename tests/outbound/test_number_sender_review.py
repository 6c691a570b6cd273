"""Review of the batch send path (gateway/number_sender.py, gateway/send_lead.py): the
interleavings with the per-message path and the window that must keep holding.

These run the batch sender in the test process against the Twilio stand-in, on real Redis
and both databases, as tests/outbound/test_number_sender.py does.
"""

from __future__ import annotations

import redis

from gateway.delivery import PENDING, SUBMITTED, deliver, record_status
from gateway.messaging import SendResult, StatusUpdate
from gateway.models import Message
from gateway.number_sender import claim_due, record_sent
from gateway.ratelimit import RateLimiter
from tests.conftest import SALES_NUMBER
from tests.outbound.test_number_sender import queue, run_sender, states


def test_a_text_handed_over_for_a_retry_holds_back_its_conversation_until_it_is_sent(runtime, standin):
    """The batch path never overtakes the per-message path within a conversation, and the
    text that waits meanwhile keeps its retries (send_attempts stays 0)."""
    standin.fail_next(1, 500)
    first = queue(runtime, "+14155550120", "first", SALES_NUMBER)
    second = queue(runtime, "+14155550120", "second", SALES_NUMBER)
    handed: list = []

    run_sender(runtime, SALES_NUMBER, handed)

    [(handed_id, number, segments, _later)] = handed
    assert handed_id == first
    assert standin.accepted == []                                   # "second" did not overtake
    assert states(runtime)[second][:2] == (PENDING, 0)              # and used no retry waiting

    limiter = RateLimiter(redis.Redis.from_url(runtime.redis_url))
    assert deliver(runtime.sessions, runtime.settings, limiter, first, None, (number, segments)) is None
    run_sender(runtime, SALES_NUMBER)   # what the per-message actor's wake starts

    assert [m.field("Body") for m in standin.accepted] == ["first", "second"]
    assert {mid: state[:2] for mid, state in states(runtime).items()} == {first: (SUBMITTED, 2),
                                                                          second: (SUBMITTED, 1)}


def test_a_status_callback_that_beats_the_batch_record_is_applied_by_it(runtime):
    message_id = queue(runtime, "+14155550121", "fast carrier", SALES_NUMBER)
    [plan] = claim_due(runtime.sessions, runtime.settings, SALES_NUMBER, 10)
    sid = "SM" + "e" * 32
    record_status(runtime.sessions, "twilio-test", StatusUpdate(
        carrier_kind="twilio", account_id="AC", carrier_message_id=sid, status="delivered",
        carrier_status="delivered"))

    record_sent(runtime.sessions, [(plan, SendResult(carrier_message_id=sid, status="queued"))])

    with runtime.sessions() as session:
        message = session.get(Message, message_id)
        recorded = (message.send_state, message.carrier_message_id, message.status)
    assert recorded == (SUBMITTED, sid, "delivered")

