"""Engines, sessions and the few dialect differences the gateway cares about.

SQLite is the embedded default: WAL mode so readers never block the writer, and a busy
timeout so that concurrent writers (web + workers in `gateway serve`) wait instead of
failing. PostgreSQL is the production database, through psycopg 3.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 15_000


def normalize_database_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here (SQLAlchemy's default driver is psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def create_db_engine(url: str, **kwargs) -> Engine:
    url = normalize_database_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "isolation_level": None}, **kwargs
        )
        event.listen(engine, "connect", _configure_sqlite_connection)
        event.listen(engine, "begin", _begin_sqlite_immediate)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, connect_args={"connect_timeout": 5}, **kwargs)


def _configure_sqlite_connection(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _begin_sqlite_immediate(connection) -> None:
    # pysqlite's own BEGIN is deferred: two writers can both read, then one fails with
    # "database is locked" on upgrade. BEGIN IMMEDIATE takes the write lock up front,
    # so the busy timeout applies and writers queue instead of failing.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def is_sqlite(engine_or_session) -> bool:
    bind = engine_or_session.get_bind() if isinstance(engine_or_session, Session) else engine_or_session
    return bind.dialect.name == "sqlite"


def insert_ignoring_conflicts(session: Session, model, values: dict, **conflict):
    """INSERT ... ON CONFLICT DO NOTHING in the session's dialect; returns the new id or None."""
    insert = sqlite.insert if is_sqlite(session) else postgresql.insert
    statement = insert(model).values(**values).on_conflict_do_nothing(**conflict).returning(model.id)
    return session.execute(statement).scalar_one_or_none()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]):
    """A session whose work is committed on success and rolled back on any error."""
    with factory() as session, session.begin():
        yield session
