"""The per-number rate gate on a real Redis: what it admits, and from when a send counts."""

from __future__ import annotations

import redis

from gateway.ratelimit import IN_FLIGHT_POLL_MS, Limit, RateLimiter

NUMBER = "+15552345678"
HOLD_MS = 30_000


def server_ms(client) -> int:
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000


def test_sends_within_the_limit_are_admitted_and_the_next_waits_while_they_are_in_flight(redis_url):
    client = redis.Redis.from_url(redis_url)
    limiter, limit = RateLimiter(client), Limit(2)

    first = limiter.admit(NUMBER, 1, limit, "a", HOLD_MS)
    second = limiter.admit(NUMBER, 1, limit, "b", HOLD_MS)
    third = limiter.admit(NUMBER, 1, limit, "c", HOLD_MS)

    # Both slots are taken by calls that have not been answered: ask again shortly.
    assert (first, second, third) == (0, 0, IN_FLIGHT_POLL_MS)


def test_a_send_counts_until_one_window_after_the_carrier_answered_however_long_it_took(redis_url):
    client = redis.Redis.from_url(redis_url)
    limiter, limit = RateLimiter(client), Limit(1)

    # Given a send admitted long before its answer came (a stalled thread, a slow carrier)
    assert limiter.admit(NUMBER, 1, limit, "slow", HOLD_MS) == 0
    assert limiter.admit(NUMBER, 1, limit, "next", HOLD_MS) == IN_FLIGHT_POLL_MS
    limiter.settle(NUMBER, 1, "slow")
    answered_at = server_ms(client)

    # When the next send asks, it is told to wait until a full window after that answer
    wait = limiter.admit(NUMBER, 1, limit, "next", HOLD_MS)
    asked_at = server_ms(client)

    assert wait > 0
    assert asked_at + wait >= answered_at + limit.window_ms


def test_two_segments_take_two_places_in_the_window(redis_url):
    client = redis.Redis.from_url(redis_url)
    limiter, limit = RateLimiter(client), Limit(2)

    assert limiter.admit(NUMBER, 2, limit, "long", HOLD_MS) == 0
    limiter.settle(NUMBER, 2, "long")

    assert limiter.admit(NUMBER, 1, limit, "short", HOLD_MS) > 0


def test_a_batch_is_admitted_in_order_while_it_fits_and_frees_together_once_settled(redis_url):
    client = redis.Redis.from_url(redis_url)
    limiter, limit = RateLimiter(client), Limit(3)
    assert limiter.capacity(NUMBER, limit) == (3, 0, False)

    entries = limiter.admit_many(NUMBER, [(1, "a"), (1, "b"), (1, "c"), (1, "d")], limit, HOLD_MS)

    assert entries == ["1:a", "1:b", "1:c"]
    assert limiter.capacity(NUMBER, limit) == (0, IN_FLIGHT_POLL_MS, True)   # in flight: ask again soon
    limiter.settle_many(NUMBER, entries)
    free, wait_ms, in_flight = limiter.capacity(NUMBER, limit)
    # all three count until one window after the answer
    assert free == 0 and 900 < wait_ms <= 1001 and not in_flight


def test_a_batch_stops_at_the_first_send_that_does_not_fit(redis_url):
    client = redis.Redis.from_url(redis_url)
    limiter, limit = RateLimiter(client), Limit(3)
    limiter.admit_many(NUMBER, [(1, "a")], limit, HOLD_MS)

    # Two places left: a three-segment text does not fit, and the one after it waits its turn.
    assert limiter.admit_many(NUMBER, [(3, "b"), (1, "c")], limit, HOLD_MS) == []
    assert limiter.capacity(NUMBER, limit) == (2, 0, False)
    # and asked for three, the window says how long until three fit: when "a" is forgotten
    limiter.settle_many(NUMBER, ["1:a"])
    free, wait_ms, in_flight = limiter.capacity(NUMBER, limit, need=3)
    assert free == 0 and 900 < wait_ms <= 1001 and not in_flight
