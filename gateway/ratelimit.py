"""Per business number send limits, shared by every worker process and host through Redis.

Carriers meter segments per second per number. Two Redis steps, each one atomic Lua
script on the Redis server's clock (so hosts with skewed clocks agree):

1. `reserve`: a message takes the number's next free slot (`gateway:ratelimit:next:<n>`)
   and moves it on by segments x interval. Waiting messages sleep until their own slot
   instead of polling, so a backlog keeps the number busy without a thundering herd.
2. `admit`: right before the carrier call, a sliding-window log of sends
   (`gateway:ratelimit:sends:<n>`) admits the send only if the sends still counted plus
   this one stay within the limit. A message woken late cannot squeeze two sends into
   one window; it waits the few milliseconds the log says.
3. `settle`: once the carrier has answered, the send's entry is re-stamped with the time
   of the answer. Until then it is held as in flight (counted whatever its age).

A number's sender (gateway/number_sender.py) takes its turns in batches instead:
`capacity` says how many segments the window admits now (or how long until it admits
any), `admit_many` admits the batch's sends in order for as long as they fit, and
`settle_many` re-stamps them together once the batch's carrier calls have answered. The
window is the same sorted set, so both ways of sending share one limit.

Why settle: the carrier clocks arrivals, not our admissions, and a thread can stall
between the gate and the socket. An entry counts until one window after the carrier's
answer, which comes after the request arrived there. So a send admitted now cannot
arrive within a window of an earlier one the log has forgotten: no 1-second window *at
the carrier* exceeds the limit, however late a request leaves. The cost is the
round trip: with 100 ms latency a number is ~91% busy. Slots are spaced with a small
margin (`DEFAULT_MARGIN`) so waiting messages wake about when the gate will admit them.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import redis

from gateway.redis_keys import send_rate_schedule, send_rate_window

DEFAULT_MARGIN = 0.10  # slot spacing: a round trip of ~100 ms, so waiting sends wake near their turn
# A waiting send held up only by sends still in flight asks again this soon.
IN_FLIGHT_POLL_MS = 20

_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nxt = tonumber(redis.call('GET', KEYS[1]) or '0')
local slot = math.max(now, nxt)
local after = slot + tonumber(ARGV[1]) * tonumber(ARGV[2])
redis.call('SET', KEYS[1], tostring(after), 'PX', math.ceil(after - now) + 60000)
return {tostring(slot), tostring(now)}
"""

# What every window script starts with (KEYS[1] the window, ARGV[1] its length in ms,
# ARGV[2] the segments it allows): forget what has left it, add up what is in it, and
# know how long until `short` more segments are free: ms, or -1 when the entry that
# would free them is still in flight (its carrier call unanswered: no one knows when).
_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local function cost_of(member) return tonumber(string.match(member, '^(%d+):')) end
local used = 0
for i = 1, #entries, 2 do used = used + cost_of(entries[i]) end
local function wait_until_free(short)
  local freed = 0
  for i = 1, #entries, 2 do
    freed = freed + cost_of(entries[i])
    if freed >= short then
      local score = tonumber(entries[i + 1])
      if score > now then return -1 end
      return score + window - now + 1
    end
  end
  return window
end
"""

# ARGV[3] the send's segments, ARGV[4] its member, ARGV[5] its hold, ARGV[6] the poll.
_ADMIT = _WINDOW + """
local cost = tonumber(ARGV[3])
local hold = tonumber(ARGV[5])
if used == 0 or used + cost <= limit then
  -- In flight: stamped in the future, so it counts until `settle` re-stamps it.
  redis.call('ZADD', KEYS[1], now + hold, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], hold + window + 1000)
  return 0
end
local wait = wait_until_free(used + cost - limit)
if wait < 0 then return tonumber(ARGV[6]) end
return wait
"""


_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], 'XX', now, ARGV[1])
return now
"""


# The window's state before a batch (ARGV[3] the poll, ARGV[4] the segments needed):
# {segments admissible now, 0, 0} when they fit now; else {0, ms until they may, 1 if that
# wait is on sends still in flight}.
_CAPACITY = _WINDOW + """
local need = tonumber(ARGV[4])
if used == 0 or used + need <= limit then return {math.max(limit - used, need), 0, 0} end
local wait = wait_until_free(used + need - limit)
if wait < 0 then return {0, tonumber(ARGV[3]), 1} end
return {0, wait, 0}
"""

