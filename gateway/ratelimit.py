"""Per business number send limits, shared by every worker process and host through Redis.

Carriers meter segments per second per number. Two Redis steps, each one atomic Lua
script on the Redis server's clock (so hosts with skewed clocks agree):

1. `reserve`: a message takes the number's next free slot (`gateway:ratelimit:next:<n>`)
   and moves it on by segments x interval. Waiting messages sleep until their own slot
   instead of polling, so a backlog keeps the number busy without a thundering herd.
2. `admit`: right before the carrier call, a sliding-window log of what was actually
   sent (`gateway:ratelimit:sends:<n>`) admits the send only if the last window plus
   this send stays within the limit. A message woken late cannot squeeze two sends into
   one window; it waits the few milliseconds the log says.

The window is one second plus `DEFAULT_MARGIN`: the carrier clocks arrivals, not our
sends, and a request takes a variable few milliseconds to reach it. The margin keeps any
1-second window *at the carrier* within the limit and the number ≥ 90% busy.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import redis

from gateway.redis_keys import send_rate_schedule, send_rate_window

DEFAULT_MARGIN = 0.10  # of a second, and of each slot: 100 ms of arrival jitter absorbed, 91% busy

_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nxt = tonumber(redis.call('GET', KEYS[1]) or '0')
local slot = math.max(now, nxt)
local after = slot + tonumber(ARGV[1]) * tonumber(ARGV[2])
redis.call('SET', KEYS[1], tostring(after), 'PX', math.ceil(after - now) + 60000)
return {tostring(slot), tostring(now)}
"""

_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local used = 0
for i = 1, #entries, 2 do used = used + tonumber(string.match(entries[i], '^(%d+):')) end
if used == 0 or used + cost <= limit then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window + 1000)
  return 0
end
local need = used + cost - limit
local freed = 0
for i = 1, #entries, 2 do
  freed = freed + tonumber(string.match(entries[i], '^(%d+):'))
  if freed >= need then return tonumber(entries[i + 1]) + window - now + 1 end
end
return window
"""


@dataclass(frozen=True)
class Limit:
    """`per_second` segments per second as a window and an allowance within it.

    Below one segment per second (0.5/s) the window stretches instead: one per 2 s.
    """

    per_second: float
    margin: float = DEFAULT_MARGIN

    @property
    def window_ms(self) -> int:
        base = 1000.0 if self.per_second >= 1 else 1000.0 / self.per_second
        return math.ceil(base * (1 + self.margin))

    @property
    def allowance(self) -> int:
        return max(1, math.floor(self.per_second))

    @property
    def interval_ms(self) -> float:
        """The spacing of reserved slots per segment."""
        return self.window_ms / self.allowance


@dataclass(frozen=True)
class Slot:
    at_ms: int      # the reserved slot, Redis server time
    wait_ms: int    # from now until then


class RateLimiter:
    def __init__(self, client: redis.Redis):
        self.client = client
        self._reserve = client.register_script(_RESERVE)
        self._admit = client.register_script(_ADMIT)

    def reserve(self, number: str, segments: int, limit: Limit) -> Slot:
        slot, now = self._reserve(keys=[send_rate_schedule(number)], args=[limit.interval_ms, segments])
        slot, now = int(float(slot)), int(float(now))
        return Slot(slot, max(0, slot - now))

    def wait_for(self, slot_at_ms: int) -> int:
        """Milliseconds from now (server time) until a slot reserved earlier."""
        seconds, micros = self.client.time()
        return max(0, slot_at_ms - (seconds * 1000 + micros // 1000))

    def admit(self, number: str, segments: int, limit: Limit, member: str) -> int:
        """0 when this send may go now (and it is recorded), else milliseconds to wait."""
        return int(self._admit(
            keys=[send_rate_window(number)],
            args=[limit.window_ms, limit.allowance, segments, f"{segments}:{member}"],
        ))


_limiters: dict[str, RateLimiter] = {}
_lock = threading.Lock()


def limiter_for(redis_url: str) -> RateLimiter:
    with _lock:
        limiter = _limiters.get(redis_url)
        if limiter is None:
            limiter = _limiters[redis_url] = RateLimiter(redis.Redis.from_url(redis_url))
        return limiter
