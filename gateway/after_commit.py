"""Work that must wait for the transaction it belongs to: publish, enqueue, after COMMIT.

A notification published, or a delivery enqueued, before its row is committed can be read
by a stream or a worker that does not see the row yet. Code inside a transaction calls
`call_after_commit(session, fn, *args)`; the call runs once the session commits, and is
dropped if it rolls back. A failing call is logged, never raised into the committed caller:
the stored rows are the truth, and the sweeper or a reconnecting stream catches up.
"""

from __future__ import annotations

import logging

from sqlalchemy import event
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

_PENDING = "gateway.after_commit"


def call_after_commit(session: Session, fn, *args) -> None:
    session.info.setdefault(_PENDING, []).append((fn, args))


@event.listens_for(Session, "after_commit")
def _run_pending(session: Session) -> None:
    for fn, args in session.info.pop(_PENDING, []):
        try:
            fn(*args)
        except Exception:
            log.exception("after-commit call failed", extra={"call": getattr(fn, "__name__", repr(fn))})


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)
