"""One module per carrier: verify a request, parse inbound and status bodies, send.

Each module turns its carrier's HTTP requests into `gateway.messaging` values and sends
`OutboundMessage`s, raising `errors.SendError`. Nothing in `gateway/routing/`,
`gateway/workers/` or `gateway/models.py` imports `gateway.carriers`
(tests/outbound/test_carrier_neutral_core.py enforces it): the send path reaches a
carrier through `gateway/sending.py`, the webhooks and the CLI's simulator directly.
"""
