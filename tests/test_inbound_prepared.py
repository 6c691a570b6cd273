"""The one-event path on a long-lived connection, as a worker process has.

psycopg prepares a statement on its 6th run on one connection. The open-conversation
INSERT names the partial unique index by its predicate; bound as a parameter, the
prepared statement matched no index and every new sender failed after the 5th.
"""

from __future__ import annotations

from sqlalchemy import func, select

from gateway.db import create_db_engine, make_sessionmaker
from gateway.inbound import process_event
from gateway.models import Conversation, InboundEvent


def test_new_senders_keep_getting_conversations_on_one_reused_connection(runtime, carrier):
    # Given twenty texts from twenty new senders
    for n in range(20):
        assert carrier.inbound(f"+1415555{n:04d}", f"text {n}").status_code == 200
    with runtime.sessions() as session:
        event_ids = list(session.scalars(select(InboundEvent.id).order_by(InboundEvent.id)))

    # When one worker thread processes them all on a single pooled connection
    engine = create_db_engine(runtime.settings.database_url, pool_size=1, max_overflow=0)
    sessions = make_sessionmaker(engine)
    try:
        for event_id in event_ids:
            process_event(sessions, runtime.settings, event_id)
    finally:
        engine.dispose()

    # Then each sender has its conversation
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Conversation)) == 20
