"""Which worker sends a business number's queued texts right now: one lead per number.

A number's texts go out in batches (gateway/number_sender.py), taken by whichever task
holds the number's lead. Creating a text *wakes* its number: if a lead is held (or a wake
task is already on its way) the wake only raises the number's *again* flag, so a burst
of a thousand texts costs one task, not a thousand. The leader looks at the flag before
it lets go: a text committed while it was busy is never left without a sender.

Why the flag cannot lose a text: a wake comes after the text's commit, and the scripts
run one at a time on the Redis server. Either the wake sees the lead (or a pending wake
task) and raises the flag, which the leader reads in `finish` before letting go (or which
`take` clears only because the new leader's first claim comes after it and so sees the
text); or the wake comes after the lead was let go and enqueues a task of its own.

A lead held by a worker that died expires after its TTL; until then wakes only raise the
flag, so a number can pause for up to the TTL; the sweeper wakes numbers whose texts
waited too long (gateway/delivery.py `sweep`). Nothing waits on the lead for correctness:
claims in the database and the rate-limit window are what keep a text from being sent
twice or too fast, even if two leaders ever ran at once.

    gateway:outbound:lead:<number>   string, TTL  the token of the task holding the lead
    gateway:outbound:again:<number>  string, TTL  texts were queued while the lead was held
    gateway:outbound:woken:<number>  string, TTL  a wake task is on its way to the number
"""

from __future__ import annotations

import threading
import uuid

import redis

from gateway.redis_keys import send_again, send_lead, send_woken

# A wake task waits this long in the queue before a later wake sends another one.
WOKEN_TTL_MS = 10_000
AGAIN_TTL_MS = 600_000

# KEYS: lead, again, woken. ARGV: token, lead ttl ms, again ttl ms.
_TAKE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('DEL', KEYS[2], KEYS[3])
  return 1
end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
return 0
"""

# KEYS: lead, again. ARGV: token, lead ttl ms. 1: go on (texts came meanwhile), 0: let go.
# A lead that lapsed under its holder (a slow claim) is taken again if texts came: their
# wakes saw the lead and only raised the flag, so nobody else will send them.
_FINISH = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
if redis.call('DEL', KEYS[2]) == 1 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder then redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: lead. ARGV: token. Let go of the lead now, if the caller still holds it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: lead, again, woken. ARGV: woken ttl ms, again ttl ms. 1: enqueue a wake task.
_WAKE = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
  return 0
end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[1])
return 1
"""


class SendLeads:
    def __init__(self, client: redis.Redis):
        self.client = client
        self._take = client.register_script(_TAKE)
        self._finish = client.register_script(_FINISH)
        self._wake = client.register_script(_WAKE)
        self._release = client.register_script(_RELEASE)

    def take(self, number: str, token: str | None, ttl_ms: int) -> str | None:
        """The token of the number's lead, now held (or kept) by the caller; None when
        another task holds it (its again flag is raised: it will see the caller's texts)."""
        token = token or uuid.uuid4().hex
        held = self._take(keys=_keys(number), args=[token, ttl_ms, AGAIN_TTL_MS])
        return token if held else None

    def finish(self, number: str, token: str, ttl_ms: int) -> bool:
        """Let go of the lead, unless texts were queued meanwhile: then True, keep going."""
        return bool(self._finish(keys=_keys(number)[:2], args=[token, ttl_ms]))

    def release(self, number: str, token: str) -> None:
        """Let go at once (the turn failed): a retried task, or the sweeper's wake, takes
        the number without waiting for the lead to expire."""
        self._release(keys=[send_lead(number)], args=[token])

    def wake(self, number: str) -> bool:
        """A text was committed for `number`: True when the caller must enqueue a wake
        task; False when a leader (or a wake task on its way) will take it."""
        return bool(self._wake(keys=_keys(number), args=[WOKEN_TTL_MS, AGAIN_TTL_MS]))

    def forget_wake(self, number: str) -> None:
        """The wake task could not be enqueued: let the next wake try again."""
        self.client.delete(send_woken(number))


def _keys(number: str) -> list[str]:
    return [send_lead(number), send_again(number), send_woken(number)]


_leads: dict[str, SendLeads] = {}
_lock = threading.Lock()


def leads_for(redis_url: str) -> SendLeads:
    with _lock:
        leads = _leads.get(redis_url)
        if leads is None:
            # Web requests wake numbers too: a hung Redis must cost them seconds, not forever.
            client = redis.Redis.from_url(redis_url, socket_connect_timeout=2.0, socket_timeout=5.0)
            leads = _leads[redis_url] = SendLeads(client)
        return leads
