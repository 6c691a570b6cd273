"""One module per carrier: verify a request, parse inbound and status bodies, send.

Each module turns its carrier's HTTP requests into `gateway.messaging` values. Nothing
outside `gateway/carriers/` and `gateway/webhooks/` imports a carrier module; a test
enforces it.
"""
