"""The schema comes from Alembic, and the models agree with it."""

from __future__ import annotations

from alembic import command
from sqlalchemy import create_engine, text

from gateway.db import create_db_engine
from gateway.migrate import alembic_config


def test_the_migrated_schema_matches_the_models(database_url):
    # `alembic check` fails if autogenerate would find anything to add, drop or alter.
    command.check(alembic_config(database_url))


def test_the_embedded_database_runs_in_wal_mode_with_a_busy_timeout(sqlite_url):
    engine = create_db_engine(sqlite_url)
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 15_000
    engine.dispose()


def test_migrations_downgrade_to_nothing_and_up_again(tmp_path):
    url = f"sqlite:///{tmp_path / 'roundtrip.db'}"
    config = alembic_config(url)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    engine = create_engine(url)
    with engine.connect() as connection:
        tables = connection.execute(text("SELECT name FROM sqlite_master WHERE type='table'")).scalars().all()
    engine.dispose()
    assert tables == ["alembic_version"]
    command.upgrade(config, "head")
