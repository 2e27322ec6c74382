"""Schema migrations (Alembic), run from the CLI and at start-up of the embedded default."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from expediente.db.engine import write_transaction

MIGRATIONS = Path(__file__).parent / "migrations"


def _config(connection: sa.Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    with write_transaction(engine) as conn:
        command.upgrade(_config(conn), revision)
        if revision == "head":  # the shipped catalogs need the current schema
            from expediente.mx.catalogs import seed_shipped

            seed_shipped(conn)


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def revision(engine: sa.Engine, message: str) -> None:
    """Autogenerate a new migration from the difference between schema.py and the database."""
    with write_transaction(engine) as conn:
        command.revision(_config(conn), message=message, autogenerate=True)
