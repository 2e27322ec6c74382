"""Database engines for the embedded default (SQLite, WAL) and production (PostgreSQL)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import event

from expediente.config import Settings

# Execution option that makes a SQLite transaction take the write lock up front (BEGIN
# IMMEDIATE), so concurrent writers queue on busy_timeout instead of failing on lock upgrade.
WRITE = {"expediente_write": True}


def make_engine(settings: Settings) -> sa.Engine:
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            pool_size=16,
            max_overflow=16,
            connect_args={"check_same_thread": False, "timeout": 30},
        )
        _configure_sqlite(engine, settings.sqlite_synchronous)
        return engine
    return sa.create_engine(url, pool_size=16, max_overflow=8, pool_pre_ping=True)


def _configure_sqlite(engine: sa.Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's implicit BEGIN is deferred).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA cache_size=-65536")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        immediate = conn.get_execution_options().get("expediente_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def is_sqlite(engine: sa.Engine) -> bool:
    return engine.dialect.name == "sqlite"