# Admit members (ARGV[4..], each "<segments>:<id>") in order while they fit; a lone
# send bigger than the whole allowance goes when the window is empty, as in _ADMIT.
_ADMIT_MANY = _WINDOW + """
local hold = tonumber(ARGV[3])
local admitted = 0
for i = 4, #ARGV do
  local cost = cost_of(ARGV[i])
  if used > 0 and used + cost > limit then break end
  redis.call('ZADD', KEYS[1], now + hold, ARGV[i])
  used = used + cost
  admitted = admitted + 1
end
if admitted > 0 then redis.call('PEXPIRE', KEYS[1], hold + window + 1000) end
return admitted
"""

_SETTLE_MANY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now, ARGV[i]) end
return now
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
        return math.ceil(1000.0 if self.per_second >= 1 else 1000.0 / self.per_second)

    @property
    def allowance(self) -> int:
        return max(1, math.floor(self.per_second))

    @property
    def interval_ms(self) -> float:
        """The spacing of reserved slots per segment: the window plus a round trip's margin."""
        return self.window_ms * (1 + self.margin) / self.allowance


@dataclass(frozen=True)
class Slot:
    at_ms: int      # the reserved slot, Redis server time
    wait_ms: int    # from now until then


class RateLimiter:
    def __init__(self, client: redis.Redis):
        self.client = client
        self._reserve = client.register_script(_RESERVE)
        self._admit = client.register_script(_ADMIT)
        self._settle = client.register_script(_SETTLE)
        self._capacity = client.register_script(_CAPACITY)
        self._admit_many = client.register_script(_ADMIT_MANY)
        self._settle_many = client.register_script(_SETTLE_MANY)

    def reserve(self, number: str, segments: int, limit: Limit) -> Slot:
        slot, now = self._reserve(keys=[send_rate_schedule(number)], args=[limit.interval_ms, segments])
        slot, now = int(float(slot)), int(float(now))
        return Slot(slot, max(0, slot - now))

    def wait_for(self, slot_at_ms: int) -> int:
        """Milliseconds from now (server time) until a slot reserved earlier."""
        seconds, micros = self.client.time()
        return max(0, slot_at_ms - (seconds * 1000 + micros // 1000))

    def admit(self, number: str, segments: int, limit: Limit, member: str, hold_ms: int) -> int:
        """0 when this send may go now (recorded as in flight for up to `hold_ms`), else
        milliseconds to wait."""
        return int(self._admit(
            keys=[send_rate_window(number)],
            args=[limit.window_ms, limit.allowance, segments, f"{segments}:{member}", hold_ms,
                  IN_FLIGHT_POLL_MS],
        ))

    def settle(self, number: str, segments: int, member: str) -> None:
        """The carrier answered (or the call failed): count the send from now on."""
        self._settle(keys=[send_rate_window(number)], args=[f"{segments}:{member}"])


    def capacity(self, number: str, limit: Limit, need: int = 1) -> tuple[int, int, bool]:
        """(segments the window admits now, 0, False) when `need` segments fit now; else
        (0, ms until they may, whether that wait is on sends still in flight, which free
        only once the carrier answers: a guess, to ask again)."""
        free, wait_ms, in_flight = self._capacity(
            keys=[send_rate_window(number)],
            args=[limit.window_ms, limit.allowance, IN_FLIGHT_POLL_MS, need],
        )
        return int(free), int(wait_ms), bool(in_flight)

    def admit_many(self, number: str, sends: list[tuple[int, str]], limit: Limit, hold_ms: int) -> list[str]:
        """Admit (segments, member) sends in order while they fit; the entries of those
        admitted, each held as in flight for up to `hold_ms` until `settle_many`."""
        entries = [f"{segments}:{member}" for segments, member in sends]
        if not entries:
            return []
        admitted = int(self._admit_many(keys=[send_rate_window(number)],
                                        args=[limit.window_ms, limit.allowance, hold_ms, *entries]))
        return entries[:admitted]

    def settle_many(self, number: str, entries: list[str]) -> None:
        """The carrier answered these sends (or their calls failed): count them from now."""
        if entries:
            self._settle_many(keys=[send_rate_window(number)], args=entries)


_limiters: dict[str, RateLimiter] = {}
_lock = threading.Lock()


def limiter_for(redis_url: str) -> RateLimiter:
    with _lock:
        limiter = _limiters.get(redis_url)
        if limiter is None:
            limiter = _limiters[redis_url] = RateLimiter(redis.Redis.from_url(redis_url))
        return limiter
