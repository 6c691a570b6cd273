"""Stream tickets: how a browser's `EventSource` opens the notification stream.

`EventSource` cannot send an Authorization header, so a client that holds an API token
asks for a ticket (`POST /api/v1/notifications/stream-tickets`) and opens
`GET /api/v1/notifications/stream?ticket=...`, as Chatwoot's clients join its live
channel with a per-user pubsub token rather than their API token. A ticket:

- opens that user's notification stream and nothing else (every other endpoint still
  wants the token);
- lives `TICKET_TTL_S`, long enough for `EventSource`'s own reconnects (the same URL, with
  `Last-Event-ID`); a stream already open stays open after it expires, and a client that
  gets a 401 asks for a new ticket;
- dies with the token it was made with: a revoked token's tickets open nothing;
- is kept hashed, like tokens, in Redis with its expiry (gateway/redis_keys.py).
"""

from __future__ import annotations

import secrets

import redis

from gateway.accounts import hash_token
from gateway.redis_keys import stream_ticket

TICKET_PREFIX = "gwst_"
TICKET_TTL_S = 600


def issue_ticket(client: redis.Redis, token_hash: str) -> str:
    """A new ticket for the holder of the token with this hash; returned just once."""
    ticket = TICKET_PREFIX + secrets.token_urlsafe(32)
    client.set(stream_ticket(hash_token(ticket)), token_hash, ex=TICKET_TTL_S)
    return ticket


def token_hash_for_ticket(client: redis.Redis, ticket: str) -> str | None:
    """The hash of the token a live ticket was made with, or None."""
    if not ticket.startswith(TICKET_PREFIX):
        return None
    value = client.get(stream_ticket(hash_token(ticket)))
    return value.decode() if value else None
