"""Send errors every carrier module raises, in the gateway's own terms.

Workers decide what to do on these fields alone, never on a carrier's codes:

- `retryable`: the carrier did not take the message (rate limited, its own fault, the
  connection failed before the request went out); sending again later is safe.
- `unknown_outcome`: the request may have reached the carrier (a timeout while waiting
  for the answer). Sending again could send twice; reconcile by looking it up first.
- `opted_out`: the recipient has unsubscribed at the carrier; the contact is opted out.
- anything else is permanent: the message fails with `code` and `message` stored.
"""

from __future__ import annotations


class SendError(Exception):
    def __init__(
        self,
        retryable: bool,
        code: str | None,
        message: str,
        *,
        unknown_outcome: bool = False,
        opted_out: bool = False,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.code = code
        self.message = message
        self.unknown_outcome = unknown_outcome
        self.opted_out = opted_out

    def __repr__(self) -> str:
        return f"SendError(retryable={self.retryable}, code={self.code!r}, message={self.message!r})"
