"""The Alembic migrations build exactly the schema the code declares, on both engines."""

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from expediente.db.migrate import current_revision, head_revision, upgrade
from expediente.db.schema import metadata


def test_migrations_match_schema_and_are_idempotent(services):
    engine = services.engine
    assert current_revision(engine) == head_revision()
    upgrade(engine)  # a second run changes nothing and does not fail
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_sqlite_runs_in_wal_mode(services):
    if services.engine.dialect.name != "sqlite":
        return
    with services.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
